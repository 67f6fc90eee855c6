#!/usr/bin/python3
"""Plot the claims ledger: every figure's simulated value against the one its paper reported.

Usage:
  notebooks/plot_claims.py CLAIMS_JSON OUT_PNG        # e.g. results/claims/claims.json results/claims/claims.png

CLAIMS_JSON is what `twinbed claims` writes (format twinbed-claims-1); `twinbed claims` calls this script
itself to draw claims.png beside it. One row per figure, labelled "ID — what", on one log axis: each value
divided by the reported one, so rows in seconds, percent and × share it and 1 means "as reported".
  reported   a black tick at 1; a range as a grey bar (normalised to its geometric middle); a bound as a
             triangle pointing the way it allows (▶ at least, ◀ at most); a "before → after" claim also
             shows its baseline, joined to 1 by a dotted line
  simulated  a filled circle coloured by the verdict (measured, when there is one, a diamond)
  arithmetic a hollow circle: the check computed for a figure that is "not reproducible here" (whose
             row label is grey); only in the right-hand text when its unit is not the reported one
The right-hand column gives the reported text and the raw values. Values that are zero, negative or of
the other sign are pinned to the left edge.

Importable (the notebook notebooks/claims.ipynb uses it): load(path), figures(data), figure_size(n_rows),
plot_ledger(data, ax), draw(data, out_png), save_png(fig, out_png). Runs with Debian's /usr/bin/python3 (python3-matplotlib);
drawing to a file uses the Agg canvas and never picks an interactive backend.
"""
import json
import math
import os
import sys

try:
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter
    from matplotlib.transforms import offset_copy
except ImportError:  # main() exits 77 (the CLI tests' "skipped"); importing modules get the ImportError
    matplotlib = None

VERDICT_COLOURS = {"reproduced": "#55A868", "not reproduced": "#C44E52", "not reproducible here": "#8C8C8C"}
OTHER_COLOUR = "#4C72B0"  # a verdict this script does not know
MAX_LABEL = 48  # characters of "ID — what" before it is cut with "…"


def load(path):
    """The ledger as written by `twinbed claims` (a dict with "claims", "format", "provenance")."""
    with open(path) as f:
        data = json.load(f)
    if data.get("format") != "twinbed-claims-1":
        raise ValueError(f"{path}: format is {data.get('format')!r}, expected 'twinbed-claims-1'")
    return data


def figures(data):
    """Every figure of every claim, in ledger order, as (claim, figure) pairs."""
    return [(c, f) for c in data.get("claims", []) for f in c.get("figures", [])]


def figure_size(n_rows):
    """(width, height) in inches for a ledger plot of n_rows figures: readable with 1 row and with 60."""
    return 12.0, 2.6 + 0.3 * max(1, n_rows)


