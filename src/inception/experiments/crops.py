"""Table 3 of the paper on our models: ensembles of 1 and 7 models, each with 1, 10 and 144 test
crops, every cell's error and its cost.

The paper's Table 3 ("GoogLeNet classification performance break down") reports, for each
number of models and of crops, the cost ("crops x models" forward passes per image) and the
top-5 error, and section 7 the scheme behind it: "The softmax probabilities are averaged over
multiple crops and over all the individual classifiers to obtain the final prediction." Each
cell here is one `inception eval` of the first m runs as an ensemble with c crops
(`inception.evaluation.evaluate`, its crops and its `subset`), so that a cell of this grid and
the same `inception eval --ensemble ... --crops c --subset N` give the same figures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inception.evaluation import evaluate
from inception.metrics import EvalResult
from inception.weights import load

log = logging.getLogger(__name__)

HEADER = ("Number of models", "Number of Crops", "Cost", "Top-5 error", "Top-1 error")


def _cell(result: EvalResult) -> dict[str, Any]:
    """One grid cell: the models and crops, the cost and the evaluation's figures."""
    return {"models": result.models, "crops": result.crops, "cost": result.cost,
            "top1_error": result.top1_error, "top5_error": result.top5_error,
            "loss": result.loss, "images": result.images, "split": result.split,
            "precision": result.precision, "model_paths": list(result.model_paths)}


def _positive(values: Sequence[int], name: str) -> None:
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                         for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive integers; got "
                         f"{list(values)!r}")


def crop_grid(runs: Sequence[str | Path], crops: Sequence[int] = (1, 10, 144),
              models: Sequence[int] = (1, 7), subset: int | None = None,
              data_dir: str | Path | None = None, *, data: str = "fashion-mnist",
              device: str = "cpu", precision: str | None = None) -> list[dict[str, Any]]:
    """For each number of models m in `models` and of crops c in `crops`, the top-1 and top-5
    error (%) of the ensemble of the first m of `runs` (run or model directories) with c crops
    on `data`'s evaluation split (the first `subset` images), through `inception eval`'s path,
    and its cost, c x m forward passes per image (the paper's Table 3). A number of models
    larger than the runs given is left out (logged). Each model runs in `precision`, by
    default the one it was trained in, as `inception eval` does."""
    _positive(crops, "crops")
    _positive(models, "models")
    if not runs:
        raise ValueError("no runs: give at least one run directory")
    wanted = sorted({m for m in models if m <= len(runs)})
    for m in sorted(set(models) - set(wanted)):
        log.warning("%d models: only %d runs given; leaving that row out", m, len(runs))
    if not wanted:
        raise ValueError(f"every number of models ({list(models)}) exceeds the {len(runs)} "
                         "runs given")
    loaded = [load(r, device) for r in runs[:max(wanted)]]
    directory = None if data_dir is None else str(data_dir)
    return [_cell(evaluate(loaded[:m], data, crops=c, subset=subset, data_dir=directory,
                           precision=precision))
            for m in wanted for c in crops]


def markdown_table(grid: Sequence[dict[str, Any]]) -> str:
    """The grid laid out as the paper's Table 3: one row per (models, crops), with its cost
    and its top-5 and top-1 error."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for cell in grid:
        lines.append(f"| {cell['models']} | {cell['crops']} | {cell['cost']} | "
                     f"{cell['top5_error']:.2f}% | {cell['top1_error']:.2f}% |")
    return "\n".join(lines)
