"""Classification metrics, counted one way for training and for `inception eval`.

The paper reports top-1 and top-5 ("the top-5 error rate ... comparing the ground truth against
the first 5 predicted classes"); both, the per-class accuracy and the confusion matrix come from
one `Tally`. Its sums stay on the device it is given (the batches'), so counting costs a GPU no
host synchronisation: nothing is read until `totals`.
"""

from __future__ import annotations

from collections.abc import Callable
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


def summarize(loss_sum: float, top5: int, confusion: torch.Tensor, images: int
              ) -> dict[str, Any]:
    """Mean loss, top-1 and top-5 (%) and the confusion matrix from the totals."""
    top1 = confusion.diag().sum().item()
    return {"loss": loss_sum / images, "top1": 100.0 * top1 / images,
            "top5": 100.0 * top5 / images, "confusion": confusion}
