#!/usr/bin/env python3
"""Plots from twinbed results (run with /usr/bin/python3; needs matplotlib, drawn with the Agg backend).

  plot_results.py RESULTS_DIR [--out DIR] [--max-ranks N]
      RESULTS_DIR is what `twinbed run` writes (config.json, sim.json, trace.json). Draws
        breakdown.png  step-time breakdown: time per rank by op kind, and the step split into
                       compute / exposed communication / bubble
        timeline.png   pipeline timeline: compute spans per rank (one rank per pipeline stage, the
                       first tensor- and data-parallel rank), forward / recompute / backward coloured,
                       communication spans as thin bars under each rank
  plot_results.py --sweep SWEEP_CSV [--x COLUMN] [--y COLUMN] [--out FILE]
      a `twinbed sweep` table: y (default tflops_per_gpu) against x (default the first swept column),
      one line per combination of the other swept columns; impossible points are left out.
"""
import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the CLI test skips on this exit code
    print("plot_results.py: matplotlib is not installed (Debian: apt-get install python3-matplotlib)", file=sys.stderr)
    sys.exit(77)

STREAMS = 3  # tid = rank * 3 + stream (compute 0, collective 1, p2p 2), as twinbed writes trace.json
PHASE_COLOURS = {"forward": "#4C72B0", "recompute": "#DD8452", "backward": "#55A868", "optimizer": "#8172B3",
                 "communication": "#C44E52", "other": "#937860"}
SUMMARY_COLUMNS = ["status", "step_time_s", "tokens_per_s", "tflops_per_gpu", "mfu_pct", "compute_pct",
                   "exposed_comm_pct", "bubble_pct", "peak_memory_GiB", "memory_fits", "wall_s", "error"]


def phase_of(name, cat):
    """Forward / recompute / backward from the op name's suffix (twinbed's names: *_fwd, *_recompute,
    *_dgrad*, *_wgrad, *_bwd), communication from the span kind."""
    if cat in ("collective", "sendrecv"):
        return "communication"
    if cat == "optimizer" or "optimizer" in name:
        return "optimizer"
    if "recompute" in name:
        return "recompute"
    if "fwd" in name:
        return "forward"
    if "grad" in name or "bwd" in name:
        return "backward"
    return "other"