def _number(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _fmt(x, unit):
    return f"{x:.3g} {unit}".strip()


def reference(reported):
    """The reported value each row is divided by: the value; a range's geometric middle (arithmetic when
    it is not positive); a bound's bound. None when the report has no usable number."""
    value, lo, hi = (_number(reported.get(k)) for k in ("value", "min", "max"))
    if value is not None:
        return value if value != 0 else None
    if lo is not None and hi is not None:
        ref = math.sqrt(lo * hi) if lo > 0 and hi > 0 else (lo + hi) / 2
        return ref if ref != 0 else None
    bound = lo if lo is not None else hi
    return bound if bound else None


def _ratio(x, ref):
    """x / ref, or None when x is missing; ratios that a log axis cannot show are returned as 0."""
    if x is None or ref is None:
        return None
    r = x / ref
    return r if r > 0 else 0.0


def _label(claim, fig):
    text = f"{claim.get('id', '?')} — {fig.get('what', '')}"
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _unit(fig, key):
    """The unit of fig[key]: the reported one, but an arithmetic check's own (it need not be the reported
    quantity)."""
    reported = fig.get("reported", {}).get("unit", "")
    return fig.get("arithmetic_unit", reported) if key == "arithmetic" else reported


def _right_text(fig):
    parts = [f"reported {fig.get('reported', {}).get('text', '?')}"]
    for key in ("simulated", "measured", "arithmetic"):
        v = _number(fig.get(key))
        if v is not None:
            parts.append(f"{ {'simulated': 'sim', 'measured': 'meas', 'arithmetic': 'check'}[key]} {_fmt(v, _unit(fig, key))}")
    return "; ".join(parts)


def plot_ledger(data, ax):
    """Draws the ledger on ax (one row per figure, top to bottom in ledger order; a twin axis on the right
    carries the raw values) and returns the rows as (claim, figure) pairs."""
    rows = figures(data)
    if not rows:
        ax.text(0.5, 0.5, "the ledger has no figures", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return rows
    ys = list(range(len(rows)))
    used = set()  # legend entries drawn at least once
    pinned = []  # (row, marker style) of values whose ratio a log axis cannot show: drawn at the left edge
    ratios = [1.0]
    for y, (claim, fig) in zip(ys, rows):
        rep = fig.get("reported", {})
        ref = reference(rep)
        if ref is None:
            continue  # nothing to divide by: the right-hand text still says what there is
        colour = VERDICT_COLOURS.get(fig.get("verdict"), OTHER_COLOUR)
        value, lo, hi, base = (_number(rep.get(k)) for k in ("value", "min", "max", "baseline"))
        # Reported: a tick at 1 (over a grey bar for a range), or a triangle for a one-sided bound.
        if lo is not None and hi is not None and lo / ref > 0 and hi / ref > 0:
            ax.plot([lo / ref, hi / ref], [y, y], color="#BBBBBB", linewidth=7, solid_capstyle="butt", zorder=1)
            ratios += [lo / ref, hi / ref]
            used.add("range")
        if value is not None or (lo is not None and hi is not None):
            ax.plot([1.0], [y], marker="|", markersize=14, markeredgewidth=2, color="black", zorder=2)
            used.add("reported")
        else:
            ax.plot([1.0], [y], marker=">" if lo is not None else "<", markersize=8, color="black", zorder=2)
            used.add("bound")
        b = _ratio(base, ref)
        if b:  # "before → after": the baseline, joined to the reported value
            ax.plot([b, 1.0], [y, y], color="#999999", linestyle=":", linewidth=1.2, zorder=1)
            ax.plot([b], [y], marker="|", markersize=9, markeredgewidth=1.5, color="#999999", zorder=1)
            ratios.append(b)
            used.add("baseline")
        # What twinbed found: simulated (filled circle), measured (diamond), arithmetic check (hollow).
        for key, marker, filled in (("arithmetic", "o", False), ("simulated", "o", True), ("measured", "D", True)):
            if _unit(fig, key) != rep.get("unit", ""):
                continue  # a check in another unit has no place on the reported value's scale (the text has it)
            r = _ratio(_number(fig.get(key)), ref)
            if r is None:
                continue
            style = dict(marker=marker, markersize=8 if marker == "o" else 7, linestyle="none", zorder=3,
                         markeredgecolor=colour, markeredgewidth=1.8, markerfacecolor=colour if filled else "white")
            used.add(key)
            if r == 0.0:
                pinned.append((y, style))
            else:
                ax.plot([r], [y], **style)
                ratios.append(r)

    # x limits: every ratio, at least a decade, with a margin.
    lo_d, hi_d = math.log10(min(ratios)), math.log10(max(ratios))
    half = max(hi_d - lo_d, 1.0) / 2 * 1.3
    left, right = 10 ** ((lo_d + hi_d) / 2 - half), 10 ** ((lo_d + hi_d) / 2 + half)
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    for y, style in pinned:
        ax.plot([left], [y], **{**style, "marker": "<"}, clip_on=False)
        ax.annotate("≤ 0", (left, y), xytext=(8, 0), textcoords="offset points", va="center", fontsize=7,
                    color=style["markeredgecolor"])
    ax.axvline(1.0, color="#777777", linewidth=0.8, linestyle="--", zorder=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(axis="x", which="major", alpha=0.4)
    ax.set_xlabel("value ÷ reported value (log scale; 1 = as reported)")

    # Every other claim shaded, so the rows of one claim read as a group.
    group = -1
    for y, (claim, _) in enumerate(rows):
        group += y == 0 or claim is not rows[y - 1][0]
        if group % 2:
            ax.axhspan(y - 0.5, y + 0.5, color="#F0F0F0", linewidth=0, zorder=0)
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(c, f) for c, f in rows], fontsize=9)
    for tick, (_, f) in zip(ax.get_yticklabels(), rows):  # greyed: no simulation means anything there
        if f.get("verdict") == "not reproducible here":
            tick.set_color("#777777")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    right_axis = ax.twinx()
    right_axis.set_ylim(ax.get_ylim())
    right_axis.set_yticks(ys)
    right_axis.set_yticklabels([_right_text(f) for _, f in rows], fontsize=8)
    right_axis.tick_params(axis="y", length=0)

    counts = {v: sum(1 for _, f in rows if f.get("verdict") == v) for v in VERDICT_COLOURS}
    n_claims = len({id(c) for c, _ in rows})
    ax.set_title(f"claims ledger: {len(rows)} figure{'s' * (len(rows) != 1)} from {n_claims} claim{'s' * (n_claims != 1)}"
                 " — " + ", ".join(f"{n} {v}" for v, n in counts.items()), fontsize=10)
    grey = "#555555"
    entries = {
        "reported": Line2D([], [], marker="|", markersize=12, markeredgewidth=2, color="black", linestyle="none",
                           label="reported"),
        "range": Line2D([], [], color="#BBBBBB", linewidth=6, label="reported range"),
        "bound": Line2D([], [], marker=">", color="black", linestyle="none", label="reported bound (▶ at least, ◀ at most)"),
        "baseline": Line2D([], [], marker="|", color="#999999", linestyle=":", label="reported baseline (before)"),
        "simulated": Line2D([], [], marker="o", color=grey, linestyle="none", label="simulated"),
        "measured": Line2D([], [], marker="D", color=grey, linestyle="none", label="measured"),
        "arithmetic": Line2D([], [], marker="o", color=grey, markerfacecolor="white", linestyle="none",
                             label="arithmetic check"),
    }
    handles = [Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items() if counts[v]]
    handles += [h for k, h in entries.items() if k in used]
    below_xlabel = offset_copy(ax.transAxes, fig=ax.figure, y=-34, units="points")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below_xlabel,
              ncol=min(len(handles), 5), fontsize=8, frameon=False)
    return rows


