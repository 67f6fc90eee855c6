#!/usr/bin/env bash
# One command for a newcomer: installs what is missing, builds, and runs the main job.
# With no arguments the main job is the claims ledger: every figure of ../shared/CLAIMS.md put through its
# experiments (experiments/claims/) on the simulator, its accuracy figures measured in a real training run
# (experiments/train-fortunes.json: trained on the first run, about 4 minutes, then reused), printed as one
# table (reported, simulated, measured, verdict, reason) and written to results/claims/ (JSON, CSV,
# Markdown, a plot). Arguments are passed to the twinbed CLI instead, e.g.
#   scripts/run.sh collectives --ranks 64 --topology fat-tree
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
TWINBED_TARGET=twinbed scripts/build.sh
if [ $# -eq 0 ]; then set -- claims; fi
exec ./build/cli/twinbed "$@"
