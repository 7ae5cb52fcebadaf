"""The paper's design claims as experiments, held as data like the recipes, declared before any
run: each claim's regime (the protocol its arms train), arms, primary metric, margin and seeds.

Each `Experiment` quotes the sentence it tests. An ablation's arms differ from the paper's arm
(`arms[0]`) in the fields their `changes` name, and each other arm says which way the claim
expects it to go (`Arm.expect`). `inception experiment NAME` runs one
(`inception.experiments.runner`); docs/claims.md holds the measured tables and the plan.

Seeds come from a power calculation (`planned_seeds`): the paired differences' spread seen in
earlier three-seed runs of these ablations (`pilot_sd`), the smallest effect that matters
(`delta`, in the primary metric's unit), a two-sided paired t test at 5%, power 0.8; capped
where the budget (about 4 hours of training on a 2-core CPU for everything) runs out, which the
report then says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from inception.experiments.stats import seeds_to_resolve
from inception.recipes import fashion_mnist
from inception.train.config import TrainConfig

Weights = Literal["final", "raw"]
Expect = Literal["lower", "not higher"]
Kind = Literal["ablation", "branches", "crops"]
Measure = Literal["cost", "gradients", "probe", "gap", "weights"]

MAX_SEEDS = 10  # the budget's cap on any claim's seeds
# Compute-matched naive network: the width at which Figure 2(a)'s modules cost the multiply-adds
# of the protocol's reduced network (22.7M against 22.5M per 28 px image, +0.9%; the closest of
# widths 0.080 .. 0.100 in steps of 0.001; tests/test_experiments.py recomputes it).
MATCHED_NAIVE_WIDTH = 0.086
LR_GRID = (0.05, 0.1, 0.2, 0.4)  # the reductions arms' grid; the protocol's peak is 0.2
# The grid's runs have a seed of their own, outside every comparison: the run that won the
# choice on the validation split is not then reported as a test figure.
GRID_SEED = 100


def protocol(seed: int = 0) -> TrainConfig:
    """The base regime: the default Fashion-MNIST recipe (28 px, small stem, width 0.25,
    BatchNorm, one-cycle SGD, EMA of the weights), shortened so that every claim's seeds fit the
    budget.

    - 10,000 training images (the first of the 58,000 left after the validation split), 8
      epochs: 312 steps of 256 images.
    - 2,000 held-out training images evaluated every epoch (`val_images`): learning rates are
      chosen there; the test set (10,000) once at the end, and it is what the tables report.
    - Dropout 0.4, the paper's (the default recipe uses 0.2).
    - EMA decay 0.985: a half-life of 46 steps, the same 15% of the run as the default recipe's.
    - `init_by_name`: every layer's initial weights depend only on the seed and its name, so
      two arms start the layers they share from the same weights.
    """
    return fashion_mnist.recipe().replace(
        recipe="experiment", subset=10_000, val_images=2_000, epochs=8, dropout=0.4,
        ema_decay=0.985, init_by_name=True, seed=seed)


def paper_heads(seed: int = 0) -> TrainConfig:
    """The aux heads as the paper builds them: 56 px (Fashion-MNIST upsampled) with the small
    stem puts 4a and 4d at 14x14, as at 224 px, so the paper's 5x5/3 average pool gives 4x4 and
    covers every position. 5 epochs (195 steps) keep the 4.7x larger images in the budget; the
    main loss's gradient is probed at every epoch's end (`watch_gradients`)."""
    return protocol(seed).replace(image_size=56, aux_pool="5x5/3", epochs=5,
                                  watch_gradients=True)


def paper_heads_lrn(seed: int = 0) -> TrainConfig:
    """`paper_heads` with Figure 3's LocalRespNorms instead of BatchNorm (the paper predates BN,
    which changes how gradients reach the lower stages), for the gradient measure: 3 epochs at
    a peak learning rate of 0.05 (the BN-free network does not train at 0.2)."""
    return paper_heads(seed).replace(norm="lrn", lr=0.05, epochs=3)


# The `overfitting` regime's check, declared with it: the paper's arm's validation loss must
# end more than this above its training loss (the report says whether it did).
OVERFITTING_LOSS_GAP = 0.1


def overfitting(seed: int = 0) -> TrainConfig:
    """A regime where the network overfits, declared before running: 2,000 training images (189
    parameters per image; the paper's network had 5.8: 7.0M parameters without the aux heads
    over 1.2M ImageNet images) for 40 epochs (280 steps, about the base regime's 312), so that
    the training loss falls far below the validation loss (`OVERFITTING_LOSS_GAP`; the
    generalization gap is measured and reported)."""
    return protocol(seed).replace(subset=2_000, epochs=40)


def polyak(seed: int = 0) -> TrainConfig:
    """Section 6's schedule where averaging can matter: SGD from a learning rate of 0.05
    decreased by 4% at every epoch (the paper's 4% every 8 epochs, at this run's scale), no
    warm-up or annealing to zero, and the running mean of the weights (Polyak & Juditsky) over
    the second half of the run, against the last iterate."""
    return protocol(seed).replace(schedule="step", lr=0.05, lr_step_epochs=1,
                                  lr_step_gamma=0.96, averaging="polyak", average_start=0.5)


REGIMES: dict[str, Callable[[int], TrainConfig]] = {
    "base": protocol, "paper-heads": paper_heads, "paper-heads-lrn": paper_heads_lrn,
    "overfitting": overfitting, "polyak": polyak}


@dataclass(frozen=True)
class Arm:
    """One side of an experiment: the regime with `changes` (TrainConfig or GoogLeNetConfig
    fields), evaluated with the run's `weights`: "final" is what the run exports (the average of
    the weights), "raw" the last optimizer iterate, read from the run's last checkpoint.
    `expect`: which way the claim expects this arm to differ from the paper's."""

    name: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    weights: Weights = "final"
    expect: Expect = "lower"

    def config(self, base: TrainConfig, seed: int, lr: float | None = None) -> TrainConfig:
        """The regime `base` with this arm's changes, for `seed` (and `lr` when given)."""
        extra = {} if lr is None else {"lr": lr}
        return base.replace(seed=seed, **dict(self.changes), **extra)

    def run_name(self, lr: float | None = None) -> str:
        """The run directory's name stem: arms with the same changes share their runs."""
        changes = {**self.changes, **({} if lr is None else {"lr": lr})}
        if not changes:
            return "paper"
        return ",".join(f"{k}={v}" for k, v in sorted(changes.items()))


