"""The training loop: one optimizer step at a time, with as few reads from the device as possible.

A GPU runs ahead of the host as long as nothing is read from it. So the loop keeps each step's
loss on the device (`LossMeter`) and reads the pending ones every `sync_every` steps, in one
transfer; evaluation, `inception eval`'s own (`inception.evaluation`), keeps its sums there too
(`inception.metrics.Tally`). `host` is the single place either of them reads the device.
Checkpointing and signals are the caller's (`inception.train.run`): `Trainer.steps` yields
between steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from inception import distributed
from inception.devices import CpuShare, autocast, cpu_cores
from inception.evaluation import tally_batches, view_batches
from inception.metrics import EvalResult, Tally
from inception.model import GoogLeNet, GoogLeNetOutput, googlenet_loss, gradient_norm
from inception.preprocessing import Preprocessing
from inception.train.config import Diverged, TrainConfig
from inception.train.loaders import EvalSplit
from inception.train.optim import Average

CPU_CHECK_S = 10.0  # seconds between looks at how busy the CPU is (`Trainer._cpu_note`)


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def host(t: torch.Tensor) -> torch.Tensor:
    """`t` on the CPU. Every read from the device in the training loop and in `evaluate` goes
    through here, so each call is a deliberate host synchronisation point (on a GPU, the host
    waits for the queued kernels)."""
    return t.cpu()


@dataclass
class Position:
    """Where a run stands: the epoch in progress (0-based), the batches done in it, the global
    optimizer step, and the partial epoch's loss sum, images, training seconds and starting
    learning rate; `wall_s` is the run's wall time up to the checkpoint. With
    `watch_gradients`, the partial epoch's sum of the lower stages' gradient norms and its step
    count."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    seen: int = 0
    train_s: float = 0.0
    lr: float = 0.0
    wall_s: float = 0.0
    grad_norm_sum: float = 0.0
    grad_norm_steps: int = 0


class LossMeter:
    """This rank's loss sum and image count over an epoch. Each step's loss stays on its device
    until `read`, which brings all the pending ones to the host in one transfer, checks them and
    adds them up (in float64, in step order: the same sum as adding each step's loss at once)."""

    def __init__(self, loss_sum: float = 0.0, seen: int = 0) -> None:
        self.loss_sum, self.seen = loss_sum, seen
        self.last = float("nan")
        self.error: str | None = None
        self._losses: list[torch.Tensor] = []
        self._sizes: list[int] = []

    def add(self, loss: torch.Tensor, images: int) -> None:
        self._losses.append(loss.detach())
        self._sizes.append(images)

    def read(self, step: int) -> int:
        """Add the pending losses to the totals and return how many there were. The first
        non-finite loss is kept in `error` (a message naming its step; `step` is the last
        pending one's) and stops the adding."""
        if not self._losses:
            return 0
        values = host(torch.stack(self._losses).double()).tolist()
        first = step - len(values) + 1
        for i, (value, images) in enumerate(zip(values, self._sizes, strict=True)):
            if not math.isfinite(value):
                self.error = (f"the loss became {value} at step {first + i}; lower --lr or use "
                              "--norm bn (the last checkpoint is kept)")
                break
            self.loss_sum += value * images
            self.seen += images
        self.last = values[-1]
        self._losses.clear()
        self._sizes.clear()
        return len(values)


