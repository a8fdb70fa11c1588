#!/usr/bin/env python3
"""Training curves of ComboAVS runs from their metrics.jsonl files (Debian's python3-matplotlib).

    tools/plot_runs.py --out curves.png RUN_DIR [RUN_DIR ...]

One figure with three panels: the total loss and the final-prediction losses (CE, mask BCE,
dice, summed consistency) per iteration, the learning rate, and the validation mIoU / F when the
run evaluated. Several runs are overlaid with their folder names as labels.
"""
import argparse
import json
import os
import sys


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
                raise SystemExit(f"plot_runs.py: {path}:{n}: not JSON ({e})")
    if not rows:
        raise SystemExit(f"plot_runs.py: {path} holds no record")
    return rows


def series(rows, key):
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(r["iteration"] + 1)
            ys.append(v)
    return xs, ys


def consistency(rows):
    xs, ys = [], []
    for r in rows:
        vals = [v for k, v in r.items() if k.startswith("loss_cosine") and isinstance(v, (int, float))]
        if vals:
            xs.append(r["iteration"] + 1)
            ys.append(sum(vals))
    return xs, ys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (output_dir of combo-train)")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for run in args.runs:
        rows = read_run(run)
        name = os.path.basename(os.path.normpath(run))
        ax = axes[0]
        for key, style in (("total_loss", "-"), ("loss_ce", ":"), ("loss_mask", "--"), ("loss_dice", "-.")):
            x, y = series(rows, key)
            if x:
                ax.plot(x, y, style, label=f"{name}: {key}")
        x, y = consistency(rows)
        if x:
            ax.plot(x, y, linestyle=(0, (1, 3)), label=f"{name}: loss_cosine (sum)")
        x, y = series(rows, "lr")
        axes[1].plot(x, y, label=name)
        for key in ("mIoU", "F"):
            x, y = series(rows, key)
            if x:
                axes[2].plot(x, y, "o-", label=f"{name}: val {key}")
    axes[0].set_title("training losses (weighted)")
    axes[0].set_yscale("log")
    axes[1].set_title("learning rate")
    axes[2].set_title("validation")
    axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = args.out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
