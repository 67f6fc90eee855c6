#!/usr/bin/env bash
# scripts/gpu-check.sh: the GPU check of issue 10, part 4, in one run of under 8 minutes on one GPU
# machine without package access. No arguments; options through the environment:
#   OUT       results folder (default results/gpu-check; on the device machine the tool's $OUT). It gets
#             summary.md and gpu-check.tar.gz (every log, the profile, the compare results): two files,
#             as the device tool brings back at most 8.
#   TIME      seconds for the whole check (default 450); each step's timeout is cut to what is left.
#   DEPS      the carried dependency prefix made by scripts/gpu-deps.sh (default .gpu-deps).
#   BUILD     build folder (default /tmp/twinbed-gpu-build: outside the tree that travels).
#   STOP_AFTER=configure  stop after configuring (a dry run of the script's first half, e.g. here).
# Steps, each with a timeout, each logged: probe the GPU; find NCCL (the CUDA toolkit's, $NCCL_HOME, or
# the nvidia-nccl wheel of the image's python3); configure (-DTWINBED_CUDA=ON, sm_90, the carried
# dependencies); build only the CLI, the CUDA tests and bench_kernels_cuda; ctest -L cuda; twinbed
# calibrate --gpu; one layer of two validation rows, and its attention alone, in PyTorch against the simulator
# (scripts/gpu-layer-step.py), the SM clock and power sampled during both (clocks-*.csv); for each experiments/techniques/*.json made a one-GPU experiment (dp 1), twinbed compare
# --backend real-cuda (runs it with and without its technique, paired); one twinbed run --backend
# real-cuda; bench_kernels_cuda (the CUDA twins' bandwidth fractions); on an H100 SXM, twinbed validate's
# training rows with the measured profile (validate --profile h100=...). Without a GPU it
# configures and builds (so the script is checked wherever it runs), skips every GPU step saying so, and
# exits 0. A failed step is recorded and the next goes on; the exit code is 1 when any step failed.
#
# On the device tool (README, "The GPU check"): first here `scripts/gpu-deps.sh`, then
#   run(command="scripts/gpu-check.sh", carry=[".gpu-deps"], timeout_s=540)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=${OUT:-$ROOT/results/gpu-check}
TIME=${TIME:-450}
DEPS=${DEPS:-$ROOT/.gpu-deps}
BUILD=${BUILD:-/tmp/twinbed-gpu-build}
STOP_AFTER=${STOP_AFTER:-}
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
LOGS=$WORK/gpu-check
mkdir -p "$LOGS" "$RESULTS"
START=$(date +%s)
FAILED=0
SKIPPED=()

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((TIME - $(elapsed))); }
summary() { echo "$*" >>"$LOGS/summary.md"; }

# step NAME SECONDS COMMAND...: runs COMMAND with at most SECONDS (fewer if the budget is short), output
# in $LOGS/NAME.log; records ok / FAIL / TIMEOUT and the time in the summary. Never exits the script.
step() {
  local name=$1 limit=$2
  shift 2
  local budget
  budget=$(($(left) - 10))
  if ((budget < 5)); then
    SKIPPED+=("$name (out of time)")
    summary "| $name | skipped: out of time | 0 |"
    return 1
  fi
  ((limit > budget)) && limit=$budget
  local t0 rc=0
  t0=$(date +%s)
  echo "== $name (at most ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  local took=$(($(date +%s) - t0)) status=ok
  if ((rc == 124 || rc == 137)); then
    status="TIMEOUT after ${limit}s"
  elif ((rc != 0)); then
    status="FAIL (exit $rc)"
  fi
  [ "$status" = ok ] || FAILED=1
  echo "   $status, ${took}s"
  summary "| $name | $status | $took |"
  return "$rc"
}