@dataclass(frozen=True)
class Experiment:
    """A claim of the paper, the regime it is tested in and the arms that test it (`arms[0]` is
    the paper's), declared in advance: the primary metric, the margin `delta` within which a
    difference does not matter, the spread that planned the seeds and, where the arms' learning
    rates are chosen, the grid (the best final validation top-1 of runs with `GRID_SEED`)."""

    name: str
    section: str
    sentence: str
    regime: str
    arms: tuple[Arm, ...]
    primary: str = "test top-1 (%)"
    delta: float | None = 0.3
    pilot_sd: float | None = None
    measures: tuple[Measure, ...] = ()
    lr_grid: tuple[float, ...] | None = None
    kind: Kind = "ablation"
    seeds: int | None = None

    @property
    def baseline(self) -> Arm:
        """The paper's arm, against which the others are compared."""
        return self.arms[0]

    def base(self, seed: int = 0) -> TrainConfig:
        """The regime's config for `seed`."""
        return REGIMES[self.regime](seed)

    @property
    def planned_seeds(self) -> int:
        """Seeds per arm: `seeds` when declared, else the power calculation's, at least 3, at
        most `MAX_SEEDS`."""
        if self.seeds is not None:
            return self.seeds
        if self.pilot_sd is None or self.delta is None:
            return 3
        n = seeds_to_resolve(self.delta, self.pilot_sd, max_n=MAX_SEEDS)
        return max(3, min(MAX_SEEDS, n or MAX_SEEDS))


PAPER = Arm("paper")
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "reductions", "4",
        "1x1 convolutions are used to compute reductions before the expensive 3x3 and 5x5 "
        "convolutions.",
        "base",
        (Arm("reduced (Figure 2b)"),
         Arm("naive (Figure 2a)", {"module": "naive"}, expect="not higher"),
         Arm("naive, compute-matched", {"module": "naive", "width": MATCHED_NAIVE_WIDTH})),
        delta=0.5, pilot_sd=1.62, measures=("cost",), lr_grid=LR_GRID, seeds=3),
    Experiment(
        "pool-branch", "4",
        "Additionally, since pooling operations have been essential for the success in current "
        "state of the art convolutional networks, it suggests that adding an alternative "
        "parallel pooling path in each such stage should have additional beneficial effect, too.",
        "base",
        (Arm("with the pooling path"), Arm("without it", {"pool_branch": False})),
        pilot_sd=0.35),
    Experiment(
        "aux-heads", "5",
        "By adding auxiliary classifiers connected to these intermediate layers, we would expect "
        "to encourage discrimination in the lower stages in the classifier, increase the "
        "gradient signal that gets propagated back, and provide additional regularization.",
        "paper-heads",
        (Arm("aux heads (weight 0.3)"), Arm("no aux heads", {"aux_logits": False})),
        pilot_sd=0.18, measures=("gradients", "probe", "gap")),
    Experiment(
        "aux-heads-lrn", "5",
        "By adding auxiliary classifiers connected to these intermediate layers, we would expect "
        "to [...] increase the gradient signal that gets propagated back",
        "paper-heads-lrn",
        (Arm("aux heads (weight 0.3), LRN"), Arm("no aux heads, LRN", {"aux_logits": False})),
        primary="main-loss gradient at conv1..4a / above", delta=None,
        measures=("gradients",), seeds=3),
    Experiment(
        "avg-pool", "5",
        "It was found that a move from fully connected layers to average pooling improved the "
        "top-1 accuracy by about 0.6%.",
        "overfitting",
        (Arm("average pool"), Arm("fully connected", {"head": "fc"})),
        pilot_sd=0.15, measures=("gap",)),
    Experiment(
        "dropout", "5",
        "However the use of dropout remained essential even after removing the fully connected "
        "layers.",
        "overfitting",
        (Arm("dropout 0.4"), Arm("no dropout", {"dropout": 0.0})),
        pilot_sd=0.25, measures=("gap",)),
    Experiment(
        "averaging", "6",
        "Polyak averaging [13] was used to create the final model used at inference time.",
        "polyak",
        (Arm("averaged (Polyak)"), Arm("last iterate", weights="raw")),
        delta=0.1, pilot_sd=0.08, measures=("weights",)),
    Experiment(
        "branches", "4",
        "the ratio of 3x3 and 5x5 convolutions should increase as we move to higher layers",
        "base", (PAPER,),
        primary="depth trend of the 3x3 and 5x5 branches' loss share per channel",
        delta=None, kind="branches", seeds=5),
    Experiment(
        "crops", "7",
        "we report the results using multiple testing choices, when predicting on test images",
        "base", (PAPER,), primary="top-1 error (%)", delta=None, kind="crops", seeds=7),
)}


def select(name: str) -> list[Experiment]:
    """The experiments `name` stands for: one, or every one for "all"."""
    if name == "all":
        return list(EXPERIMENTS.values())
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of "
                         f"{', '.join(EXPERIMENTS)} or all")
    return [EXPERIMENTS[name]]
