#!/usr/bin/env python3
"""One transformer layer's simulated forward and backward time against a published per-layer table.

Reads a layer table (experiments/validation/layers/*.json: a base experiment from a validation row,
and per row the layout changes and the published forward/backward milliseconds), simulates each row
with `twinbed run` and prints, per row, the span of one layer's forward ops and of its backward ops
(recomputation, gradient ops and their collectives) on rank 0 for micro-batch 0, and the error
(simulated - published) / published. A check of where in a layer the model is off; not a calibration.

  /usr/bin/python3 scripts/layer-times.py [--table FILE] [--layer N] [--twinbed PATH]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKWARD = re.compile(r"(_bwd|_dgrad|_wgrad|recompute|_grad_accumulate)")


def base_experiment(table_path, ref):
    rows_path = os.path.join(os.path.dirname(table_path), ref["file"])
    with open(rows_path) as f:
        rows = json.load(f)["rows"]
    for row in rows:
        if row["id"] == ref["row"]:
            return row["experiment"]
    sys.exit(f"layer-times: row '{ref['row']}' not found in {rows_path}")


def layer_spans(trace_path, layer):
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    prefix = f"l{layer}."
    spans = {"forward": [], "backward": []}
    for e in events:
        if e.get("ph") != "X" or e.get("pid") != 0 or not e["name"].startswith(prefix):
            continue
        if e.get("args", {}).get("micro_batch", 0) not in (0, -1):
            continue
        phase = "backward" if BACKWARD.search(e["name"]) else "forward"
        spans[phase].append((e["ts"], e["ts"] + e["dur"]))
    out = {}
    for phase, s in spans.items():
        if not s:
            sys.exit(f"layer-times: no {phase} ops of layer {layer} on rank 0 in {trace_path}")
        out[phase] = (max(end for _, end in s) - min(start for start, _ in s)) / 1000.0  # us -> ms
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default=os.path.join(ROOT, "experiments/validation/layers/korthikanti-2022-table4.json"))
    parser.add_argument("--layer", type=int, default=20, help="the layer whose spans are taken (default 20)")
    parser.add_argument("--twinbed", default=os.path.join(ROOT, "build/cli/twinbed"))
    args = parser.parse_args()
    if not os.access(args.twinbed, os.X_OK):
        sys.exit(f"layer-times: no twinbed at {args.twinbed} (build it, or pass --twinbed)")
    with open(args.table) as f:
        table = json.load(f)
    base = base_experiment(args.table, table["experiment"])
    print(f"# {table['description']}")
    print(f"# layer {args.layer}, rank 0, micro-batch 0; error = (simulated - published) / published")
    print(f"{'row':20s} {'fwd pub':>8s} {'fwd sim':>8s} {'error':>7s}   {'bwd pub':>8s} {'bwd sim':>8s} {'error':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for row in table["rows"]:
            experiment = json.loads(json.dumps(base))
            experiment["name"] = "layer-times"
            experiment["layout"].update(row["layout"])
            config = os.path.join(tmp, "experiment.json")
            with open(config, "w") as f:
                json.dump(experiment, f)
            out = os.path.join(tmp, "out")
            run = subprocess.run([args.twinbed, "run", config, "--backend", "sim", "--out", out],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"layer-times: twinbed run failed for {row['id']}: {run.stderr.strip()}")
            sim = layer_spans(os.path.join(out, "trace.json"), args.layer)
            fwd, bwd = row["forward_ms"], row["backward_ms"]
            print(f"{row['id']:20s} {fwd:8.2f} {sim['forward']:8.2f} {100 * (sim['forward'] / fwd - 1):+6.1f}%"
                  f"   {bwd:8.2f} {sim['backward']:8.2f} {100 * (sim['backward'] / bwd - 1):+6.1f}%")


if __name__ == "__main__":
    main()
