#!/usr/bin/python3
"""Plot simulated against measured from `twinbed compare` output.

Usage:
  notebooks/plot_compare.py results/<name>-compare          # compare.json of an experiment
  notebooks/plot_compare.py collectives.json OUT.png        # compare --collectives --out FILE
Writes, for an experiment: kinds.png (time per rank by op kind, measured vs simulated) and ops.png (every
op's simulated vs measured duration, log-log, with the y = x line); for collectives: measured and
simulated time against size. Runs with Debian's /usr/bin/python3 (python3-matplotlib).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_experiment(folder):
    with open(os.path.join(folder, "compare.json")) as f:
        c = json.load(f)
    kinds = sorted(c["op_kinds"])
    measured = [c["op_kinds"][k]["measured_s"] * 1e3 for k in kinds]
    simulated = [c["op_kinds"][k]["simulated_s"] * 1e3 for k in kinds]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(kinds))
    ax.bar([i - 0.2 for i in x], measured, width=0.4, label="measured")
    ax.bar([i + 0.2 for i in x], simulated, width=0.4, label="simulated")
    ax.set_xticks(list(x), kinds, rotation=20)
    ax.set_ylabel("time per rank (ms)")
    ax.set_title(f"{c['experiment']}: step {c['step']['measured_s']*1e3:.1f} ms measured, "
                 f"{c['step']['simulated_s']*1e3:.1f} ms simulated")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "kinds.png"), dpi=120)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = float("inf"), 0.0
    for kind, entry in sorted(c["per_op"].items()):
        xs = [o["measured_s"] * 1e3 for o in entry["ops"]]
        ys = [o["simulated_s"] * 1e3 for o in entry["ops"]]
        if not xs:
            continue
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        ax.scatter(xs, ys, s=12, label=f"{kind} (median |err| {entry['median_abs_error_pct']:.0f}%)")
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("simulated (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "ops.png"), dpi=120)
    print(f"wrote {folder}/kinds.png, {folder}/ops.png")


def plot_collectives(path, out):
    with open(path) as f:
        rows = json.load(f)
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [r["size_bytes"] for r in rows]
    ax.plot(sizes, [r["measured_us"] for r in rows], marker="o", label="measured")
    ax.plot(sizes, [r["simulated_us"] for r in rows], marker="s", label="simulated")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("size (bytes)")
    ax.set_ylabel("time (us)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main(argv):
    if len(argv) == 2 and os.path.isdir(argv[1]):
        plot_experiment(argv[1])
    elif len(argv) == 3 and os.path.isfile(argv[1]):
        plot_collectives(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