class TrainForward(nn.Module):
    """The training forward pass as a module's `forward` (main and aux logits), which is what
    DDP wraps: DDP only synchronises gradients for calls that go through `forward`."""

    def __init__(self, model: GoogLeNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> GoogLeNetOutput | torch.Tensor:
        return self.model.forward_aux(x) if self.model.aux else self.model(x)


@dataclass(eq=False)
class Trainer:
    """What one optimizer step needs: the model, its training forward (`TrainForward`, its DDP
    wrapper or its compiled form), optimizer, schedule and parameter average (updated after
    step `average_from`), and how often the loop reads the device (`sync_every`)."""

    model: GoogLeNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: TrainConfig
    device: torch.device
    average: Average | None = None
    average_from: int = 0
    forward: nn.Module | None = None
    ctx: distributed.Context = distributed.SINGLE
    sync_every: int = 1
    _meter: LossMeter = field(default_factory=LossMeter, init=False, repr=False)
    _clock: float = field(default=0.0, init=False, repr=False)
    _progress: Any = field(default=None, init=False, repr=False)
    _grad_norms: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)
    _lower: list[nn.Parameter] = field(default_factory=list, init=False, repr=False)
    _share: CpuShare | None = field(default=None, init=False, repr=False)
    _share_at: float = field(default=0.0, init=False, repr=False)
    _note: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.forward is None:  # not `or`: a compiled module has no truth value
            self.forward = TrainForward(self.model)
        self._clock = time.perf_counter()
        # Only where this process is the whole run: DataLoader workers (image folders) and
        # other ranks would count as "other processes".
        in_memory = self.cfg.augment == "batch" or self.cfg.workers == 0
        if self.device.type == "cpu" and in_memory and not self.ctx.active:
            self._share, self._share_at = CpuShare(), self._clock
        if self.cfg.watch_gradients:
            self._lower = self.model.lower_stage_parameters()

    def averaged_or_model(self, pos: Position) -> nn.Module:
        """What is evaluated and exported: the parameter average once averaging has begun."""
        if self.average is not None and pos.step > self.average_from:
            return self.average.module
        return self.model

    def steps(self, batches: Iterator, pos: Position, progress: Any = None) -> Iterator[bool]:
        """The rest of an epoch from `pos`, one optimizer step per item, updating `pos`.

        Yields after each step whether it was a poll: every `sync_every` steps the pending losses
        are read in one transfer, checked for NaN/inf (`Diverged`) and shown on `progress`; in
        between nothing is read from the device. Between steps the caller may `sync(pos)` and
        checkpoint, or stop. When the batches run out, `pos` is synced."""
        self.model.train()
        # pos holds totals over all ranks; rank 0 carries them on, the others add from zero.
        self._meter = LossMeter(*((pos.loss_sum, pos.seen) if self.ctx.main else (0.0, 0)))
        self._clock, self._progress = time.perf_counter(), progress
        for x, y in batches:
            self._step(x, y, pos)
            poll = pos.step % self.sync_every == 0
            if poll:
                self._read(pos)
            yield poll
        self.sync(pos)

    def _step(self, x: torch.Tensor, y: torch.Tensor, pos: Position) -> None:
        cfg = self.cfg
        x, y = _to_device(x, y, self.device, cfg.channels_last)
        with autocast(self.device, cfg.precision == "bf16"):
            out = self.forward(x)
            if self.model.aux:
                loss = googlenet_loss(out, y, cfg.model.aux_weight, cfg.label_smoothing)
            else:
                loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self._lower:  # the gradient that reached conv1 .. 4a, read at the next sync
            self._grad_norms.append(gradient_norm(self._lower).detach())
        self.optimizer.step()
        self.scheduler.step()
        pos.step += 1
        pos.batch += 1
        if self.average is not None and pos.step > self.average_from:
            self.average.update_parameters(self.model)
        self._meter.add(loss, len(y))

    def _read(self, pos: Position) -> None:
        meter = self._meter
        steps = meter.read(pos.step)
        # Every rank stops together (a rank that raised alone would leave the others waiting).
        if distributed.any_rank(self.ctx, meter.error is not None):
            raise Diverged(meter.error or "the loss became non-finite on another process; "
                           "lower --lr or use --norm bn (the last checkpoint is kept)")
        if self._progress is not None and steps:
            self._progress.update(steps)
            self._progress.set_postfix(loss=f"{meter.last:.3f}", refresh=False,
                                       **self._cpu_note())

    def _cpu_note(self) -> dict[str, str]:
        """A word for the progress bar while other processes take cores that this run's
        threads need (each of torch's operations waits for its slowest thread, so a shared
        core slows every step far more than its share), looked at every CPU_CHECK_S seconds."""
        now = time.perf_counter()
        if self._share is None or now - self._share_at < CPU_CHECK_S:
            return self._note
        self._share_at = now
        others, threads, cores = self._share.others(), torch.get_num_threads(), cpu_cores()
        self._note = {}
        if others is not None and others + threads > cores + 0.5:
            free = max(1, round(cores - others))
            advice = f": slow; restart with --resume --threads {free}" if free < threads else ""
            self._note = {"cpu": f"{others:.1f} of {cores} cores busy elsewhere{advice}"}
        return self._note

    def sync(self, pos: Position) -> None:
        """Read the pending losses and bring `pos`'s loss sum, image count and training time up
        to date (summed over the ranks under DDP: a collective call)."""
        self._read(pos)
        if self._grad_norms:  # identical on every rank: DDP has averaged the gradients
            norms = host(torch.stack(self._grad_norms).double()).tolist()
            pos.grad_norm_sum += sum(norms)
            pos.grad_norm_steps += len(norms)
            self._grad_norms.clear()
        now = time.perf_counter()
        pos.loss_sum, seen = distributed.all_reduce_sum(self.ctx, self._meter.loss_sum,
                                                        self._meter.seen)
        pos.seen, pos.train_s, self._clock = int(seen), pos.train_s + now - self._clock, now


