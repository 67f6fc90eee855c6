#!/usr/bin/env bash
# calibrate writes a profile with provenance (and how fast the machine ran through it); compare runs a
# collective and an experiment's Plan on both backends from it (and times the machine's speed again) and
# writes its files (with a technique: also its effect, with / without); the plot
# script draws them (where matplotlib is installed).
# Usage: check_calibrate_compare.sh TWINBED EXPERIMENTS_DIR NOTEBOOKS_DIR
set -euo pipefail
tb=$1; experiments=$2; notebooks=$3
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$tb" calibrate --quick --ranks 2 --out "$work/profile.json" >"$work/calibrate.txt"
grep -q "^machine speed    512^3 GEMM" "$work/calibrate.txt"
/usr/bin/python3 - "$work/profile.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
assert p["gemm_TFLOPs"]["fp32"] > 0 and p["memory_bandwidth_GBps"] > 0, p
assert p["link"]["bandwidth_GBps"] > 0 and p["link"]["latency_us"] >= 0, p
assert p["provenance"]["ranks"] == 2 and p["provenance"]["tool"] == "twinbed calibrate", p
assert p["provenance"]["cores"] >= 1, p  # the cores compare's simulation shares among the ranks
assert p.get("cache_half_life_ms", 1) > 0, p  # none where calibrate saw no decay
PY
"$tb" compare --collectives --profile "$work/profile.json" --ranks 2 --max-bytes 2M --iters 2 --out "$work/coll.json"
/usr/bin/python3 -c "import json,sys; rows=json.load(open(sys.argv[1])); assert rows and all(r['measured_us']>0 and r['simulated_us']>0 for r in rows), rows" "$work/coll.json"
"$tb" compare "$experiments/cpu-tiny.json" --profile "$work/profile.json" --out "$work/cmp"
/usr/bin/python3 - "$work/cmp" <<'PY'
import json, sys, os
c = json.load(open(os.path.join(sys.argv[1], "compare.json")))
assert c["step"]["measured_s"] > 0 and c["step"]["simulated_s"] > 0, c["step"]
assert "gemm" in c["per_op"] and c["per_op"]["gemm"]["ops"], c.keys()
# What the cache model added: only where the profile has a cache half-life, then that one.
half_life = c["profile"].get("cache_half_life_ms")
assert (c["cache"] is None) == (half_life is None), c["cache"]
if half_life is not None:
    assert c["cache"]["half_life_ms"] == half_life and c["cache"]["cold_bytes"] >= 0 and c["cache"]["cold_s"] >= 0, c["cache"]
# The machine's speed against the calibration's: the quick grid's 512^3 sample timed again.
s = c["machine_speed"]
assert s["probe"] == {"m": 512, "n": 512, "k": 512, "dtype": "fp32"}, s
assert s["calibrated_flops_per_s"] > 0, s
# Probed before the first run and after each; each rank's rate too.
runs = c["repeats"]
assert len(s["ratios"]) == runs + 1 and all(x > 0 for x in s["ratios"]), s
assert len(s["ranks_ratios"]) == runs + 1 and all(len(r) == 2 for r in s["ranks_ratios"]), s
# A run is corrected for the speed where the probes either side of it agree (the machine held one speed
# through it) and the ranks ran alike in both, else left out.
held = [abs(s["ratios"][i + 1] / s["ratios"][i] - 1) <= 0.1 and
        all(max(r) / min(r) - 1 <= 0.1 for r in s["ranks_ratios"][i:i + 2]) for i in range(runs)]
assert [x["run"] for x in s["left_out"]] == [i + 1 for i in range(runs) if not held[i]], s
k = s["corrected"]
assert (k is not None) == any(held), s
if k is not None:
    assert k["runs"] == [i + 1 for i in range(runs) if held[i]], k
    for run, factor in zip(k["runs"], k["gemm_rate_factors"], strict=True):
        assert abs(factor - (s["ratios"][run - 1] * s["ratios"][run]) ** 0.5) < 1e-9, k
    assert k["step_simulated_s"] > 0 and len(k["step_error_range_pct"]) == 2 and "gemm_median_abs_error_pct" in k, k
t = json.load(open(os.path.join(sys.argv[1], "trace.json")))
pids = {e["pid"] for e in t["traceEvents"] if e.get("ph") == "X"}
assert len(pids) == 2, pids  # sim and real as two processes
PY
# An experiment with a technique: its Plan without it too, the ops the pass added and the effect (with /
# without), measured and simulated; TGC's top-k payloads verified.
"$tb" compare "$experiments/techniques/tgc.json" --profile "$work/profile.json" --repeats 2 --no-trace --out "$work/tgc" >"$work/tgc.txt"
grep -q "compressed payloads verified" "$work/tgc.txt"
/usr/bin/python3 - "$work/tgc" <<'PY'
import json, sys, os
c = json.load(open(os.path.join(sys.argv[1], "compare.json")))
names = {op["name"] for op in c["technique_ops"]}
assert {"dp.bucket0.compress", "dp.bucket0.decompress"} <= names, names
assert all(op["measured_s"] > 0 and op["simulated_s"] > 0 for op in c["technique_ops"]), c["technique_ops"]
effect = c["technique_effect"]
assert effect["step_time"]["measured"] > 0 and effect["step_time"]["simulated"] > 0, effect
assert len(effect["step_time"]["measured_range"]) == 2, effect
assert c["payload_floats_verified"] > 0, c["payload_floats_verified"]
PY
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 "$notebooks/plot_compare.py" "$work/cmp"
  test -s "$work/cmp/kinds.png" && test -s "$work/cmp/ops.png"
  /usr/bin/python3 "$notebooks/plot_compare.py" "$work/coll.json" "$work/coll.png"
  test -s "$work/coll.png"
fi
echo "ok: calibrate and compare"
