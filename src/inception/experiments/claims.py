"""The paper's design claims as experiments, held as data like the recipes.

Each `Experiment` quotes the sentence it tests, names the one field its two arms differ in (the
paper's value first) and what it measures besides test accuracy. Every arm trains the same
protocol (`protocol()`): nothing is tuned per arm. `inception experiment NAME` runs one
(`inception.experiments.runner`); docs/claims.md holds the measured tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from inception.recipes import fashion_mnist
from inception.train.config import TrainConfig

Weights = Literal["final", "raw"]
Measure = Literal["cost", "gradients", "probe", "weights"]

# Seeds per arm when none are given: the fewest that give a spread.
DEFAULT_SEEDS = 3


def protocol(seed: int = 0) -> TrainConfig:
    """The recipe every arm trains: the default Fashion-MNIST recipe (width 0.25, BatchNorm,
    one-cycle SGD, EMA of the weights), shortened so that six experiments x 3 seeds are
    affordable on a CPU (`inception experiment all` runs them; docs/claims.md, "Cost, measured",
    gives their wall time and the machine).

    - 10,000 training images (the first of the 58,000 left after the validation split), 8
      epochs: 312 steps of 256 images.
    - 2,000 held-out training images evaluated every epoch (`val_images`); the test set (10,000)
      once at the end, and it is what the tables report.
    - Dropout 0.4, the paper's (the default recipe uses 0.2), since claim 5 is about it.
    - EMA decay 0.985: a half-life of 46 steps, the same 15% of the run as the default recipe's
      0.998 over its 2,340 steps. Fixed before any arm was run.
    - `watch_gradients`: the lower stages' gradient norm per epoch (claim 3).
    """
    return fashion_mnist.recipe().replace(
        recipe="experiment", subset=10_000, val_images=2_000, epochs=8, dropout=0.4,
        ema_decay=0.985, watch_gradients=True, seed=seed)


@dataclass(frozen=True)
class Arm:
    """One side of an experiment: the protocol with `changes` (TrainConfig or GoogLeNetConfig
    fields), evaluated with the run's `weights`: "final" is what the run exports (the average of
    the weights), "raw" the last optimizer iterate, read from the run's last checkpoint."""

    name: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    weights: Weights = "final"

    def config(self, base: TrainConfig, seed: int) -> TrainConfig:
        """The protocol `base` with this arm's changes, for `seed`."""
        return base.replace(seed=seed, **dict(self.changes))

    @property
    def run_name(self) -> str:
        """The run directory's name stem: arms with the same changes share their runs."""
        if not self.changes:
            return "paper"
        return ",".join(f"{k}={v}" for k, v in sorted(self.changes.items()))


@dataclass(frozen=True)
class Experiment:
    """A claim of the paper and the two arms that test it; `arms[0]` is the paper's."""

    name: str
    section: str
    sentence: str
    field: str
    arms: tuple[Arm, Arm]
    measures: tuple[Measure, ...] = ()

    @property
    def baseline(self) -> Arm:
        """The paper's arm, against which the other is compared."""
        return self.arms[0]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "reductions", "4",
        "1x1 convolutions are used to compute reductions before the expensive 3x3 and 5x5 "
        "convolutions.",
        "module",
        (Arm("reduced (Figure 2b)"), Arm("naive (Figure 2a)", {"module": "naive"})),
        ("cost",)),
    Experiment(
        "pool-branch", "4",
        "Additionally, since pooling operations have been essential for the success in current "
        "state of the art convolutional networks, it suggests that adding an alternative "
        "parallel pooling path in each such stage should have additional beneficial effect, too.",
        "pool_branch",
        (Arm("with the pooling path"), Arm("without it", {"pool_branch": False}))),
    Experiment(
        "aux-heads", "5",
        "By adding auxiliary classifiers connected to these intermediate layers, we would expect "
        "to encourage discrimination in the lower stages in the classifier, increase the "
        "gradient signal that gets propagated back, and provide additional regularization.",
        "aux_logits",
        (Arm("aux heads (weight 0.3)"), Arm("no aux heads", {"aux_logits": False})),
        ("gradients", "probe")),
    Experiment(
        "avg-pool", "5",
        "It was found that a move from fully connected layers to average pooling improved the "
        "top-1 accuracy by about 0.6%.",
        "head",
        (Arm("average pool"), Arm("fully connected", {"head": "fc"}))),
    Experiment(
        "dropout", "5",
        "However the use of dropout remained essential even after removing the fully connected "
        "layers.",
        "dropout",
        (Arm("dropout 0.4"), Arm("no dropout", {"dropout": 0.0}))),
    Experiment(
        "averaging", "6",
        "Polyak averaging [13] was used to create the final model used at inference time.",
        "weights",
        (Arm("averaged (EMA)"), Arm("raw final weights", weights="raw")),
        ("weights",)),
)}


def select(name: str) -> list[Experiment]:
    """The experiments `name` stands for: one, or every one for "all"."""
    if name == "all":
        return list(EXPERIMENTS.values())
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of "
                         f"{', '.join(EXPERIMENTS)} or all")
    return [EXPERIMENTS[name]]
