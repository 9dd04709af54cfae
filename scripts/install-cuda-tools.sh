#!/usr/bin/env bash
# Installs the CUDA tools saturn's CUDA backend needs, from PyPI wheels, without root or a
# system CUDA toolkit: NVRTC (libnvrtc.so.13, CUDA C -> PTX) and ptxas (PTX -> cubin, with the
# register/spill report). Pinned to CUDA 13.0: the target GPUs run driver 580 (CUDA 13.0), which
# cannot load PTX of a newer ISA. --no-deps keeps pip from pulling nvvm/crt/runtime 13.x, which
# NVRTC and ptxas do not use.
#
# Usage: scripts/install-cuda-tools.sh [DIR]      (DIR defaults to .cuda-tools at the repo root)
# Prints the folder to export as SATURN_CUDA_HOME on stdout (everything else goes to stderr), so
#   export SATURN_CUDA_HOME="$(scripts/install-cuda-tools.sh)"
# works. Running it again is cheap: it does nothing when the pinned version is already there.
set -euo pipefail

VERSION="13.0.88"
PYTHON="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/.cuda-tools}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
home="$dir/nvidia/cu13"
stamp="$dir/.saturn-cuda-tools-version"

if [[ -x "$home/bin/ptxas" && -f "$home/lib/libnvrtc.so.13" && -f "$stamp" \
      && "$(cat "$stamp")" == "$VERSION" ]]; then
    echo "CUDA tools $VERSION already in $home" >&2
else
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        echo "error: '$PYTHON -m pip' is not available; install pip (e.g. apt-get install python3-pip)" \
             "or set PYTHON to a Python that has it" >&2
        exit 1
    fi
    echo "installing nvidia-cuda-nvrtc and nvidia-cuda-nvcc $VERSION into $dir" >&2
    rm -f "$stamp"
    # --upgrade: replace an older nvidia/ tree in DIR instead of keeping it with a warning.
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input \
        --target "$dir" --upgrade --no-deps \
        "nvidia-cuda-nvrtc==$VERSION" "nvidia-cuda-nvcc==$VERSION" >&2
    for f in "$home/bin/ptxas" "$home/lib/libnvrtc.so.13"; do
        if [[ ! -e "$f" ]]; then
            echo "error: pip finished but $f is missing" >&2
            exit 1
        fi
    done
    chmod +x "$home/bin/ptxas"
    # Captured, not piped into `grep -q`: grep exits at the match while ptxas still has a
    # newline to write, and the SIGPIPE that ptxas then dies of fails the pipe under pipefail.
    reported="$("$home/bin/ptxas" --version 2>&1)" || {
        echo "error: $home/bin/ptxas --version failed: $reported" >&2
        exit 1
    }
    if [[ "$reported" != *"V$VERSION"* ]]; then
        echo "error: $home/bin/ptxas does not report V$VERSION; it reports: $reported" >&2
        exit 1
    fi
    echo "$VERSION" > "$stamp"
    echo "installed CUDA tools $VERSION in $home" >&2
fi

echo "export SATURN_CUDA_HOME=$home" >&2
echo "$home"
