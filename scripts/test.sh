#!/usr/bin/env bash
# One command for the tests: installs what is missing, builds everything with warnings as errors, and
# runs every test (GoogleTest suites, CLI checks, a smoke run of the benchmarks) through ctest.
# Pass ctest arguments to narrow it, e.g.  scripts/test.sh -L sim
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DTWINBED_WERROR=ON
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