finish() {
  summary ""
  summary "Total: $(elapsed) s of a $TIME s budget."
  if ((${#SKIPPED[@]} > 0)); then
    summary ""
    summary "Skipped:"
    for s in "${SKIPPED[@]}"; do summary "- $s"; done
  fi
  cp "$LOGS/summary.md" "$RESULTS/summary.md"
  tar czf "$RESULTS/gpu-check.tar.gz" -C "$WORK" gpu-check
  echo "== results: $RESULTS/summary.md, $RESULTS/gpu-check.tar.gz"
  for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "   skipped: $s"; done
  cat "$LOGS/summary.md"
}

{
  echo "# twinbed GPU check"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
  echo "- git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
} >"$LOGS/summary.md"

# ---- what this machine has --------------------------------------------------------------------------
GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >"$LOGS/gpu.txt" 2>&1 && grep -q '^GPU' "$LOGS/gpu.txt"; then
  GPU=1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv >>"$LOGS/gpu.txt" 2>&1 || true
  summary "| gpu | $(head -1 "$LOGS/gpu.txt" | cut -c1-80) | 0 |"
else
  summary "| gpu | none: GPU steps skipped | 0 |"
fi
{ nvcc --version || true; cmake --version || true; g++ --version || true; } >"$LOGS/tools.txt" 2>&1

# NCCL: the toolkit's, $NCCL_HOME's, or the nvidia-nccl wheel of python3 (which ships only libnccl.so.2).
NCCL_ARGS=()
if [ -z "${NCCL_HOME:-}" ] && ! [ -f /usr/local/cuda/include/nccl.h ] && ! [ -f /usr/include/nccl.h ]; then
  wheel=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
  if [ -n "$wheel" ] && [ -f "$wheel/include/nccl.h" ]; then
    libs=("$wheel"/lib/libnccl.so*)
    NCCL_ARGS=(-DNCCL_INCLUDE_DIR="$wheel/include" -DNCCL_LIBRARY="${libs[0]}")
    export LD_LIBRARY_PATH="$wheel/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    summary "| nccl | the python3 wheel's, $wheel | 0 |"
  else
    summary "| nccl | not found: the CUDA backend and NCCL tests will say so | 0 |"
  fi
fi

# ---- build ----------------------------------------------------------------------------------------------
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
PREFIX=()
[ -d "$DEPS/usr" ] && PREFIX=(-DCMAKE_PREFIX_PATH="$DEPS/usr")
[ -d "$DEPS/usr" ] || SKIPPED+=("carried dependencies: $DEPS/usr is missing (run scripts/gpu-deps.sh here first); configuring with the system's")
built=0
if step configure 60 cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DTWINBED_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DTWINBED_BUILD_BENCHMARKS=OFF "${PREFIX[@]}" "${NCCL_ARGS[@]}"; then
  if [ "$STOP_AFTER" = configure ]; then
    SKIPPED+=("build and every later step (STOP_AFTER=configure)")
    finish
    exit "$FAILED"
  fi
  step build 240 cmake --build "$BUILD" -j "$(nproc)" --target twinbed test_real_cuda test_real_cuda_backend test_kernels_cuda bench_kernels_cuda \
    && built=1
fi
TB=$BUILD/cli/twinbed

if ((built == 0)); then
  SKIPPED+=("every GPU step: the build failed (see build.log / configure.log)")
elif ((GPU == 0)); then
  SKIPPED+=("no GPU: ctest -L cuda, calibrate, compare and run skipped")
  summary ""
  summary "no GPU: skipped"
else
  # ---- tests: the kernels' CUDA twins against their CPU references, the collectives, the Plan backend.
  step ctest-cuda 150 ctest --test-dir "$BUILD" -L cuda --output-on-failure --timeout 120 || true

  # ---- clocks under load (issue 12: whether a training-like loop holds the SM clock lower than the GEMM
  # benchmarks behind the model's ceilings): the SM clock, power and temperature sampled every 200 ms
  # while calibrate's GEMM grid runs and while the layer runs, one CSV each (clocks-<step>.csv).
  sampling() {
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu \
      --format=csv -lms 200 >"$LOGS/clocks-$1.csv" 2>&1 &
    SAMPLER=$!
  }
  sampled() {
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    # The median SM clock and power over the samples, into the summary.
    local csv=$LOGS/clocks-$1.csv
    local median_clock median_power
    median_clock=$(awk -F', ' 'NR > 1 { sub(/ MHz/, "", $2); print $2 }' "$csv" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }')
    median_power=$(awk -F', ' 'NR > 1 { sub(/ W/, "", $4); print $4 }' "$csv" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }')
    summary "| clocks during $1 | median SM ${median_clock:-?} MHz, ${median_power:-?} W ($(grep -c ' MHz' "$csv" || true) samples) | |"
  }

  # ---- calibrate: the GPU profile the simulator reads.
  PROFILE=$LOGS/gpu-profile.json
  sampling calibrate
  step calibrate 60 "$TB" calibrate --gpu --out "$PROFILE" || true
  sampled

  # ---- one layer in PyTorch (BF16, FlashAttention-2) against the simulator's time for the same layer
  # (issue 12: what part of the H100 training rows' error is the layer's own kernels).
  SIM_DEVICE=h100
  grep -q 'H200' "$LOGS/gpu.txt" && SIM_DEVICE=h200
  grep -q 'A100' "$LOGS/gpu.txt" && SIM_DEVICE=a100
  sampling layer-step
  step layer-step 90 python3 "$ROOT/scripts/gpu-layer-step.py" --twinbed "$TB" --sim-device "$SIM_DEVICE" \
    --json "$LOGS/layer-step.json" || true
  sampled

  # ---- one GPU: each technique experiment made dp 1; compare runs it with and without the technique.
  mkdir -p "$LOGS/experiments"
  for e in "$ROOT"/experiments/techniques/*.json; do
    name=$(basename "$e" .json)
    python3 - "$e" "$LOGS/experiments/$name.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
e["name"] = e["name"] + "-1gpu"
e["cluster"]["ranks"] = 1
dp = e["layout"].get("dp", 1)
e["layout"]["dp"] = 1
e["layout"]["global_batch"] = max(e["layout"].get("micro_batch", 1), e["layout"].get("global_batch", dp) // dp)
e.get("simulation", {}).pop("collective_algorithm", None)  # one rank: NCCL's own
e["output"] = "results/gpu-check/" + e["name"]
json.dump(e, open(sys.argv[2], "w"), indent=2)
PY
  done
  if [ -f "$PROFILE" ]; then
    for e in "$LOGS"/experiments/*.json; do
      name=$(basename "$e" .json)
      step "compare-$name" 45 "$TB" compare "$e" --backend real-cuda --algo native --profile "$PROFILE" --repeats 3 \
        --out "$LOGS/compare-$name" || true
    done
  else
    SKIPPED+=("compare: no GPU profile (calibrate failed)")
  fi
  experiments=("$LOGS"/experiments/*.json)
  first=${experiments[0]}
  step run-real-cuda 30 "$TB" run "$first" --backend real-cuda --out "$LOGS/run-real-cuda" || true
  # The CUDA twins' bandwidth fractions: each streaming twin against the device-to-device copy.
  step bench-kernels-cuda 60 "$BUILD/kernels/bench_kernels_cuda" || true
  # The validation's training rows with this GPU's measured profile in place of the roofline defaults
  # (issue 12): how much of their error is the per-GPU rate of real kernels. H100 SXM only: the rows'
  # devices are a100 and h100, and an H200's HBM is not an H100's.
  if [ -f "$PROFILE" ] && grep -q 'H100 80GB HBM3' "$LOGS/gpu.txt"; then
    step validate-profile 60 "$TB" validate --only training --data "$ROOT/experiments/validation" \
      --profile "h100=$PROFILE" --out "$LOGS/validate-profile" --no-plot || true
  else
    SKIPPED+=("validate with the GPU profile: not an H100 SXM, or no profile")
  fi

  # ---- the figures, in the summary.
  {
    echo
    echo "## calibrate"
    echo '```'
    cat "$LOGS/calibrate.log" 2>/dev/null || true
    echo '```'
    echo
    echo "## one layer, PyTorch against the simulator (scripts/gpu-layer-step.py)"
    echo '```'
    grep -vE 'Warning|warn' "$LOGS/layer-step.log" 2>/dev/null || echo "not run"
    echo '```'
    echo
    echo "## compare (one GPU, each technique with / without)"
    for f in "$LOGS"/compare-*.log; do
      [ -f "$f" ] || continue
      echo
      echo "### $(basename "$f" .log)"
      echo '```'
      grep -E '^(# twinbed compare|step|# the techniques|ratio|step time|peak memory|# peak memory|resident peak|gemm|attention|memory_bound|collective|twinbed: error)' "$f" || tail -5 "$f"
      echo '```'
    done
    echo
    echo "## the CUDA twins' bandwidth fractions (bench_kernels_cuda)"
    echo '```'
    cat "$LOGS/bench-kernels-cuda.log" 2>/dev/null || true
    echo '```'
    echo
    echo "## the validation's H100 training rows with this GPU's profile (twinbed validate --profile)"
    echo '```'
    grep -E 'h100|^training' "$LOGS/validate-profile.log" 2>/dev/null || echo "not run"
    echo '```'
    echo
    echo "## ctest -L cuda"
    echo '```'
    grep -E 'tests passed|Skipped|Failed|\*\*\*' "$LOGS/ctest-cuda.log" 2>/dev/null | tail -20 || true
    echo '```'
  } >>"$LOGS/summary.md"
fi

finish
exit "$FAILED"
