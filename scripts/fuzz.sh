#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...]: the libFuzzer targets of tests/fuzz (experiment, topology,
# profile, sweep, validation), built with Clang, AddressSanitizer and UndefinedBehaviorSanitizer in
# ./build-fuzz and run SECONDS each (default 600), one after another, on a seed corpus of the
# repository's own inputs (experiments/, experiments/validation/, tests/data/, tests/fuzz/seeds/). Prints each target's executions per second; exits
# non-zero on a finding, whose input libFuzzer writes to build-fuzz/findings/.
# The corpora grow in build-fuzz/corpus/<target> and are reused by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0;; esac
seconds=${1:-600}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(experiment topology profile sweep validation)
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2;; esac
for t in "${targets[@]}"; do
  case "$t" in experiment|topology|profile|sweep|validation) ;;
    *) echo "fuzz.sh: unknown target '$t'; known: experiment, topology, profile, sweep, validation" >&2; exit 2;; esac
done

scripts/install-deps.sh --fuzz
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTWINBED_FUZZ=ON \
  -DTWINBED_BUILD_TESTS=OFF -DTWINBED_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")

seeds() {  # the seed files of one target
  case "$1" in
    experiment|sweep) ls experiments/*.json tests/data/experiments/*.json tests/data/hardening/*.json tests/fuzz/seeds/sweep_*.json ;;
    topology) ls tests/data/topologies/*.json tests/data/cli/*.json tests/data/hardening/oversubscribed_topology.json ;;
    profile) ls tests/fuzz/seeds/profile_*.json ;;
    validation) ls experiments/validation/collectives/*.json experiments/validation/training/*.json ;;
  esac
}

mkdir -p build-fuzz/findings
status=0
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t
  mkdir -p "$corpus"
  for f in $(seeds "$t"); do cp "$f" "$corpus/seed-${f//\//_}"; done   # unique names: the path, / as _
  log=build-fuzz/fuzz_$t.log
  echo "fuzz.sh: $t for $seconds s (log: $log)"
  # -timeout: one input taking 30 s is a finding (a hang); -rss_limit_mb: so is one needing 4 GiB.
  if ! build-fuzz/tests/fuzz/fuzz_"$t" "$corpus" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix=build-fuzz/findings/"$t"- >"$log" 2>&1; then
    echo "fuzz.sh: $t: FINDING — see $log and build-fuzz/findings/" >&2
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  echo "fuzz.sh: $t: ${runs:-?} inputs, ${rate:-?} exec/s; corpus $(ls "$corpus" | wc -l) files"
done
exit $status
