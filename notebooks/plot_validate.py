#!/usr/bin/python3
"""Plot `twinbed validate`'s results: the simulator's signed error on every published row, one bar
per row (simulated vs published, in %), grouped by set, with the issue's target band shaded and each
bar labelled with the published and simulated figures; beside the training rows, where each simulated
step goes (compute, exposed communication, pipeline bubble: validate.json's step_breakdown).

Usage:  notebooks/plot_validate.py results/validate/validate.json OUT.png
`twinbed validate` runs it (unless --no-plot). Runs with Debian's /usr/bin/python3 (python3-matplotlib).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_claims import plot_main, save_png  # noqa: E402  (what every plot script shares)

try:
    from matplotlib.figure import Figure
except ImportError:  # main() exits 77 (the CLI tests' "skipped")
    Figure = None

# The per-row bound (collectives: every size; training: the max); training's mean bound is 5 %.
BAND = {"collectives": 10.0, "training": 10.0}
UNITS = {"busbw_GBps": "GB/s", "time_us": "us", "tflops_per_gpu": "TFLOP/s", "mfu": "MFU"}
# Bars are cut at ±CUT % (their label then gives the error), so that one far-off row does not shrink
# every other bar and the target band to slivers.
CUT = 100.0


def figure_text(value, metric):
    return f"{value:.3f}" if metric == "mfu" else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


# Where a training row's simulated step goes, as fractions of the step (means over ranks).
PARTS = [("compute", "compute", "#6d9eeb"), ("exposed_communication", "exposed communication", "#e69138"),
         ("bubble", "bubble", "#b7b7b7")]


def draw_breakdown(ax, rows):
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for key, label, color in PARTS:
        widths = [100 * r["step_breakdown"][key] for r in rows]
        ax.barh(y, widths, left=left, color=color, height=0.6, label=label)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlim(0, 100)
    ax.tick_params(axis="y", labelleft=False)
    ax.set_title("where the simulated step goes", fontsize=10, loc="left")
    ax.set_xlabel("% of the step", fontsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.05), frameon=False)


def draw(data, out_png):
    rows = data["rows"]
    sets = [s for s in ("collectives", "training") if any(r["set"] == s for r in rows)]
    heights = [max(1.2, 0.42 * sum(r["set"] == s for r in rows) + 0.9) for s in sets]
    fig = Figure(figsize=(12, sum(heights) + 0.6))
    grid = fig.add_gridspec(len(sets), 2, height_ratios=heights, width_ratios=[3.2, 1])
    aggregates = {a["set"]: a for a in data.get("aggregates", [])}
    for i, s in enumerate(sets):
        broken = s == "training" and all(r.get("step_breakdown") for r in rows if r["set"] == s)
        ax = fig.add_subplot(grid[i, 0] if broken else grid[i, :])
        if broken:
            draw_breakdown(fig.add_subplot(grid[i, 1], sharey=ax), [r for r in rows if r["set"] == s])
        mine = [r for r in rows if r["set"] == s]
        errors = [100 * r["error"] for r in mine]
        y = list(range(len(mine)))[::-1]
        band = BAND[s]
        ax.axvspan(-band, band, color="#d9ead3", zorder=0)
        colors = ["#6aa84f" if abs(e) <= band else "#cc4125" for e in errors]
        for yi, e, c, r in zip(y, errors, colors, mine):
            shown = max(-CUT, min(CUT, e))
            ax.barh(yi, shown, color=c, alpha=1.0 if r["judged"] else 0.4, height=0.6, zorder=2)
            unit = UNITS.get(r["metric"], r["metric"])
            text = f"  {figure_text(r['published'], r['metric'])} → {figure_text(r['simulated'], r['metric'])} {unit}"
            if shown != e:
                text += f" ({e:+.0f}%, bar cut)"
            ax.text(shown, yi, text if e >= 0 else text.strip() + "  ", va="center", ha="left" if e >= 0 else "right",
                    fontsize=8, zorder=3)
        ax.set_yticks(y)
        ax.set_yticklabels([r["id"] + ("" if r["judged"] else " (<1 MiB)") for r in mine], fontsize=8)
        ax.axvline(0, color="black", lw=0.8)
        lim = max([band * 1.5] + [abs(e) * 1.6 if abs(e) <= CUT else CUT * 1.9 for e in errors])  # room for labels
        ax.set_xlim(-lim, lim)
        title = f"{s}: simulated vs published"
        a = aggregates.get(s)
        if a:
            title += (f"  (mean |error| {100 * a['mean_abs_error']:.1f}%, max {100 * a['max_abs_error']:.1f}%; "
                      f"target {'met' if a['target_met'] else 'not met'})")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel(f"error = (simulated − published) / published, %   (shaded: the target, ±{band:.0f}%; faded bars are "
                      f"not judged; bars cut at ±{CUT:.0f}%)", fontsize=8)
    p = data.get("provenance", {})
    # Provenance in the bottom margin, clear of the first panel's title.
    fig.tight_layout(rect=(0, 0.025, 1, 1))
    fig.text(0.99, 0.005, f"twinbed validate — {p.get('git_revision', '?')}", fontsize=8, ha="right", va="bottom")
    save_png(fig, out_png)


def load(path):
    with open(path) as f:
        return json.load(f)


def main(argv):
    return plot_main(argv, __doc__, "plot_validate.py", Figure is not None, load, lambda d: d.get("rows"), "rows", draw)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
