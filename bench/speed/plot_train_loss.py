#!/usr/bin/env python
"""Plot the loss curves recorded by bench/speed/train_throughput.py (same effective batch per
update)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROWS = ("c_fairseq_transformer", "b_largest_subnet_fixed", "best_largest_fp16_mt32k",
        "best_largest_bf16_mt32k")


def main(path: str = "bench/results/train_throughput.json",
         out: str = "bench/results/train_loss_curves.png") -> None:
    data = json.loads(Path(path).read_text())
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in data["rows"]:
        if row["name"] in ROWS and row["loss_curve"]:
            xs, ys = zip(*row["loss_curve"])
            label = f"{row['name']} ({row['dtype']}, {row['max_tokens']}x{row['update_freq']})"
            ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_xlabel("update")
    ax.set_ylabel("train loss (base 2)")
    ax.set_title(f"Same effective batch, {data['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
