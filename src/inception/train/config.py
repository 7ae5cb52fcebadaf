"""The training configuration: one frozen dataclass, saved in every run directory and checkpoint.

Recipes (`inception.recipes`) are functions returning a `TrainConfig`; a `--config` file and
flags override its fields (`inception.flags`), and `--resume` refuses a config that differs from
the run's saved one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal

from inception.config import ConfigError, GoogLeNetConfig, option, validate_fields


class RunError(RuntimeError):
    """A run that cannot start or continue; the message names the file or flag."""


class Diverged(RunError):
    """The training loss became NaN or infinite (the last checkpoint is kept)."""


Schedule = Literal["step", "onecycle"]
Averaging = Literal["none", "ema", "polyak"]
Augment = Literal["batch", "paper", "folder"]
Precision = Literal["fp32", "bf16"]
# torch.compile's modes for `--compile MODE`; None runs eager.
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")
# Upper bounds of the settings that count epochs and images: far past any real run, low enough
# that a slip of the keyboard (10**12) is refused instead of running for ever or filling memory.
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536  # twice the 32k of large-batch ImageNet training (You et al., LARS)
MAX_WORKERS = 256  # DataLoader processes: past the cores of any one machine


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data's location. Recipes (`inception.recipes`)
    are functions returning one of these; flags and `--config` files override its fields."""

    recipe: str = option(
        "fashion-mnist", "the recipe to start from (its settings, then --config, then flags)")
    epochs: int = option(10, "passes over the training images", low=1, high=MAX_EPOCHS)
    batch_size: int = option(256, "images per optimizer step (the global batch under torchrun)",
                             low=1, high=MAX_BATCH)
    lr: float = option(
        0.2, "peak learning rate (schedule onecycle) or the starting one (schedule step)",
        low=0, low_open=True)
    momentum: float = option(0.9, "SGD momentum (the paper: 0.9)", low=0, high=1, high_open=True)
    nesterov: bool = option(False, "Nesterov momentum")
    weight_decay: float = option(5e-4, "SGD weight decay", low=0)
    # "step": lr * gamma ** floor(epoch / step_epochs), the paper's "decreasing the learning rate
    # by 4% every 8 epochs"; "onecycle": torch's OneCycleLR, warm-up then cosine decay to ~0.
    schedule: Schedule = option(
        "onecycle",
        "step: lr times lr-step-gamma every lr-step-epochs (the paper); onecycle: warm-up, decay")
    lr_step_epochs: int = option(
        8, "epochs between learning-rate steps (schedule step; the paper: 8)",
        low=1, high=MAX_EPOCHS)
    lr_step_gamma: float = option(
        0.96, "learning-rate factor at each step (schedule step; the paper: 0.96)",
        low=0, low_open=True, high=1)
    warmup_fraction: float = option(
        0.15, "fraction of the steps spent warming up (schedule onecycle)",
        low=0, low_open=True, high=1, high_open=True)
    label_smoothing: float = option(
        0.0, "label smoothing of the cross-entropy loss (not in the paper)",
        low=0, high=1, high_open=True)
    # "polyak": the running mean of the iterates (Polyak & Juditsky, the paper's [13]) from
    # `average_start` x epochs on; "ema": an exponential moving average with TensorFlow's warm-up,
    # decay min(ema_decay, (1 + n) / (10 + n)). The average is evaluated and exported.
    averaging: Averaging = option(
        "none", "weights evaluated and exported: none, ema (moving average), polyak (running mean)")
    ema_decay: float = option(0.999, "decay of the exponential moving average (averaging ema)",
                              low=0, low_open=True, high=1, high_open=True)
    average_start: float = option(0.0, "fraction of the epochs after which averaging begins",
                                  low=0, high=1, high_open=True)
    # "batch": uint8 tensors augmented batch-wise (in-memory data sets); "paper": section 6's
    # per-image sampling and distortions; "folder": a light per-image pipeline.
    augment: Augment = option(
        "batch",
        "batch: batch-wise shifts, flips in memory; paper: section 6's; folder: light, per image")
    # Bounds: the batch is zero-padded by this much on every side, so a huge shift fills memory.
    translate: int = option(2, "largest random shift in pixels (augment batch)", low=0, high=256)
    erase_p: float = option(0.0, "probability of random erasing per image (augment batch)",
                            low=0, high=1)
    precision: Precision = option("bf16", "training arithmetic: fp32, or bf16 autocast")
    channels_last: bool = option(
        True, "channels-last memory format (faster convolutions on CPUs and GPUs)")
    seed: int = option(0, "random seed of the weights, the data order and the augmentation",
                       low=0, high=2**32 - 1)
    # Not in the paper: each layer's initial weights drawn from a generator seeded by (seed,
    # the layer's name), so configurations that differ in one layer start every other layer from
    # the same weights (`GoogLeNet(init_seed=...)`); the paired ablations of `inception
    # experiment` use it. Off: all layers draw in turn from torch's stream seeded by `seed`.
    init_by_name: bool = option(
        False, "draw each layer's initial weights from (seed, its name): arms that share a "
        "layer share its initial weights")
    workers: int = option(
        2, "DataLoader worker processes for image folders (in-memory data sets use none)",
        low=0, high=MAX_WORKERS)
    subset: int | None = option(None, "train on only the first N training images (smoke runs)",
                                low=1)
    # Hold out the last N images of an in-memory training set as a validation split: every
    # epoch is evaluated on it (metrics.csv), and the test set only once, at the end. Settings
    # are to be tuned on the validation split, never on the test set.
    val_images: int = option(
        0, "hold out the last N training images as a validation split, evaluated every epoch",
        low=0)
    eval_batch_size: int = option(1000, "images per batch when evaluating", low=1, high=MAX_BATCH)
    # Not in the paper: record each epoch's mean L2 norm of the gradient reaching the lower
    # stages (conv1 .. 4a) in metrics.csv (`lower_grad_norm`), for section 5's claim that the
    # auxiliary classifiers "increase the gradient signal that gets propagated back" (`inception
    # experiment aux-heads`). A measurement only: the trained weights are the same either way.
    watch_gradients: bool = option(
        False, "record the gradient norm reaching conv1 .. 4a every epoch (section 5's claim)")
    # Under torchrun on GPUs: BatchNorm statistics over the global batch (nn.SyncBatchNorm)
    # instead of each process's slice. PyTorch's SyncBatchNorm is GPU-only.
    sync_bn: bool = option(
        False, "BatchNorm statistics over the global batch under torchrun on GPUs")
    # Initial weights, "torchvision:PATH": a torchvision GoogLeNet state dict (e.g. its ImageNet
    # googlenet-1378be20.pth) for every layer but the classifiers, which start fresh.
    init: str | None = option(
        None, "initial weights: torchvision:PATH, a torchvision GoogLeNet state dict")
    model: GoogLeNetConfig = dataclasses.field(default_factory=GoogLeNetConfig)

    def __post_init__(self) -> None:
        validate_fields(self)  # types, choices and each field's bounds (`option`)
        if self.init is not None and not self.init.startswith("torchvision:"):
            raise ConfigError("--init must be torchvision:PATH (a torchvision googlenet state "
                              "dict)")

    def replace(self, **changes: Any) -> TrainConfig:
        model_changes = {k: changes.pop(k) for k in list(changes) if k in _MODEL_FIELDS}
        model = changes.pop("model", self.model)
        if isinstance(model, dict):
            model = GoogLeNetConfig.from_dict(model)
        return dataclasses.replace(self, model=model.replace(**model_changes), **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differing_fields(self, other: TrainConfig) -> list[str]:
        """The top-level fields (`model` as one) whose values differ from `other`'s."""
        theirs = other.to_dict()
        return [k for k, v in self.to_dict().items() if theirs[k] != v]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        known = {f.name for f in fields(cls)} | _MODEL_FIELDS
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        model = data.pop("model", {})
        if not isinstance(model, dict):
            raise ConfigError("'model' must be a table of model config fields")
        base = cls(model=GoogLeNetConfig.from_dict(model))
        return base.replace(**data)


_MODEL_FIELDS = {f.name for f in fields(GoogLeNetConfig)}