def save_png(fig, out_png):
    """Writes fig to out_png (PNG through the Agg canvas, no pyplot), atomically: into a temporary file
    beside it (".NAME.tmp-PID", the name twinbed's own atomic writes use, so a results folder's lock
    clears one a killed run left), renamed over out_png once complete. A failure leaves no half-written
    file, and out_png as it was. The plot scripts of twinbed's commands share it."""
    folder, name = os.path.split(os.path.abspath(out_png))
    temp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        fig.savefig(temp, dpi=110, format="png")
        os.replace(temp, out_png)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def plot_main(argv, usage, script, have_matplotlib, load_json, has_content, what, draw_fn):
    """The command line every plot script of twinbed's commands shares: `script IN.json OUT.png`.
    Exit 2 with the usage on wrong arguments, 77 (the CLI tests' "skipped") without matplotlib, 1 when
    the JSON holds nothing to plot (has_content false; `what` names it), else draws and says so."""
    if len(argv) != 3:
        print(usage, file=sys.stderr)
        return 2
    if not have_matplotlib:
        print(f"{script}: matplotlib is not installed (Debian: apt-get install python3-matplotlib)", file=sys.stderr)
        return 77
    data = load_json(argv[1])
    if not has_content(data):
        print(f"{script}: {argv[1]} has no {what} to plot", file=sys.stderr)
        return 1
    draw_fn(data, argv[2])
    print(f"wrote {argv[2]}")
    return 0


def draw(data, out_png):
    """Writes the ledger plot of data to out_png (save_png)."""
    n = len(figures(data))
    fig = Figure(figsize=figure_size(n))
    ax = fig.subplots()
    plot_ledger(data, ax)
    fig.tight_layout()
    save_png(fig, out_png)


def main(argv):
    return plot_main(argv, __doc__, "plot_claims.py", matplotlib is not None, load, figures, "figures", draw)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
