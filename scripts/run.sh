#!/usr/bin/env bash
# One command for a newcomer: installs what is missing, builds, and runs the main job.
# With no arguments the main job is the embedded default: a simulated all-reduce sweep on the default
# cluster (8 ranks on one switch), printed as an nccl-tests-style table. Arguments are passed to the
# twinbed CLI instead, e.g.  scripts/run.sh collectives --ranks 64 --topology fat-tree
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
TWINBED_TARGET=twinbed scripts/build.sh
if [ $# -eq 0 ]; then set -- collectives; fi
exec ./build/cli/twinbed "$@"
