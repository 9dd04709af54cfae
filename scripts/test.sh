#!/usr/bin/env bash
# The whole test suite: installs the pinned CUDA compilers (NVRTC and ptxas 13.0, from PyPI, into
# .cuda-tools/) on first use, then runs every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
SATURN_CUDA_HOME="${SATURN_CUDA_HOME:-$(bash scripts/install-cuda-tools.sh)}"
export SATURN_CUDA_HOME
exec cargo test --workspace "$@"
