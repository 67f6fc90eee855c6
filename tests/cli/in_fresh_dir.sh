#!/usr/bin/env bash
# in_fresh_dir.sh DIR COMMAND...: empties DIR (creating it), then runs COMMAND inside it. Every CLI test
# runs in a folder of its own, so none depends on files an earlier run or another test left behind, nor on
# the order ctest picks.
set -eu
dir=$1; shift
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
exec "$@"