def plot_breakdown(results, out):
    kinds = results["op_kinds"]
    s = results["summary"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    names = [k["kind"] for k in kinds]
    per_rank_ms = [k["per_rank_s"] * 1e3 for k in kinds]
    bars = ax1.bar(names, per_rank_ms, color="#4C72B0")
    for b, k in zip(bars, kinds):
        ax1.annotate(f"{100 * k['share']:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                     va="bottom", fontsize=8)
    ax1.set_ylabel("time per rank per iteration (ms)")
    ax1.set_title(f"op kinds (step {s['step_time_s'] * 1e3:.2f} ms; streams overlap, so bars may sum past it)")
    ax1.tick_params(axis="x", rotation=30)
    parts = [("compute", s["compute_pct"], "#4C72B0"), ("exposed comm", s["exposed_comm_pct"], "#C44E52"),
             ("bubble", s["bubble_pct"], "#BBBBBB")]
    bottom = 0.0
    for label, pct, colour in parts:
        ax2.bar(["step"], [pct], bottom=bottom, color=colour, label=f"{label} {pct:.1f}%")
        bottom += pct
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("% of step time (mean over ranks)")
    ax2.legend(fontsize=8, loc="lower center")
    ax2.set_title(f"MFU {s['mfu_pct']:.1f}%")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def pipeline_ranks(config, present, max_ranks):
    """One rank per pipeline stage (the first tp, cp and dp rank: Megatron order, tp fastest, then cp,
    dp, pp), if the trace has them; otherwise the first ranks it has."""
    layout = (config or {}).get("layout", {})
    tp, cp, dp, pp = layout.get("tp", 1), layout.get("cp", 1), layout.get("dp", 1), layout.get("pp", 1)
    wanted = [stage * tp * cp * dp for stage in range(pp)]
    chosen = [r for r in wanted if r in present]
    if len(chosen) < min(len(wanted), len(present)):
        chosen = sorted(present)
    return chosen[:max_ranks]


def merge_runs(spans, gap):
    """Joins consecutive spans of one colour separated by less than `gap`: fewer rectangles to draw."""
    merged = []
    for start, dur, phase in sorted(spans):
        if merged and merged[-1][2] == phase and start - (merged[-1][0] + merged[-1][1]) <= gap:
            merged[-1][1] = max(merged[-1][1], start + dur - merged[-1][0])
        else:
            merged.append([start, dur, phase])
    return merged


def plot_timeline(trace, config, out, max_ranks):
    compute = defaultdict(list)
    comm = defaultdict(list)
    pid0 = None
    end = 0.0
    for e in trace["traceEvents"]:
        if e.get("ph") != "X":
            continue
        if pid0 is None:
            pid0 = e["pid"]
        if e["pid"] != pid0:  # the first backend only
            continue
        rank = e["tid"] // STREAMS
        phase = phase_of(e["name"], e.get("cat", ""))
        target = comm if phase == "communication" else compute
        target[rank].append((e["ts"], e["dur"], phase))
        end = max(end, e["ts"] + e["dur"])
    ranks = pipeline_ranks(config, set(compute) | set(comm), max_ranks)
    if not ranks:
        raise SystemExit("plot_results.py: trace.json has no spans")
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(ranks) + 1.5))
    gap = end * 1e-4
    used = set()
    for row, rank in enumerate(ranks):
        for phase in PHASE_COLOURS:
            segs = [(s, d) for s, d, p in merge_runs(compute[rank], gap) if p == phase]
            if segs:
                ax.broken_barh(segs, (row + 0.25, 0.6), facecolors=PHASE_COLOURS[phase])
                used.add(phase)
        segs = [(s, d) for s, d, _ in merge_runs(comm[rank], gap)]
        if segs:
            ax.broken_barh(segs, (row + 0.05, 0.15), facecolors=PHASE_COLOURS["communication"])
            used.add("communication")
    ax.set_yticks([r + 0.5 for r in range(len(ranks))])
    ax.set_yticklabels([f"rank {r}" for r in ranks])
    ax.invert_yaxis()
    ax.set_xlabel("time (us)")
    ax.set_xlim(0, end)
    ax.set_title("pipeline timeline (one rank per stage)")
    handles = [matplotlib.patches.Patch(color=PHASE_COLOURS[p], label=p) for p in PHASE_COLOURS if p in used]
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25 / max(1, len(ranks) ** 0.5)),
              ncol=len(handles), frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_results_folder(folder, out_dir, max_ranks):
    folder = Path(folder)
    out_dir = Path(out_dir or folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file = next((folder / n for n in ("sim.json", "real.json") if (folder / n).is_file()), None)
    if results_file is None:
        raise SystemExit(f"plot_results.py: no sim.json or real.json in {folder}")
    results = json.loads(results_file.read_text())
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else results.get("provenance", {}).get("config")
    written = [out_dir / "breakdown.png"]
    plot_breakdown(results, written[0])
    trace_file = folder / "trace.json"
    if trace_file.is_file():
        written.append(out_dir / "timeline.png")
        plot_timeline(json.loads(trace_file.read_text()), config, written[-1], max_ranks)
    return written


def plot_sweep(csv_file, x, y, out):
    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"plot_results.py: {csv_file} has no rows")
    swept = [c for c in rows[0].keys() if c not in ("point", "index") and c not in SUMMARY_COLUMNS]
    x = x or (swept[0] if swept else "index")
    y = y or "tflops_per_gpu"
    for col in (x, y):
        if col not in rows[0]:
            raise SystemExit(f"plot_results.py: no column '{col}' in {csv_file}; columns: {', '.join(rows[0].keys())}")
    others = [c for c in swept if c != x]
    lines = defaultdict(list)
    for r in rows:
        if r["status"] != "ok":
            continue
        lines[", ".join(f"{c.split('/')[-1]}={r[c]}" for c in others)].append((r[x], float(r[y])))

    def key(v):
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)

    xs = sorted({v for pts in lines.values() for v, _ in pts}, key=key)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, pts in sorted(lines.items()):
        pts.sort(key=lambda p: key(p[0]))
        ax.plot([xs.index(v) for v, _ in pts], [v for _, v in pts], marker="o", label=label or y)
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if len(lines) > 1 or others:
        ax.legend(fontsize=8)
    ax.set_title(f"{y} vs {x}")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [Path(out)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", help="a `twinbed run` results folder")
    ap.add_argument("--sweep", help="a `twinbed sweep` CSV table instead")
    ap.add_argument("--x", help="sweep: column on the x axis (default: the first swept column)")
    ap.add_argument("--y", help="sweep: column on the y axis (default: tflops_per_gpu)")
    ap.add_argument("--out", help="output folder (results) or PNG file (sweep); default beside the input")
    ap.add_argument("--max-ranks", type=int, default=32, help="timeline: at most this many ranks")
    a = ap.parse_args()
    if a.sweep:
        written = plot_sweep(a.sweep, a.x, a.y, a.out or str(Path(a.sweep).with_suffix(".png")))
    elif a.results:
        written = plot_results_folder(a.results, a.out, a.max_ranks)
    else:
        ap.error("give a results folder or --sweep FILE")
    for w in written:
        print(w)


if __name__ == "__main__":
    main()
