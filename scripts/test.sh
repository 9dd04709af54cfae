#!/usr/bin/env bash
# The whole test suite: installs the pinned CUDA compilers (NVRTC and ptxas 13.0, from PyPI, into
# .cuda-tools/) on first use, then runs every test. Extra arguments go to `cargo test`.
# Without arguments, on a CPU with AVX-512, the CPU kernel tests run a second time without it.
set -euo pipefail
cd "$(dirname "$0")/.."
SATURN_CUDA_HOME="${SATURN_CUDA_HOME:-$(bash scripts/install-cuda-tools.sh)}"
export SATURN_CUDA_HOME
cargo test --workspace "$@"
# The CPU kernel tests again on the paths of CPUs without AVX-512 (AVX2 and FMA, or portable),
# where this CPU has AVX-512 and no arguments narrowed the run.
if [ $# -eq 0 ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    echo "== the CPU kernel tests without AVX-512 (SATURN_NO_AVX512=1)"
    SATURN_NO_AVX512=1 cargo test -p saturn-codegen --lib --test program_ops --test program_nodes --test rows
fi