def train_one_epoch(trainer: Trainer, batches: Iterator, pos: Position,
                    progress: Any = None) -> None:
    """The rest of an epoch from `pos`, without checkpoints."""
    for _ in trainer.steps(batches, pos, progress):
        pass


def evaluation_tally(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     num_classes: int, cfg: TrainConfig, device: torch.device) -> Tally:
    """The loss and accuracy sums of `model` (put in eval mode) over batches of normalised
    1-crop images and labels, kept on `device`: nothing is read from it until the caller does.
    The forward pass and the counting are `inception eval`'s (`evaluation.tally_batches`), in
    the run's precision."""
    model.eval()
    views = (((x[:, None],), y) for x, y in batches)
    return tally_batches([model], [cfg.precision], views, num_classes, device,
                         channels_last=cfg.channels_last)


def evaluate(model: nn.Module, split: EvalSplit, preprocessing: Preprocessing,
             classes: list[str], cfg: TrainConfig, device: torch.device,
             ctx: distributed.Context = distributed.SINGLE) -> EvalResult:
    """`model` on `split`, as `inception eval MODEL --crops 1` evaluates the exported model: the
    same images, cut and normalised by the run's `preprocessing` (`evaluation.view_batches`),
    counted by `evaluation_tally`. Under DDP each rank evaluates its share of the images and the
    sums are added up over the ranks."""
    images = split.images.shard(ctx.rank, ctx.world) if ctx.active else split.images
    batches = view_batches(images, [preprocessing], 1, cfg.eval_batch_size, cfg.workers, device,
                           split.skipped, pin=device.type == "cuda")
    images_1crop = ((views[0][:, 0], labels) for views, labels in batches)
    loss_sum, top5, confusion, n = evaluation_tally(model, images_1crop, len(classes), cfg,
                                                    device).totals(host)
    distributed.all_reduce_tensor(ctx, confusion)
    loss_sum, top5, n = distributed.all_reduce_sum(ctx, loss_sum, top5, n)
    return EvalResult.from_totals(split.name, (loss_sum, int(top5), confusion, int(n)), classes,
                                  precision=cfg.precision)


def progress_bar(enabled: bool, total: int, desc: str, initial: int = 0) -> Any:
    """A tqdm bar of an epoch's batches, or None when not `enabled`."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True, mininterval=1.0)
