"""The training configuration: one frozen dataclass, saved in every run directory and checkpoint.

Recipes (`inception.recipes`) are functions returning a `TrainConfig`; a `--config` file and
flags override its fields (`inception.flags`), and `--resume` refuses a config that differs from
the run's saved one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal

from inception.config import ConfigError, GoogLeNetConfig, validate_fields


class RunError(RuntimeError):
    """A run that cannot start or continue; the message names the file or flag."""


Schedule = Literal["step", "onecycle"]
Averaging = Literal["none", "ema", "polyak"]
Augment = Literal["batch", "paper", "folder"]
Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data's location. Recipes (`inception.recipes`)
    are functions returning one of these; flags and `--config` files override its fields."""

    recipe: str = "fashion-mnist"
    epochs: int = 10
    # Images per optimizer step: the global batch, split over the processes under torchrun.
    batch_size: int = 256
    # The peak learning rate ("onecycle") or the starting one ("step").
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    # "step": lr * gamma ** floor(epoch / step_epochs), the paper's "decreasing the learning rate
    # by 4% every 8 epochs"; "onecycle": torch's OneCycleLR, warm-up then cosine decay to ~0.
    schedule: Schedule = "onecycle"
    lr_step_epochs: int = 8
    lr_step_gamma: float = 0.96
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.0
    # "polyak": the running mean of the iterates (Polyak & Juditsky, the paper's [13]) from
    # `average_start` x epochs on; "ema": an exponential moving average with TensorFlow's warm-up,
    # decay min(ema_decay, (1 + n) / (10 + n)). The average is evaluated and exported.
    averaging: Averaging = "none"
    ema_decay: float = 0.999
    average_start: float = 0.0  # fraction of the epochs after which averaging begins
    # "batch": uint8 tensors augmented batch-wise (in-memory data sets); "paper": section 6's
    # per-image sampling and distortions; "folder": a light per-image pipeline.
    augment: Augment = "batch"
    translate: int = 2
    erase_p: float = 0.0
    precision: Precision = "bf16"
    channels_last: bool = True
    seed: int = 0
    workers: int = 2
    # Only the first N training images (smoke runs).
    subset: int | None = None
    # Hold out the last N images of an in-memory training set as a validation split: every
    # epoch is evaluated on it (metrics.csv), and the test set only once, at the end. Settings
    # are to be tuned on the validation split, never on the test set.
    val_images: int = 0
    eval_batch_size: int = 1000
    # Not in the paper: record each epoch's mean L2 norm of the gradient reaching the lower
    # stages (conv1 .. 4a) in metrics.csv (`lower_grad_norm`), for section 5's claim that the
    # auxiliary classifiers "increase the gradient signal that gets propagated back" (`inception
    # experiment aux-heads`). A measurement only: the trained weights are the same either way.
    watch_gradients: bool = False
    # Under torchrun on GPUs: BatchNorm statistics over the global batch (nn.SyncBatchNorm)
    # instead of each process's slice. PyTorch's SyncBatchNorm is GPU-only.
    sync_bn: bool = False
    # Initial weights, "torchvision:PATH": a torchvision GoogLeNet state dict (e.g. its ImageNet
    # googlenet-1378be20.pth) for every layer but the classifiers, which start fresh.
    init: str | None = None
    model: GoogLeNetConfig = dataclasses.field(default_factory=GoogLeNetConfig)

    def __post_init__(self) -> None:
        validate_fields(self)
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (0 <= self.momentum < 1, "--momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay must be non-negative"),
            (0 < self.lr_step_gamma <= 1, "--lr-step-gamma must be in (0, 1]"),
            (0 < self.warmup_fraction < 1, "--warmup-fraction must be in (0, 1)"),
            (self.translate >= 0, "--translate must be non-negative"),
            (self.eval_batch_size >= 1, "--eval-batch-size must be at least 1"),
            (self.workers >= 0, "--workers must be non-negative"),
            (self.subset is None or self.subset >= 1, "--subset must be at least 1"),
            (self.val_images >= 0, "--val-images must be non-negative"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (0 < self.ema_decay < 1, "--ema-decay must be in (0, 1)"),
            (self.lr_step_epochs >= 1, "--lr-step-epochs must be at least 1"),
            (0 <= self.erase_p <= 1, "--erase-p must be in [0, 1]"),
            (0 <= self.average_start < 1, "--average-start must be in [0, 1)"),
            (self.init is None or self.init.startswith("torchvision:"),
             "--init must be torchvision:PATH (a torchvision googlenet state dict)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

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
