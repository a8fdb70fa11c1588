#!/usr/bin/env python3
"""Pictures of ComboAVS runs and sweeps (Debian's python3-matplotlib).

    tools/plot_runs.py --out curves.png RUN_DIR [RUN_DIR ...]
    tools/plot_runs.py --sweep SWEEP_DIR [--out curves.png] [--bars results.png]

Curves (--out), from each run's metrics.jsonl: the total loss; every loss family (class CE, mask
BCE, dice, consistency) with the final prediction drawn thick and each deep-supervision layer
thin; the learning rate; validation mIoU and F when the run evaluated. Several runs are overlaid
with their folder names as labels.

Bars (--bars, with --sweep): the sweep's results.csv (combo-sweep --collect) as grouped bars of
the test metrics per run (mIoU and F; mIoU / mF for AVSS).
"""
import argparse
import csv
import json
import os
import re
import sys

FAMILIES = (("loss_ce", "class CE"), ("loss_mask", "mask BCE"), ("loss_dice", "dice"),
            ("loss_cosine", "consistency"))


def read_run(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"plot_runs.py: {path} does not exist")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                # A run killed while writing leaves a cut last line: keep what is readable.
                print(f"plot_runs.py: {path}:{n}: skipped, not JSON ({e})", file=sys.stderr)
    if not rows:
        raise SystemExit(f"plot_runs.py: {path} holds no record")
    return rows


def series(rows, key):
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and "iteration" in r:
            xs.append(r["iteration"] + 1)
            ys.append(v)
    return xs, ys


def family_keys(rows, prefix):
    """The final key (prefix) and the deep-supervision keys (prefix_N) present, in layer order."""
    pat = re.compile("^" + re.escape(prefix) + r"(?:_(\d+))?$")
    keys = {}
    for r in rows:
        for k in r:
            m = pat.match(k)
            if m:
                keys[k] = -1 if m.group(1) is None else int(m.group(1))
    return sorted(keys, key=lambda k: (keys[k] == -1, keys[k]))


def save(fig, out):
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)
    print(f"wrote {out}")


def plot_curves(plt, runs, out):
    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    ax_total, ax_lr, ax_miou, ax_f = axes[0][0], axes[1][1], axes[1][2], axes[1][3]
    fam_axes = [axes[0][1], axes[0][2], axes[0][3], axes[1][0]]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        rows = read_run(run)
        name = os.path.basename(os.path.normpath(run))
        color = colors[i % len(colors)]
        x, y = series(rows, "total_loss")
        ax_total.plot(x, y, color=color, label=name)
        for ax, (prefix, _) in zip(fam_axes, FAMILIES):
            for k in family_keys(rows, prefix):
                x, y = series(rows, k)
                final = k == prefix
                ax.plot(x, y, color=color, linewidth=2.0 if final else 0.7,
                        alpha=1.0 if final else 0.45, label=f"{name}" if final else None)
        x, y = series(rows, "lr")
        ax_lr.plot(x, y, color=color, label=name)
        for ax, key in ((ax_miou, "mIoU"), (ax_f, "F")):
            x, y = series(rows, key)
            if not x and key == "F":
                x, y = series(rows, "mF")
            if x:
                ax.plot(x, y, "o-", color=color, label=name)
    ax_total.set_title("total loss (weighted sum)")
    for ax, (_, title) in zip(fam_axes, FAMILIES):
        ax.set_title(f"{title} (thick: final, thin: deep supervision)")
    ax_lr.set_title("learning rate")
    ax_miou.set_title("validation mIoU")
    ax_f.set_title("validation F")
    for ax in (ax_miou, ax_f):
        ax.set_ylim(0, 1)
    for ax in [ax_total] + fam_axes:
        if ax.get_lines() and all(min(l.get_ydata(), default=1) > 0 for l in ax.get_lines()):
            ax.set_yscale("log")
    for row in axes:
        for ax in row:
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, out)


def read_results(sweep):
    path = os.path.join(sweep, "results.csv")
    if not os.path.exists(path):
        raise SystemExit(f"plot_runs.py: {path} does not exist (run combo-sweep --collect {sweep})")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_bars(plt, sweep, out):
    rows = read_results(sweep)
    metrics = [m for m in ("mIoU", "F", "mF") if any(r.get(m) for r in rows)]
    if not metrics:
        raise SystemExit(f"plot_runs.py: {sweep}/results.csv has no mIoU/F column with a value")
    names = [r["run"] for r in rows]
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 4.5))
    for i, m in enumerate(metrics):
        vals = [float(r[m]) if r.get(m) else 0.0 for r in rows]
        xs = [j + (i - (len(metrics) - 1) / 2) * width for j in range(len(rows))]
        bars = ax.bar(xs, vals, width, label=m)
        for b, r in zip(bars, rows):
            txt = f"{float(r[m]):.3f}" if r.get(m) else r.get("state", "")
            ax.annotate(txt, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=7)
    split = next((r.get("split") for r in rows if r.get("split")), "")
    protocol = next((r.get("protocol") for r in rows if r.get("protocol")), "")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{os.path.basename(os.path.normpath(sweep))}: {split} split"
                 + (f", protocol {protocol}" if protocol else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save(fig, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run folders (output_dir of combo-train)")
    ap.add_argument("--out", help="curves PNG to write (default with --sweep: SWEEP/curves.png)")
    ap.add_argument("--sweep", help="a combo-sweep folder: its runs' curves and a results bar chart")
    ap.add_argument("--bars", help="bar chart PNG (default: SWEEP/results.png)")
    args = ap.parse_args()
    runs = list(args.runs)
    if args.sweep:
        for name in sorted(os.listdir(args.sweep)):
            d = os.path.join(args.sweep, name)
            if os.path.exists(os.path.join(d, "metrics.jsonl")):
                runs.append(d)
        args.out = args.out or os.path.join(args.sweep, "curves.png")
        args.bars = args.bars or os.path.join(args.sweep, "results.png")
    if not runs and not args.sweep:
        ap.error("give run folders or --sweep")
    if runs and not args.out:
        ap.error("--out is required with run folders")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if runs:
        plot_curves(plt, runs, args.out)
    if args.sweep:
        plot_bars(plt, args.sweep, args.bars)
    return 0


if __name__ == "__main__":
    sys.exit(main())
