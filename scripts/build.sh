#!/usr/bin/env bash
# Configures and builds twinbed into ./build (Release). Extra arguments go to cmake's configure step,
# e.g. scripts/build.sh -DTWINBED_WERROR=ON. Set TWINBED_TARGET to build one target only.
set -euo pipefail
cd "$(dirname "$0")/.."
# nvcc lives outside PATH in a default CUDA install.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$(nproc)" ${TWINBED_TARGET:+--target "$TWINBED_TARGET"}
