#!/usr/bin/python3
"""Plot bus bandwidth against message size from `twinbed collectives --json` outputs.

Usage:  notebooks/plot_collectives.py OUT.png LABEL=rows.json [LABEL=rows.json ...]
Example:
  build/cli/twinbed collectives --algo ring --json > /tmp/ring.json
  build/cli/twinbed collectives --algo tree --json > /tmp/tree.json
  notebooks/plot_collectives.py results/allreduce.png ring=/tmp/ring.json tree=/tmp/tree.json
Runs with Debian's /usr/bin/python3 (python3-matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arg in argv[2:]:
        label, path = arg.split("=", 1)
        with open(path) as f:
            rows = json.load(f)
        ax.plot([r["size_bytes"] for r in rows], [r["busbw_GBps"] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(argv[1], dpi=120)
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
