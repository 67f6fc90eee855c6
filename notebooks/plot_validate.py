#!/usr/bin/python3
"""Plot `twinbed validate`'s results. Collectives: one panel per data file (a machine's nccl-tests
sweep), or per data file and communicator (op and GPU count) where a file holds several, published and
simulated bus bandwidth against size (against the GPU count where a file's rows share one size and differ
in ranks), the simulated points coloured by the algorithm NCCL's model picked
and the target band (published ±10 %) shaded, so that where a sweep
leaves the band, and under which algorithm, shows at a glance. Training: the simulator's signed error
on every run, one bar per row (simulated vs published, in %), with the target band shaded and each bar
labelled with the published and simulated figures; beside them, where each simulated step goes
(compute, exposed communication, pipeline bubble: validate.json's step_breakdown).

Usage:  notebooks/plot_validate.py results/validate/validate.json OUT.png
`twinbed validate` runs it (unless --no-plot). Runs with Debian's /usr/bin/python3 (python3-matplotlib).
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_claims import plot_main, save_png  # noqa: E402  (what every plot script shares)

try:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
except ImportError:  # main() exits 77 (the CLI tests' "skipped")
    Figure = None

# The per-row bound (collectives: every size; training: the max); training's mean bound is 5 %.
BAND = {"collectives": 10.0, "training": 10.0}
UNITS = {"busbw_GBps": "GB/s", "time_us": "us", "tflops_per_gpu": "TFLOP/s", "mfu": "MFU", "tokens_per_gpu": "tokens/s"}
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
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # below the x label


# Sweep panels: a grid SWEEP_COLUMNS wide; the simulated points' colour by NCCL algorithm.
SWEEP_COLUMNS = 3
SWEEP_PANEL_HEIGHT = 2.9
ALGO_COLORS = {"ring": "#3c78d8", "tree": "#6aa84f", "nvls": "#e69138", "nvlstree": "#a64d79", "pat": "#45818e"}


def algorithm(row):
    """The algorithm NCCL's model picked for a collective row: detail reads "nvls/Simple" or
    "ring/Simple (forced Ring)"."""
    return row["detail"].split("/", 1)[0]


def label_parts(row):
    """A collective row's label, "<op> <ranks> ranks <size> <setting>[, NCCL 2.x ...]": (op, ranks, the
    setting, "NCCL's choice" or "NCCL_ALGO=<algo>", without the release the row names)."""
    op, ranks, _, _, rest = row["label"].split(" ", 4)
    return op, int(ranks), rest.split(", NCCL 2.", 1)[0]


def series_key(row):
    """Rows of one sweep: the same source, op, ranks, algorithm setting and metric."""
    op, ranks, setting = label_parts(row)
    return (row["source"], op, ranks, setting, row["metric"])


def sweep_panels(rows):
    """[(title, [(series key, rows by size)])]: a panel per data file, in the files' order, or per data file
    and communicator (op and GPUs) where a file holds several, so that no panel mixes them; a file whose
    rows share one size across GPU counts stays one panel (drawn over the GPU count)."""
    files = {}
    for r in rows:
        files.setdefault(r["file"], []).append(r)
    panels = []
    for file, mine in files.items():
        name = os.path.splitext(os.path.basename(file))[0]
        groups = {}
        for r in mine:
            op, ranks, _ = label_parts(r)
            groups.setdefault((op, ranks), []).append(r)
        if len(groups) == 1 or over_gpu_counts(mine):
            groups = {None: mine}
        for group, rs in groups.items():
            series = {}
            for r in rs:
                series.setdefault(series_key(r), []).append(r)
            title = name if group is None else f"{name}: {group[0]}, {group[1]} GPUs"
            panels.append((title, [(k, sorted(v, key=lambda r: r["size_bytes"])) for k, v in series.items()]))
    return panels


def size_text(b):
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if b >= scale:
            return f"{b / scale:g}{unit}"
    return f"{b:g}"


def over_gpu_counts(rows):
    """Rows that share one size and differ in communicator size (the same server at 2 to 8 GPUs): drawn
    as one line per op and algorithm setting over the GPU count, instead of a point per sweep."""
    return len({r["size_bytes"] for r in rows}) == 1 and len({label_parts(r)[1] for r in rows}) >= 2


def draw_sweep(ax, title, series, band):
    rows = [r for _, rs in series for r in rs]
    by_ranks = over_gpu_counts(rows)
    if by_ranks:
        lines = {}
        for (source, op, _, setting, metric), rs in series:
            lines.setdefault((source, op, "", setting, metric), []).extend(rs)
        series = [(k, sorted(v, key=lambda r: label_parts(r)[1])) for k, v in lines.items()]
    x_of = (lambda r: label_parts(r)[1]) if by_ranks else (lambda r: r["size_bytes"])
    for (_, _, _, setting, _), rs in series:
        x = [x_of(r) for r in rs]
        published = [r["published"] for r in rs]
        # The target band around each judged published point (a vertical bar: a sweep's sizes are far apart).
        shown = [r for r in rs if r["judged"]]
        ax.errorbar([x_of(r) for r in shown], [r["published"] for r in shown],
                    yerr=[r["published"] * band / 100 for r in shown], fmt="none", ecolor="#b6d7a8", elinewidth=7, zorder=0)
        ax.plot(x, published, color="black", marker="o", ms=3.5, lw=1, zorder=3)
        ax.plot(x, [r["simulated"] for r in rs], color="#999999", lw=1, zorder=2)
        ax.scatter(x, [r["simulated"] for r in rs], c=[ALGO_COLORS.get(algorithm(r), "#cc4125") for r in rs], s=16,
                   marker="s", zorder=4)
        if setting != "NCCL's choice":  # a forced algorithm: say which
            ax.annotate(setting, (x[-1], published[-1]), fontsize=6, ha="right", va="bottom",
                        xytext=(-4, 4), textcoords="offset points")
    if by_ranks:
        ax.set_xlabel(f"GPUs ({size_text(series[0][1][0]['size_bytes'])} each)", fontsize=7)
    else:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(lambda v, _: size_text(v))
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", alpha=0.3)
    metric = series[0][0][4]
    ax.set_ylabel(UNITS.get(metric, metric) + (" busbw" if metric == "busbw_GBps" else ""), fontsize=7)
    judged = [abs(r["error"]) for r in rows if r["judged"]]
    if judged:
        title += f"\nmean |error| {100 * sum(judged) / len(judged):.1f}%, max {100 * max(judged):.1f}%"
    ax.set_title(title, fontsize=8, loc="left")


def draw_sweeps(sub, rows, aggregate, band):
    panels = sweep_panels(rows)
    cols = min(SWEEP_COLUMNS, len(panels))
    axes = sub.subplots(math.ceil(len(panels) / cols), cols, squeeze=False).flatten()
    for ax, (title, series) in zip(axes, panels):
        draw_sweep(ax, title, series, band)
    for ax in axes[len(panels):]:
        ax.axis("off")
    title = "collectives: published (circles) vs simulated (squares, by the algorithm NCCL's model picked) bus bandwidth"
    if aggregate:
        title += (f"\nmean |error| {100 * aggregate['mean_abs_error']:.1f}%, max {100 * aggregate['max_abs_error']:.1f}% "
                  f"over {aggregate['rows']} rows; target {'met' if aggregate['target_met'] else 'not met'} "
                  f"(green bars: published ±{band:.0f}% at the judged sizes, ≥ 1 MiB)")
    sub.suptitle(title, fontsize=10, x=0.01, ha="left")
    handles = [Line2D([], [], color="black", marker="o", ms=4, lw=1, label="published")]
    handles += [Line2D([], [], color=c, marker="s", ls="", label=f"simulated: {a}") for a, c in ALGO_COLORS.items()
                if any(algorithm(r) == a for r in rows)]
    # The legend in the grid's first empty cell, else beside the last panel's data.
    if len(panels) < len(axes):
        axes[len(panels)].legend(handles=handles, fontsize=8, loc="center", frameon=False)
    else:
        axes[-1].legend(handles=handles, fontsize=6, loc="best")


def row_label(r):
    """A row's id, with its GPU where the id does not name it, and whether it is judged."""
    device = r.get("device") or ""
    label = r["id"] + (f" [{device}]" if device and device not in r["id"] else "")
    return label + ("" if r["judged"] else " (<1 MiB)")


