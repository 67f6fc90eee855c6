#!/usr/bin/env python3
"""check_run_outputs.py DIR: the files `twinbed run` writes are there and well-formed.

config.json re-parses to an experiment (keys checked), sim.json has the summary figures, both CSVs have
their header and rows, and trace.json follows the Trace Event Format (required fields and types)."""
import csv
import json
import sys
from pathlib import Path


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


d = Path(sys.argv[1])
for name in ["config.json", "sim.json", "sim_ops.csv", "sim_ranks.csv", "trace.json"]:
    if not (d / name).is_file():
        fail(f"{name} missing in {d}")
leftovers = [p.name for p in d.iterdir() if ".tmp-" in p.name]
if leftovers:
    fail(f"temporary files left: {leftovers}")

config = json.loads((d / "config.json").read_text())
for key in ["name", "cluster", "model", "layout", "techniques", "backends", "simulation", "output"]:
    if key not in config:
        fail(f"config.json lacks {key}")

res = json.loads((d / "sim.json").read_text())
for key in ["step_time_s", "tokens_per_s", "tflops_per_gpu", "mfu_pct", "bubble_pct", "exposed_comm_pct",
            "peak_memory_bytes", "memory_fits"]:
    if key not in res["summary"]:
        fail(f"sim.json summary lacks {key}")
if not res["summary"]["step_time_s"] > 0:
    fail("step time is not positive")
for key in ["git_revision", "date", "hostname", "config"]:
    if key not in res["provenance"]:
        fail(f"sim.json provenance lacks {key}")

ops = list(csv.reader(open(d / "sim_ops.csv")))
if ops[0][:3] != ["kind", "count", "total_s"] or len(ops) < 2:
    fail(f"sim_ops.csv: {ops[:2]}")
ranks = list(csv.reader(open(d / "sim_ranks.csv")))
if ranks[0][0] != "rank" or len(ranks) != res["world_size"] + 1:
    fail("sim_ranks.csv: wrong header or row count")

trace = json.loads((d / "trace.json").read_text())
events = trace["traceEvents"]
phases = set("BEXiICMbenstfPNOD")
complete = 0
for e in events:
    if not isinstance(e.get("name"), str) or e.get("ph") not in phases:
        fail(f"bad event {e}")
    if not isinstance(e.get("pid"), int) or not isinstance(e.get("tid"), int):
        fail(f"pid/tid not integers: {e}")
    if not isinstance(e.get("ts"), (int, float)):
        fail(f"ts not a number: {e}")
    if e["ph"] == "X":
        complete += 1
        if not isinstance(e.get("dur"), (int, float)) or e["dur"] < 0:
            fail(f"bad dur: {e}")
if complete == 0:
    fail("no complete (X) events")
print(f"ok: {len(events)} trace events, {len(ops) - 1} op kinds, {len(ranks) - 1} ranks")
