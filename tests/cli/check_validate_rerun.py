#!/usr/bin/python3
"""check_validate_rerun.py VALIDATE_JSON SIM_JSON ID...: `twinbed validate --row ID ...` simulated exactly
the rows named, and `twinbed run` of the config it wrote for a training row (OUT/rows/<id>.json, whose
results are SIM_JSON) reproduces that row: the same step breakdown and, for an MFU row, the same MFU."""
import json
import sys


def main(validate_path, sim_path, ids):
    with open(validate_path) as f:
        rows = json.load(f)["rows"]
    assert sorted(r["id"] for r in rows) == sorted(ids), ([r["id"] for r in rows], ids)
    with open(sim_path) as f:
        summary = json.load(f)["summary"]
    training = [r for r in rows if r["set"] == "training"]
    assert len(training) == 1, [r["id"] for r in training]
    row = training[0]
    step = row["step_breakdown"]
    for key in ("compute", "bubble", "exposed_communication"):
        pct = summary[key + "_pct"] if key != "exposed_communication" else summary["exposed_comm_pct"]
        assert abs(100 * step[key] - pct) <= 1e-9 * max(1.0, pct), (key, step[key], pct)
    if row["metric"] == "mfu":
        assert abs(100 * row["simulated"] - summary["mfu_pct"]) <= 1e-9 * summary["mfu_pct"], (row["simulated"], summary["mfu_pct"])
    print(f"ok: {len(rows)} rows; {row['id']} rerun by twinbed run as validate simulated it")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