def draw_errors(sub, s, rows, aggregate, band):
    """One bar per row: the signed error, labelled with the published and simulated figures; beside
    the training rows, where each simulated step goes."""
    broken = all(r.get("step_breakdown") for r in rows)
    if broken:
        ax, side = sub.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3.2, 1]})
        draw_breakdown(side, rows)
    else:
        ax = sub.subplots()
    errors = [100 * r["error"] for r in rows]
    y = list(range(len(rows)))[::-1]
    ax.axvspan(-band, band, color="#d9ead3", zorder=0)
    colors = ["#6aa84f" if abs(e) <= band else "#cc4125" for e in errors]
    for yi, e, c, r in zip(y, errors, colors, rows):
        shown = max(-CUT, min(CUT, e))
        ax.barh(yi, shown, color=c, alpha=1.0 if r["judged"] else 0.4, height=0.6, zorder=2)
        unit = UNITS.get(r["metric"], r["metric"])
        text = f"  {figure_text(r['published'], r['metric'])} → {figure_text(r['simulated'], r['metric'])} {unit}"
        if shown != e:
            text += f" ({e:+.0f}%, bar cut)"
        ax.text(shown, yi, text if e >= 0 else text.strip() + "  ", va="center", ha="left" if e >= 0 else "right",
                fontsize=8, zorder=3)
    ax.set_yticks(y)
    ax.set_yticklabels([row_label(r) for r in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    lim = max([band * 1.5] + [abs(e) * 1.6 if abs(e) <= CUT else CUT * 1.9 for e in errors])  # room for labels
    ax.set_xlim(-lim, lim)
    title = f"{s}: simulated vs published"
    if aggregate:
        title += (f"  (mean |error| {100 * aggregate['mean_abs_error']:.1f}%, max {100 * aggregate['max_abs_error']:.1f}%; "
                  f"target {'met' if aggregate['target_met'] else 'not met'})")
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(f"error = (simulated − published) / published, %   (shaded: the target, ±{band:.0f}%; faded bars are "
                  f"not judged; bars cut at ±{CUT:.0f}%)", fontsize=8)


def draw(data, out_png):
    rows = data["rows"]
    sets = [s for s in ("collectives", "training") if any(r["set"] == s for r in rows)]
    aggregates = {a["set"]: a for a in data.get("aggregates", [])}
    sweeps = len(sweep_panels([r for r in rows if r["set"] == "collectives"]))
    heights = [SWEEP_PANEL_HEIGHT * math.ceil(sweeps / SWEEP_COLUMNS) + 0.8 if s == "collectives" else
               max(1.2, 0.42 * sum(r["set"] == s for r in rows) + 0.9) for s in sets]
    # Constrained layout keeps each set's titles, legends and panels clear of one another.
    fig = Figure(figsize=(12, sum(heights) + 0.4), layout="constrained")
    subs = fig.subfigures(len(sets), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, s in zip(subs, sets):
        mine = [r for r in rows if r["set"] == s]
        if s == "collectives":
            draw_sweeps(sub, mine, aggregates.get(s), BAND[s])
        else:
            draw_errors(sub, s, mine, aggregates.get(s), BAND[s])
    p = data.get("provenance", {})
    # Below the last subfigure's panels, bottom left (a subfigure's background would cover text drawn on
    # the figure; constrained layout keeps room for a supxlabel; the step breakdown's legend is right).
    subs[-1].supxlabel(f"twinbed validate — {p.get('git_revision', '?')}", fontsize=8, x=0.01, ha="left")
    save_png(fig, out_png)


def load(path):
    with open(path) as f:
        return json.load(f)


def main(argv):
    return plot_main(argv, __doc__, "plot_validate.py", Figure is not None, load, lambda d: d.get("rows"), "rows", draw)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
