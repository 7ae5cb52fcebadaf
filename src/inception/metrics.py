"""Classification metrics, counted one way for training and for `inception eval`.

The paper reports top-1 and top-5 ("the top-5 error rate ... comparing the ground truth against
the first 5 predicted classes"); both, the per-class accuracy and the confusion matrix come from
one `Tally`. Its sums stay on the device it is given (the batches'), so counting costs a GPU no
host synchronisation: nothing is read until `totals`. An evaluation's outcome is one
`EvalResult`, naming the split it was measured on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


class Tally:
    """Running sums over batches of scores (logits or probabilities: their order is what counts)
    and labels: loss, top-5 hits, the confusion counts (rows: true class) and the images."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.top5 = torch.zeros((), dtype=torch.long, device=device)
        self.images = 0

    def add(self, scores: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """One batch: `scores` N x C, `labels` N, `loss_sum` the batch's summed loss."""
        c = self.num_classes
        self.loss_sum += loss_sum.double()
        k = min(5, c)
        self.top5 += (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()
        # index_add_, not bincount: on a GPU bincount reads the largest label to size its output.
        self.confusion.index_add_(0, labels * c + scores.argmax(dim=1), torch.ones_like(labels))
        self.images += len(labels)

    def totals(self, read: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.cpu
               ) -> tuple[float, int, torch.Tensor, int]:
        """(loss sum, top-5 hits, C x C confusion on the CPU, images): the only place the sums
        are read from their device, each through `read` (the training loop passes its own
        read point, `train.engine.host`)."""
        c = self.num_classes
        return (read(self.loss_sum).item(), int(read(self.top5).item()),
                read(self.confusion).view(c, c), self.images)


def per_class_top1(confusion: torch.Tensor) -> list[float]:
    """Each class's top-1 accuracy (%) from a confusion matrix (rows: true class)."""
    return (confusion.diag().float() / confusion.sum(1).clamp(min=1).float() * 100).tolist()


@dataclass(frozen=True, eq=False)
class EvalResult:
    """One evaluation: the `split` it measured ("val", a split held out for tuning, or "test"),
    its `images`, mean loss (cross-entropy of the averaged softmax), top-1 and top-5 (%) and
    the confusion matrix (rows: true class, columns: predicted; `classes` name them), with how
    it was computed: `models` x `crops` forward passes per image in `precision`, at
    `images_per_s`, from `model_paths` (empty for a model still in training)."""

    split: str
    images: int
    loss: float
    top1: float
    top5: float
    confusion: torch.Tensor
    classes: tuple[str, ...]
    models: int = 1
    crops: int = 1
    precision: str = "fp32"
    images_per_s: float | None = None
    model_paths: tuple[str, ...] = ()

    @classmethod
    def from_totals(cls, split: str, totals: tuple[float, int, torch.Tensor, int],
                    classes: Sequence[str], **details: Any) -> EvalResult:
        """From `Tally.totals()`'s (loss sum, top-5 hits, confusion, images); `details` are the
        remaining fields. No images at all (every file undecodable) is a `ValueError`."""
        loss_sum, top5, confusion, images = totals
        if images == 0:
            raise ValueError(f"no {split} image could be evaluated (all were skipped)")
        top1 = confusion.diag().sum().item()
        return cls(split, images, loss_sum / images, 100.0 * top1 / images,
                   100.0 * top5 / images, confusion.cpu(), tuple(classes), **details)

    @property
    def cost(self) -> int:
        """Forward passes per image (Table 3's "cost")."""
        return self.models * self.crops

    @property
    def top1_error(self) -> float:
        return 100.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 100.0 - self.top5

    @property
    def per_class_top1(self) -> dict[str, float]:
        """Top-1 (%) of each class the split has images of (a model may know more classes than
        the data holds: ImageNet weights on a few of them)."""
        counts = self.confusion.sum(1).tolist()
        return {c: p for c, p, n in zip(self.classes, per_class_top1(self.confusion), counts,
                                        strict=True) if n}

    def named_figures(self) -> dict[str, float]:
        """`results.json`'s figures of this split, named for it: SPLIT_top1, SPLIT_top5,
        SPLIT_loss."""
        name = self.split
        return {f"{name}_top1": round(self.top1, 4), f"{name}_top5": round(self.top5, 4),
                f"{name}_loss": round(self.loss, 6)}

    def to_json(self) -> dict[str, Any]:
        """The JSON form `inception eval` prints and writes (rounded as it always was)."""
        return {
            "split": self.split, "images": self.images, "models": self.models,
            "crops": self.crops, "cost": self.cost,
            "top1": round(self.top1, 4), "top5": round(self.top5, 4),
            "top1_error": round(self.top1_error, 4), "top5_error": round(self.top5_error, 4),
            "loss": round(self.loss, 6),
            "per_class_top1": {c: round(p, 2) for c, p in self.per_class_top1.items()},
            "confusion": self.confusion.tolist(),
            "images_per_s": (None if self.images_per_s is None
                             else round(self.images_per_s, 1)),
            "precision": self.precision, "model_paths": list(self.model_paths),
        }
