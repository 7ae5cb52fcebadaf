"""What each branch of each Inception module contributes to a trained model's predictions.

Section 4 of the paper makes two design claims about the branches that this module measures:

- "visual information should be processed at various scales and then aggregated so that the
  next stage can abstract features from different scales simultaneously": if it holds, zeroing
  any one scale's branch (1x1, 3x3, 5x5 or the pooling path) costs accuracy;
- "the ratio of 3x3 and 5x5 convolutions should increase as we move to higher layers": Table 1
  builds that ratio into the filter counts (`channel_share`, the design's share); whether the
  trained model uses its 3x3 and 5x5 branches more in higher modules is their share of the
  module's output energy (`energy_share`), and how much it relies on them, the cost of zeroing
  them (`top1_drop`, `loss_increase`).

`branch_ablation` measures one model; `aggregate` takes the mean and spread over several (seeds);
`plot_branches` draws either as a module x branch heat map.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from inception.evaluation import model_logits
from inception.experiments.table import Spread
from inception.modules import BRANCHES as INCEPTION_BRANCHES
from inception.modules import Inception
from inception.weights import LoadedModel, check_pixels

# The columns of every result, in Figure 2's order (`modules.BRANCHES` names their attributes).
BRANCHES = tuple(INCEPTION_BRANCHES)  # "1x1", "3x3", "5x5", "pool"
# The per-(module, branch) figures of a `BranchResult`.
METRICS = ("top1_drop", "loss_increase", "energy_share", "channel_share")

Cells = dict[str, dict[str, float | None]]


@dataclass
class BranchResult:
    """One model's branch measurements. Every metric is {module: {branch: value}}, None where
    the module has no such branch (a model built with `pool_branch=False` has no "pool").

    - `top1_drop`: baseline top-1 minus top-1 with the branch's output zeroed (points of %);
    - `loss_increase`: mean cross-entropy with the branch zeroed minus the baseline's;
    - `energy_share`: the branch's sum of squared activations over the images divided by the
      module output's (the shares of a module sum to 1);
    - `channel_share`: the branch's output channels over the module's (Table 1's design)."""

    modules: list[str]
    branches: list[str]
    baseline: dict[str, float]
    top1_drop: Cells
    loss_increase: Cells
    energy_share: Cells
    channel_share: Cells
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form for result files (absent branches as null)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BranchResult:
        """A result read back from `to_json`'s form."""
        return cls(**data)

    def grid(self, metric: str) -> list[list[float]]:
        """`metric` as rows of modules and columns of branches, NaN where a branch is absent."""
        cells = getattr(self, metric)
        return [[math.nan if cells[m][b] is None else cells[m][b] for b in self.branches]
                for m in self.modules]


def inception_modules(model: nn.Module) -> dict[str, Inception]:
    """The Inception modules of a GoogLeNet by Table 1 row name ("3a" .. "5b"), in order."""
    return {name: m for name, m in model.layers.items() if isinstance(m, Inception)}


def branch_module(module: Inception, branch: str) -> nn.Module | None:
    """The submodule computing `branch` ("1x1", "3x3", "5x5", "pool"); None when absent."""
    if branch not in INCEPTION_BRANCHES:
        raise ValueError(f"branch must be one of {', '.join(BRANCHES)}; got {branch!r}")
    return getattr(module, INCEPTION_BRANCHES[branch])


@contextlib.contextmanager
def zeroed(module: Inception, branch: str) -> Iterator[None]:
    """Within the block, `branch` of `module` outputs zeros of its usual shape (a forward hook),
    so that the module concatenates the other branches' outputs beside zeros; the hook is
    removed on leaving, error or not."""
    target = branch_module(module, branch)
    if target is None:
        raise ValueError(f"this module has no {branch} branch (built with pool_branch=False)")
    handle = target.register_forward_hook(lambda _m, _inputs, out: torch.zeros_like(out))
    try:
        yield
    finally:
        handle.remove()


def channel_shares(module: Inception) -> dict[str, float | None]:
    """Each branch's share of the module's output channels, from its filter counts; a naive
    module's pooling path passes every input channel through."""
    counts = module.filter_counts()
    own = {"1x1": counts["n1x1"], "3x3": counts["n3x3"], "5x5": counts["n5x5"]}
    if module.branch4 is not None:
        own["pool"] = module.out_channels - sum(own.values())
    return {b: own[b] / module.out_channels if b in own else None for b in BRANCHES}


def _batches(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor,
             batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(model input, labels) batches: the model's 1-crop evaluation transform of the uint8
    images (`Preprocessing.__call__`: for a Fashion-MNIST model, to [0, 1], resized to its
    input side when the images have another, standardised, as training's `_normalize`)."""
    for i in range(0, len(labels), batch):
        yield loaded.preprocessing(images[i:i + batch]), labels[i:i + batch]


def _score(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor,
           batch: int) -> tuple[float, float]:
    """(mean cross-entropy, top-1 %) of the model, in fp32, as it is now (hooks included)."""
    loss, hits = 0.0, 0
    for x, y in _batches(loaded, images, labels, batch):
        logits = model_logits(loaded.model, x, "fp32")
        y = y.to(logits.device)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        hits += int((logits.argmax(1) == y).sum().item())
    return loss / len(labels), 100.0 * hits / len(labels)


def _energy_shares(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor,
                   batch: int) -> tuple[tuple[float, float], Cells]:
    """The baseline (loss, top-1) and each branch's share of its module's output energy,
    summed in float64 by forward hooks during the same pass."""
    modules = inception_modules(loaded.model)
    sums: dict[tuple[str, str], torch.Tensor] = {}

    def accumulate(key: tuple[str, str]):
        def hook(_m: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
            energy = out.detach().double().square().sum()
            sums[key] = sums[key] + energy if key in sums else energy
        return hook

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(accumulate((name, "total"))))
            for b in BRANCHES:
                target = branch_module(module, b)
                if target is not None:
                    handles.append(target.register_forward_hook(accumulate((name, b))))
        baseline = _score(loaded, images, labels, batch)
    finally:
        for handle in handles:
            handle.remove()
    shares = {name: {b: (sums[name, b] / sums[name, "total"]).item() if (name, b) in sums
                     else None for b in BRANCHES} for name in modules}
    return baseline, shares


def _check_inputs(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor,
                  batch: int) -> None:
    check_pixels(images, "images", loaded.channels, dims=(4,))
    if images.dtype != torch.uint8:
        raise TypeError(f"images: expected uint8 pixels (0-255); got {images.dtype}")
    if labels.ndim != 1 or len(labels) != len(images) or len(labels) == 0:
        raise ValueError(f"labels: expected one label per image ({len(images)}); got shape "
                         f"{tuple(labels.shape)}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1; got {batch}")


@torch.no_grad()
def branch_ablation(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor,
                    batch: int = 500) -> BranchResult:
    """Zero each branch of each Inception module in turn and measure what the model loses, in
    eval mode and fp32, on uint8 `images` (N x C x H x W) with `labels`; with each branch's
    share of its module's output energy and channels (section 4's "processed at various scales
    and then aggregated" and "the ratio of 3x3 and 5x5 convolutions should increase as we move
    to higher layers"). The images go through the model's 1-crop preprocessing, so the
    baseline is `inception eval --crops 1`'s figure on the same images."""
    _check_inputs(loaded, images, labels, batch)
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        (loss, top1), energy = _energy_shares(loaded, images, labels, batch)
        modules = inception_modules(model)
        drop: Cells = {name: {} for name in modules}
        increase: Cells = {name: {} for name in modules}
        for name, module in modules.items():
            for b in BRANCHES:
                drop[name][b] = increase[name][b] = None
                if branch_module(module, b) is None:
                    continue
                with zeroed(module, b):
                    ablated_loss, ablated_top1 = _score(loaded, images, labels, batch)
                drop[name][b] = top1 - ablated_top1
                increase[name][b] = ablated_loss - loss
    finally:
        model.train(was_training)
    return BranchResult(
        modules=list(modules), branches=list(BRANCHES),
        baseline={"loss": loss, "top1": top1, "images": len(labels)},
        top1_drop=drop, loss_increase=increase, energy_share=energy,
        channel_share={name: channel_shares(m) for name, m in modules.items()},
        model=None if loaded.path is None else str(loaded.path))


def _spread_cells(results: Sequence[BranchResult], metric: str) -> dict[str, dict[str, Any]]:
    """{module: {branch: Spread.to_dict() or None}} of `metric` over `results`."""
    first = results[0]
    out: dict[str, dict[str, Any]] = {}
    for m in first.modules:
        out[m] = {}
        for b in first.branches:
            values = [getattr(r, metric)[m][b] for r in results]
            if all(v is None for v in values):
                out[m][b] = None
            elif any(v is None for v in values):
                raise ValueError(f"{m} {b}: present in some models and absent in others; "
                                 "aggregate models of one layout")
            else:
                out[m][b] = Spread.of(values).to_dict()
    return out


def aggregate(results: Sequence[BranchResult]) -> dict[str, Any]:
    """The mean, sample standard deviation ("std", 0 for one model, as in
    `experiments.table.Spread`) and count of every figure over `results` (the same design
    trained with several seeds): {"models", "modules", "branches", "baseline": {"loss",
    "top1"}, and per metric {module: {branch: {"mean", "std", "n"} or None}}}."""
    if not results:
        raise ValueError("no results to aggregate")
    first = results[0]
    for r in results[1:]:
        if r.modules != first.modules or r.branches != first.branches:
            raise ValueError(f"{r.model}: its modules or branches differ from {first.model}'s")
    return {
        "models": len(results), "modules": list(first.modules),
        "branches": list(first.branches),
        "model_paths": [r.model for r in results],
        "baseline": {k: Spread.of([r.baseline[k] for r in results]).to_dict()
                     for k in ("loss", "top1")},
        **{metric: _spread_cells(results, metric) for metric in METRICS},
    }


# -- the heat map ---------------------------------------------------------------------------------

# (metric, title, colour map, cell format): the costs diverge from zero (a branch whose removal
# helps shows blue), the shares run from 0 to 1.
_PANELS = (("top1_drop", "top-1 drop (points)", "RdBu_r", "{:.2f}"),
           ("loss_increase", "loss increase", "RdBu_r", "{:.3f}"),
           ("energy_share", "energy share (channel share)", "Blues", "{:.2f}"))


def _cells(source: BranchResult | dict[str, Any], metric: str
           ) -> tuple[list[list[float]], list[list[float | None]]]:
    """(means, standard deviations or None) of `metric` for a result or an `aggregate`."""
    if isinstance(source, BranchResult):
        grid = source.grid(metric)
        return grid, [[None] * len(row) for row in grid]
    cells = source[metric]
    means = [[math.nan if cells[m][b] is None else cells[m][b]["mean"]
              for b in source["branches"]] for m in source["modules"]]
    stds = [[None if cells[m][b] is None else cells[m][b]["std"] for b in source["branches"]]
            for m in source["modules"]]
    return means, stds


def _label(fmt: str, mean: float, std: float | None, design: float) -> str:
    if math.isnan(mean):
        return "absent"
    text = fmt.format(mean) + ("" if std is None else f"\n± {fmt.format(std)}")
    return text if math.isnan(design) else f"{text}\n({design:.2f})"


def _panel(ax: Any, means: list[list[float]], stds: list[list[float | None]],
           design: list[list[float]] | None, cmap: str, fmt: str) -> None:
    """One heat map, each cell written in (white on the darkest colours)."""
    values = [v for row in means for v in row if not math.isnan(v)]
    if design is None:  # a cost: centred on zero
        top = max((abs(v) for v in values), default=0.0) or 1.0
        low, high = -top, top
    else:
        low, high = 0.0, 1.0
    ax.imshow(torch.tensor(means, dtype=torch.float64).numpy(), cmap=cmap, vmin=low, vmax=high,
              aspect="auto")
    middle, half = (low + high) / 2, (high - low) / 2
    for i, row in enumerate(means):
        for j, mean in enumerate(row):
            shown = math.nan if design is None else design[i][j]
            dark = mean > 0.6 if design is not None else abs(mean - middle) > 0.6 * half
            ax.text(j, i, _label(fmt, mean, stds[i][j], shown), ha="center", va="center",
                    fontsize=7, color="white" if dark else "black")


def plot_branches(result: BranchResult | dict[str, Any], path: str | Path, title: str) -> Path:
    """A PNG heat map of modules (rows) by branches (columns): top-1 drop, loss increase and
    energy share (with the channel share in brackets: what Table 1 designed), each cell
    written in; for an `aggregate`, the means, each with its standard deviation."""
    from inception.plots import _pyplot

    plt = _pyplot()
    modules = result.modules if isinstance(result, BranchResult) else result["modules"]
    branches = result.branches if isinstance(result, BranchResult) else result["branches"]
    design, _ = _cells(result, "channel_share")
    fig, axes = plt.subplots(1, 3, figsize=(13, 1.6 + 0.55 * len(modules)))
    for ax, (metric, name, cmap, fmt) in zip(axes, _PANELS, strict=True):
        means, stds = _cells(result, metric)
        _panel(ax, means, stds, design if metric == "energy_share" else None, cmap, fmt)
        ax.set_xticks(range(len(branches)), branches)
        ax.set_yticks(range(len(modules)), modules)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
