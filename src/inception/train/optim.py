"""Optimisation: section 6's SGD, its learning-rate schedule and Polyak averaging.

"Our training used asynchronous stochastic gradient descent with 0.9 momentum [17], fixed learning
rate schedule (decreasing the learning rate by 4% every 8 epochs). Polyak averaging [13] was used
to create the final model used at inference time." Synchronous SGD stands in for the asynchronous
DistBelief kind; the fast recipes swap the schedule for one-cycle and the average for an EMA.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_swa_avg_fn

from inception.train.config import TrainConfig

_swa_avg = get_swa_avg_fn()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum ("asynchronous stochastic gradient descent with 0.9 momentum" becomes
    synchronous SGD here). Weight decay applies to weights, not to biases or BN parameters.

    The update is torch's fused kernel (`fused=True`, on CPUs and GPUs): one pass over each
    parameter instead of a chain of per-tensor operations, the same update
    (`benchmarks/train_step.py` times it)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per optimizer step.

    "step": section 6's "fixed learning rate schedule (decreasing the learning rate by 4% every 8
    epochs)", i.e. lr * 0.96 ** floor(epoch / 8). "onecycle": torch's OneCycleLR.
    """
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg.lr_step_epochs * steps_per_epoch, gamma=cfg.lr_step_gamma)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
        pct_start=cfg.warmup_fraction, div_factor=10.0, final_div_factor=100.0,
        cycle_momentum=False)


def ema_multi_avg_fn(decay: float) -> Callable[[list, list, Any], None]:
    """Exponential moving average with TensorFlow's warm-up: the decay used for the n-th update is
    min(decay, (1 + n) / (10 + n)), so the average follows the weights closely early on. One fused
    `_foreach_lerp_` over all tensors (as torch's own `get_ema_multi_avg_fn`); integer buffers
    (BN's batch counter) are copied."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: Any) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
    return update


def mean_multi_avg_fn(averaged: list[torch.Tensor], current: list[torch.Tensor],
                      n: int) -> None:
    """The running mean of the iterates (Polyak & Juditsky): the n-th update moves the average
    1/(n + 1) of the way to the weights. On the CPU it is torch's own `AveragedModel` update,
    a + (c - a) / (n + 1) tensor by tensor, integer buffers (BN's batch counter) included, so
    runs are bit for bit what they were with `AveragedModel`; on a GPU one fused lerp for the
    float tensors."""
    with torch.no_grad():
        if averaged[0].device.type != "cpu" and torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 / (n + 1))
            return
        count = torch.tensor(n)  # a CPU scalar: no device read, also for GPU tensors
        for a, c in zip(averaged, current, strict=True):
            a.copy_(_swa_avg(a, c, count))


class Average(AveragedModel):
    """torch's `AveragedModel` (parameters and buffers), updated without reading the GPU.

    torch's own `update_parameters` copies its step count to the parameters' device and the
    averaging functions turn it back into a Python number: a host synchronisation every step,
    which on a GPU stalls the queue of kernels. Here the count is a host integer (read once from
    the `n_averaged` buffer, which is still kept for checkpoints) and each dtype group goes to the
    averaging function (`ema_multi_avg_fn`, `mean_multi_avg_fn`) with that count."""

    def __init__(self, model: nn.Module, multi_avg_fn: Callable[[list, list, int], None]) -> None:
        super().__init__(model, multi_avg_fn=multi_avg_fn, use_buffers=True)
        self._count: int | None = None

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        self._count = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._count is None:
            self._count = int(self.n_averaged)
        mine = itertools.chain(self.module.parameters(), self.module.buffers())
        theirs = itertools.chain(model.parameters(), model.buffers())
        groups: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for a, c in zip(mine, theirs, strict=True):
            averaged, current = groups.setdefault(a.dtype, ([], []))
            averaged.append(a.detach())
            current.append(c.detach())
        for averaged, current in groups.values():
            if self._count == 0:
                torch._foreach_copy_(averaged, current)
            else:
                self.multi_avg_fn(averaged, current, self._count)
        self.n_averaged += 1
        self._count += 1


def make_average(model: nn.Module, cfg: TrainConfig) -> Average | None:
    """The parameter average used for evaluation and for the final model: "Polyak averaging [13]
    was used to create the final model used at inference time." BN statistics are averaged too."""
    if cfg.averaging == "none":
        return None
    if cfg.averaging == "ema":
        return Average(model, ema_multi_avg_fn(cfg.ema_decay))
    return Average(model, mean_multi_avg_fn)
