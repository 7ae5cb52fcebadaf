"""Every figure the package draws, with matplotlib's file-only Agg backend: the training curves
and confusion matrix of a run directory, `inception eval`'s confusion matrix and `inception
summary --plot`'s per-row cost of Table 1."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from inception.cost import CostReport
    from inception.metrics import EvalResult

# A confusion matrix gets its counts and class names written in up to this many classes.
ANNOTATED_CLASSES = 30


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(run_dir: Path, rows: list[dict[str, Any]], split: str, result: EvalResult
                ) -> list[Path]:
    """A run directory's `curves.png` (train loss, and loss, top-1 and top-5 per epoch on the
    `split` evaluated every epoch: `metrics.csv`'s SPLIT_loss, SPLIT_top1, SPLIT_top5 columns)
    and `confusion.png` (the confusion matrix of `result`, titled with its split)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax1.plot(epochs, [r[f"{split}_loss"] for r in rows], "o-", label=split)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [r[f"{split}_top1"] for r in rows], "o-", label="top-1")
    ax2.plot(epochs, [r[f"{split}_top5"] for r in rows], "o-", label="top-5")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"{split} accuracy (%)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    curves = run_dir / "curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    cm = plot_confusion(run_dir / "confusion.png", result.confusion, list(result.classes),
                        f"confusion matrix ({result.split})")
    return [curves, cm]


def plot_confusion(path: Path, confusion: torch.Tensor, classes: list[str], title: str,
                   columns: list[str] | None = None) -> Path:
    """The confusion matrix (rows: true class, columns: predicted, `columns` or `classes`) as a
    PNG, with the counts and class names written in up to `ANNOTATED_CLASSES` classes (beyond
    that, ImageNet's 1000, the colours alone)."""
    plt = _pyplot()
    columns = columns or classes
    rows, cols = len(classes), len(columns)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * min(cols, ANNOTATED_CLASSES),
                                    0.8 + 0.6 * min(rows, ANNOTATED_CLASSES)))
    ax.imshow(confusion.numpy(), cmap="Blues")
    if max(rows, cols) <= ANNOTATED_CLASSES:
        for i in range(rows):
            for j in range(cols):
                value = int(confusion[i, j])
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > confusion.max() / 2 else "black")
        ax.set_xticks(range(cols), columns, rotation=45, ha="right")
        ax.set_yticks(range(rows), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cost(report: CostReport, path: str) -> None:
    """A PNG of per-row params and multiply-adds, computed beside the paper's, flags in red."""
    plt = _pyplot()
    rows = [r for r in report.rows if r.weights or r.ops]
    names = [r.name for r in rows]
    xs = range(len(rows))
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    panels = [("params (K = 1024 weights)", "weights", "paper_params", 1024),
              ("multiply-adds (M)", "ops", "paper_ops", 1e6)]
    for ax, (label, ours, paper, unit) in zip(axes, panels, strict=True):
        ax.bar(xs, [getattr(r, ours) / unit for r in rows], color="tab:blue", label="computed")
        for x, r in zip(xs, rows, strict=True):
            value = getattr(r, paper)
            if value is not None:
                bad = r.params_mismatch if ours == "weights" else r.ops_mismatch
                ax.plot(x, value / unit, marker="_", markersize=18, mew=3,
                        color="tab:red" if bad else "black")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].plot([], [], marker="_", color="black", ls="", mew=3, label="paper, Table 1")
    axes[0].plot([], [], marker="_", color="tab:red", ls="", mew=3,
                 label="paper, disagrees with its filter counts")
    axes[0].legend(loc="upper left")
    axes[1].set_xticks(list(xs), names)
    cfg = report.config
    fig.suptitle(f"GoogLeNet cost per Table 1 row: {report.total_params / 1e6:.2f}M params, "
                 f"{report.total_ops / 1e9:.2f}G multiply-adds "
                 f"({cfg.image_size}px, width {cfg.width}, {cfg.stem} stem)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_experiment(path: Path, title: str, columns: dict[str, dict[str, dict[int, float]]],
                    curves: dict[str, dict[int, list[float]]] | None = None,
                    curve_label: str = "") -> Path:
    """An experiment's figure: for each measured column, every arm's per-seed values (dots)
    with their mean and standard deviation (bar); with `curves`, a last panel of each arm's
    per-epoch curve, one thin line per seed and the mean over seeds thick."""
    import statistics

    plt = _pyplot()
    panels = len(columns) + (1 if curves else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, arms) in zip(axes[0], columns.items(), strict=False):
        for i, seeds in enumerate(arms.values()):
            values = [seeds[s] for s in sorted(seeds)]
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.errorbar([i], [mean], yerr=[std], fmt="_", markersize=28, capsize=8,
                        color=colors[i % len(colors)])
            ax.plot([i] * len(values), values, "o", alpha=0.6, color=colors[i % len(colors)])
        ax.set_xticks(range(len(arms)), list(arms), rotation=10)
        ax.set_xlim(-0.6, len(arms) - 0.4)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, axis="y")
    if curves:
        ax = axes[0][-1]
        for i, (arm, seeds) in enumerate(curves.items()):
            color = colors[i % len(colors)]
            runs = [seeds[s] for s in sorted(seeds)]
            for run in runs:
                ax.plot(range(1, len(run) + 1), run, color=color, alpha=0.3, linewidth=1)
            length = min(len(r) for r in runs)
            mean = [statistics.fmean(r[e] for r in runs) for e in range(length)]
            ax.plot(range(1, length + 1), mean, "o-", color=color, label=arm, linewidth=2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(curve_label)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
