#!/usr/bin/python3
"""Plot the loss curves of a `twinbed train` run: every variant against its reference.

Usage:
  notebooks/plot_train.py TRAIN_JSON OUT_PNG        # e.g. results/train-fortunes/train.json results/train-fortunes/train.png

TRAIN_JSON is what `twinbed train` writes (format twinbed-train-1); the command calls this script itself
to draw train.png beside it. Two panels share the loss axis: held-out loss by step (left) and by training
wall time (right, evaluations excluded), markers at the evaluations, the training loss as a faint line
behind. The reference (the first technique-free variant of each start) is black, its other seeds grey —
the band a technique's curve is read against — and each technique variant has a colour of its own.
Variants that start from another's weights (fine-tunes) are dashed. A dotted line marks the byte-unigram entropy of the training text: a model that learnt only
byte frequencies sits there.

Runs with Debian's /usr/bin/python3 (python3-matplotlib); draws through the Agg canvas (no pyplot) and
writes atomically (plot_claims.save_png).
"""
import json
import sys

from plot_claims import plot_main, save_png  # beside this script: what twinbed's plot scripts share

try:
    import matplotlib
    from matplotlib.figure import Figure
except ImportError:  # main() exits 77: the CLI notes that there is no plot
    matplotlib = None


def load(path):
    with open(path) as f:
        data = json.load(f)
    if data.get("format") != "twinbed-train-1":
        raise ValueError(f"{path}: format is {data.get('format')!r}, expected 'twinbed-train-1'")
    return data


def starts_elsewhere(data, name):
    """True for a variant that starts from another's weights (its config entry has "from" or "checkpoint")."""
    for v in data.get("provenance", {}).get("config", {}).get("variants", []):
        if v.get("name") == name:
            return "from" in v or "checkpoint" in v
    return False


def start_of(data, name):
    """Where a variant's weights start: "" from scratch, else its "from" or "checkpoint"."""
    for v in data.get("provenance", {}).get("config", {}).get("variants", []):
        if v.get("name") == name:
            return v.get("from") or v.get("checkpoint") or ""
    return ""


def plot_curves(data, ax_steps, ax_time):
    """Technique-free variants are the references: the first of each start (from scratch, or from one
    variant's weights) in black, the others (its other seeds) in grey, the band a technique is read
    against; every technique variant in a colour of its own."""
    colours = [c for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] if c not in ("#7f7f7f",)]
    references = {}  # start -> the first technique-free variant's name
    technique = 0
    grey_labelled = False
    for v in data["variants"]:
        fine_tune = starts_elsewhere(data, v["name"])
        style = "--" if fine_tune else "-"
        start = start_of(data, v["name"])
        label = v["name"]
        if not v.get("techniques"):
            if start not in references:
                references[start] = v["name"]
                colour, width = "black", 1.6
            else:
                colour, width = "#9a9a9a", 1.0
                label = None if grey_labelled else "other seeds of the reference"
                grey_labelled = True
        else:
            colour, width = colours[technique % len(colours)], 1.4
            technique += 1
        steps = v["steps"]
        evals = [s for s in steps if s["held_out_loss"] is not None]
        ax_steps.plot([s["step"] for s in steps], [s["train_loss"] for s in steps], color=colour, alpha=0.12, lw=0.8)
        ax_steps.plot([s["step"] for s in evals], [s["held_out_loss"] for s in evals], style, marker="o", ms=3,
                      color=colour, lw=width, label=label)
        ax_time.plot([s["elapsed_s"] for s in evals], [s["held_out_loss"] for s in evals], style, marker="o", ms=3,
                     color=colour, lw=width)
    entropy = data["variants"][0].get("unigram_entropy_nats") if data["variants"] else None
    for ax in (ax_steps, ax_time):
        if entropy:
            ax.axhline(entropy, color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3)
    if entropy:
        ax_steps.annotate("byte-unigram entropy", (0, entropy), xycoords=("axes fraction", "data"), xytext=(4, 3),
                          textcoords="offset points", fontsize=7, color="grey")
    ax_steps.set_xlabel("step")
    ax_steps.set_ylabel("loss (nats per byte): held-out ●, training faint")
    ax_time.set_xlabel("training wall time (s, the slowest rank's)")
    ax_steps.legend(fontsize=8, frameon=False)
    # Early steps sit far above the rest: show the range the held-out curves end in.
    finals = [s["held_out_loss"] for v in data["variants"] for s in v["steps"] if s["held_out_loss"] is not None]
    if finals:
        top = max(finals)
        low = min(finals)
        ax_steps.set_ylim(low - 0.05 * (top - low + 0.1), top + 0.05 * (top - low + 0.1))


def draw(data, out_png):
    fig = Figure(figsize=(12, 4.8))
    ax_steps, ax_time = fig.subplots(1, 2, sharey=True)
    plot_curves(data, ax_steps, ax_time)
    cfg = data.get("provenance", {}).get("config", {})
    model = cfg.get("model", {})
    fig.suptitle(f"{cfg.get('name', '')}: GPT {model.get('layers')} layers, hidden {model.get('hidden')}, "
                 f"seq {model.get('seq_len')}; {cfg.get('ranks')} CPU ranks", fontsize=10)
    fig.tight_layout()
    save_png(fig, out_png)


def main(argv):
    return plot_main(argv, __doc__, "plot_train.py", matplotlib is not None, load, lambda d: d.get("variants"), "variants",
                     draw)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
