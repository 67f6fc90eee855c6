#!/usr/bin/env bash
# One command for the tests: installs what is missing, builds everything with warnings as errors, and
# runs every test (GoogleTest suites, CLI checks, a smoke run of the benchmarks) through ctest.
# Pass ctest arguments to narrow it, e.g.  scripts/test.sh -L sim
#
#   scripts/test.sh --sanitize [ctest args]   the same suite built with AddressSanitizer and
#       UndefinedBehaviorSanitizer (no CUDA parts) in ./build-sanitize; any report fails its test.
#       Runs the tests labelled mpi second (see below); ctest arguments apply to both passes.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0;; esac
scripts/install-deps.sh
if [ "${1:-}" = "--sanitize" ]; then
  shift
  # RelWithDebInfo: optimised enough that the suite runs in minutes, with line numbers in reports.
  TWINBED_BUILD_DIR=build-sanitize scripts/build.sh -DTWINBED_WERROR=ON -DTWINBED_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cd build-sanitize
  export ASAN_OPTIONS="abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  # Leak checking everywhere but in processes under mpirun: there LeakSanitizer's exit-time scan itself
  # crashes on Open MPI's progress threads, and what Open MPI's unloaded plugins keep cannot be told
  # from a leak of ours. Address and undefined-behaviour checks stay on for them.
  ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=1" ctest --output-on-failure -j"$(nproc)" -LE mpi "$@"
  ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" ctest --output-on-failure -j"$(nproc)" -L mpi "$@"
else
  scripts/build.sh -DTWINBED_WERROR=ON
  cd build
  ctest --output-on-failure -j"$(nproc)" "$@"
fi
