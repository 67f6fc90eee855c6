#!/usr/bin/env bash
# Configures and builds twinbed into ./build (Release). Extra arguments go to cmake's configure step,
# e.g. scripts/build.sh -DTWINBED_WERROR=ON. Set TWINBED_TARGET to build one target only, and
# TWINBED_BUILD_DIR to build elsewhere (scripts/test.sh --sanitize uses build-sanitize).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${TWINBED_BUILD_DIR:-build}"
# nvcc lives outside PATH in a default CUDA install.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$dir" -j"$(nproc)" ${TWINBED_TARGET:+--target "$TWINBED_TARGET"}
