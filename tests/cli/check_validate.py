#!/usr/bin/python3
"""check_validate.py VALIDATE_JSON TABLE_TXT: `twinbed validate`'s outputs exist and parse: the JSON's
format, rows (numbers for published, simulated, error, with a source), aggregates and provenance, and
the printed table naming every row. It never checks the model's error: the command reports it."""
import json
import math
import os
import sys


def check_panels(rows):
    """validate.png's collective panels: every row in exactly one, and no panel mixing communicators (op and
    GPU count) unless it is drawn over the GPU count, at one size."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "notebooks"))
    import plot_validate  # noqa: E402  (the plot's own grouping, without matplotlib)
    panels = plot_validate.sweep_panels(rows)
    drawn = [r["id"] for _, series in panels for _, rs in series for r in rs]
    assert sorted(drawn) == sorted(r["id"] for r in rows), "a row is drawn twice or not at all"
    for title, series in panels:
        mine = [r for _, rs in series for r in rs]
        communicators = {plot_validate.label_parts(r)[:2] for r in mine}
        assert len(communicators) == 1 or plot_validate.over_gpu_counts(mine), (title, communicators)


def main(path, table_path):
    with open(path) as f:
        doc = json.load(f)
    assert doc["format"] == "twinbed-validate-1", doc.get("format")
    rows = doc["rows"]
    assert rows, "no rows"
    with open(table_path) as f:
        table = f.read()
    for r in rows:
        for key in ("published", "simulated", "error"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (r["id"], key, r[key])
        assert r["source"] and r["file"] and r["set"] in ("collectives", "training"), r
        assert r["id"] in table, f"{r['id']} not in the printed table"
        step = r["step_breakdown"]
        if r["set"] == "collectives":
            assert step is None, r["id"]
            assert isinstance(r["size_bytes"], int) and r["size_bytes"] > 0, (r["id"], r["size_bytes"])
        else:
            assert r["size_bytes"] is None, r["id"]
            parts = [step[k] for k in ("compute", "exposed_communication", "bubble")]
            assert all(0 <= x <= 1 for x in parts) and sum(parts) <= 1 + 1e-9, (r["id"], step)
            assert abs(sum(step["op_kind_shares"].values()) - 1) < 1e-9, (r["id"], step)
    for a in doc["aggregates"]:
        assert a["set"] in ("collectives", "training") and isinstance(a["target_met"], bool), a
        assert 0 <= a["mean_abs_error"] <= a["max_abs_error"], a
    p = doc["provenance"]
    assert p["git_revision"] and p["data_files"] and p["cheap"] is True, p
    check_panels([r for r in rows if r["set"] == "collectives"])
    png = os.path.join(os.path.dirname(path), "validate.png")
    if os.path.exists(png):  # drawn where matplotlib is installed
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", "validate.png is not a PNG"
    print(f"ok: {len(rows)} rows, {len(doc['aggregates'])} aggregates")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
