"""Reads `twinbed collectives --json` from stdin and checks the row schema and the busbw arithmetic."""
import json
import sys

rows = json.load(sys.stdin)
assert isinstance(rows, list) and rows, "expected a non-empty JSON array"
want = {"size_bytes", "count", "type", "time_us", "algbw_GBps", "busbw_GBps"}
for r in rows:
    missing = want - set(r)
    assert not missing, f"row lacks {missing}: {r}"
    assert r["time_us"] > 0, r
    assert abs(r["algbw_GBps"] - r["size_bytes"] / (r["time_us"] * 1e-6) / 1e9) <= 1e-6 * r["algbw_GBps"], r
    # default: all-reduce on 8 ranks, busbw = algbw * 2(n-1)/n
    assert abs(r["busbw_GBps"] - r["algbw_GBps"] * 2 * 7 / 8) <= 1e-9 * r["busbw_GBps"] + 1e-12, r
print(f"ok: {len(rows)} rows")
