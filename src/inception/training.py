"""Training: data in, a run directory out.

A run directory holds `config.json` (the resolved `TrainConfig`), `metrics.csv` (one row per
epoch), `checkpoints/last.pt` (everything needed to resume, loadable with `weights_only=True`),
the final `model.safetensors` + `model.json` (model config, preprocessing, class names),
`results.json`, and PNG plots of the curves and the confusion matrix.

Randomness is derived from (seed, epoch): every epoch reseeds the global generator and builds its
own shuffling/augmentation generator, so a run resumed at an epoch boundary sees exactly the
batches, augmentations and dropout masks of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_swa_avg_fn
from torch.utils.data import DataLoader, Dataset

from inception import data as data_lib
from inception import distributed
from inception.config import ConfigError, TrainConfig
from inception.devices import autocast, resolve_device, to_device
from inception.model import GoogLeNet, googlenet_loss
from inception.transforms import (
    BatchAugment,
    decode_side,
    eval_transform,
    folder_train_transform,
    paper_train_transform,
)

log = logging.getLogger(__name__)

_SINGLE = distributed.Context()
METRIC_COLUMNS = ("epoch", "wall_s", "train_loss", "val_loss", "val_top1", "val_top5", "lr",
                  "images_per_s")
CHECKPOINT_FORMAT = 2  # 1: epoch-end checkpoints (still loaded); 2: any step
_swa_avg = get_swa_avg_fn()
GPU_SYNC_EVERY = 50  # steps between the loop's reads from a GPU (`train`'s `sync_every`)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")


class RunError(RuntimeError):
    """A run that cannot start or continue; the message names the file or flag."""


# -- data -----------------------------------------------------------------------------------------

class Epoch(NamedTuple):
    """One epoch's batches from some batch on, and the generator (if any) whose state after the
    last batch taken is what a mid-epoch checkpoint must save to continue it exactly."""

    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    generator: torch.Generator | None


@dataclass
class Batches:
    """A re-iterable source of (images, labels) batches: `epoch(n, start, state)` gives epoch n
    from batch `start`, with the batch generator's saved `state` when resuming mid-epoch.
    `skipped` collects the files that could not be decoded ({path: reason})."""

    make: Callable[[int, int, torch.Tensor | None], Epoch]
    num_images: int
    num_batches: int
    skipped: dict[str, str] = field(default_factory=dict)

    def epoch(self, n: int, start: int = 0, state: torch.Tensor | None = None) -> Epoch:
        return self.make(n, start, state)


@dataclass
class Data:
    train: Batches
    val: Batches
    classes: list[str]
    preprocessing: dict[str, Any]
    val_name: str = "val"


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for each (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int) -> torch.Tensor:
    x = x.float().div_(255)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return (x - mean) / std


def _tensor_batches(split: data_lib.TensorSplit, batch_size: int, cfg: TrainConfig,
                    mean: tuple[float, ...], std: tuple[float, ...], train: bool,
                    ctx: distributed.Context = _SINGLE, device: torch.device | None = None
                    ) -> Batches:
    """An in-memory split, shuffled and augmented batch-wise by one generator per epoch. Under
    DDP every rank draws the whole global batch's augmentation (so the random stream does not
    depend on the world size) and keeps its slice.

    On a GPU the uint8 images are copied there once and augmented and normalised there: no
    per-batch host work or transfer (for Fashion-MNIST, 47 MB)."""
    augment = BatchAugment(cfg.translate, flip=True, erase_p=cfg.erase_p) if train else None
    device = device or torch.device("cpu")
    if device.type != "cpu":
        split = data_lib.TensorSplit(split.images.to(device), split.labels.to(device))
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    n = len(split)
    drop_last = train and n >= batch_size

    def make(epoch: int, start: int, state: torch.Tensor | None) -> Epoch:
        g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(n, generator=g) if train else torch.arange(n)
        if state is not None:
            g.set_state(state)
        stop = n - n % batch_size if drop_last else n
        on_device = to_device(order, device)  # one copy per epoch, none per batch

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(start * batch_size, stop, batch_size):
                idx = on_device[i:i + batch_size]
                # This rank's positions in the batch (the same split as `distributed.shard`).
                mine = (torch.arange(len(idx), device=device).tensor_split(ctx.world)[ctx.rank]
                        if ctx.active else slice(None))
                if augment is not None:
                    x = augment(split.images[idx], g)[mine]
                else:
                    x = split.images[idx[mine]]
                yield _normalize(x, m, s, cfg.model.image_size), split.labels[idx[mine]]

        return Epoch(batches(), g)

    batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    return Batches(make, n, batches)


class _SeededSamples(Dataset):
    """Each sample's random transform seeded by (run seed, epoch, index), whichever worker
    loads it and whenever: an epoch resumed mid-way sees the same augmentations."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(self.seed, self.epoch) + 7 * i + 3)
            return self.dataset[i]


def _loader_batches(dataset: Dataset, batch_size: int, cfg: TrainConfig, train: bool,
                    pin: bool, ctx: distributed.Context = _SINGLE) -> Batches:
    """Per-image pipelines in DataLoader workers. Undecodable files are dropped from their batch
    (a batch may come out a few images short), logged once each and kept in `skipped`. Under
    DDP each rank reads only its slice of every global batch."""
    n = len(dataset)
    drop_last = train and n >= batch_size
    seeded = _SeededSamples(dataset, cfg.seed)

    def make(epoch: int, start: int, state: torch.Tensor | None) -> Epoch:
        g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(n, generator=g) if train else torch.arange(n)
        seeded.epoch = epoch
        stop = n - n % batch_size if drop_last else n
        remaining = distributed.shard(ctx, order[start * batch_size:stop], batch_size).tolist()
        per_rank = max(1, batch_size // ctx.world)
        loader = DataLoader(seeded, batch_size=per_rank, sampler=remaining,
                            drop_last=False, num_workers=cfg.workers, pin_memory=pin,
                            persistent_workers=False, collate_fn=data_lib.collate_skipping)

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for batch, skipped in loader:
                for s in skipped:
                    if s.path not in result.skipped:
                        log.warning("skipping %s", s.reason)
                        result.skipped[s.path] = s.reason
                if batch is not None:
                    yield batch

        return Epoch(batches(), None)

    batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    result = Batches(make, n, batches)
    return result


def _train_transform(cfg: TrainConfig, mean: tuple[float, ...], std: tuple[float, ...]):
    """The per-image training pipeline: section 6's ("paper") or the light one ("folder")."""
    size = cfg.model.image_size
    if cfg.augment == "paper":
        return paper_train_transform(size, mean, std)
    return folder_train_transform(size, mean, std)


def load_data(cfg: TrainConfig, data: str, data_dir: str | None, device: torch.device,
              ctx: distributed.Context = _SINGLE) -> Data:
    """The training and evaluation batches for `data` ("fashion-mnist" or a folder); under DDP,
    this rank's share of each."""
    pin = device.type == "cuda"
    size = cfg.model.image_size
    if data == "fashion-mnist":
        train, test = data_lib.fashion_mnist(data_dir)
        train = train.subset(cfg.subset)
        if cfg.model.in_chans != 1:
            raise ConfigError("Fashion-MNIST is grayscale: use --in-chans 1")
        mean, std = data_lib.FASHION_MNIST_MEAN, data_lib.FASHION_MNIST_STD
        if cfg.augment == "paper":
            std = (1.0,)  # "mean subtraction"
        if cfg.augment == "batch":
            train_batches = _tensor_batches(train, cfg.batch_size, cfg, mean, std, True, ctx,
                                            device)
        else:
            images = data_lib.TensorImageDataset(train, _train_transform(cfg, mean, std))
            train_batches = _loader_batches(images, cfg.batch_size, cfg, True, pin, ctx)
        val = _tensor_batches(test, cfg.eval_batch_size, cfg, mean, std, False, ctx, device)
        preprocessing = dict(image_size=size, resize=size, crop=size, mean=list(mean),
                             std=list(std), channels=1, interpolation="bilinear")
        return Data(train_batches, val, list(data_lib.FASHION_MNIST_CLASSES), preprocessing,
                    val_name="test")

    train_dir, val_dir, classes = data_lib.image_folder_splits(data)
    channels = cfg.model.in_chans
    mean = data_lib.IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    std = (1.0,) * channels if cfg.augment == "paper" else (
        data_lib.IMAGENET_STD if channels == 3 else (0.25,) * channels)
    if cfg.augment == "batch":
        raise ConfigError("--augment batch needs an in-memory data set; use --augment folder or "
                          "paper for an image folder")
    train_set = data_lib.ImageFolderDataset(train_dir, classes, _train_transform(cfg, mean, std),
                                            channels, decode_side(cfg.augment, size))
    if cfg.subset is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(cfg.subset, len(train_set))))
    crop_fraction = 0.875
    val_set = data_lib.ImageFolderDataset(val_dir, classes,
                                          eval_transform(size, mean, std, crop_fraction), channels,
                                          min_side=round(size / crop_fraction))
    preprocessing = dict(image_size=size, resize=round(size / crop_fraction), crop=size,
                         mean=list(mean), std=list(std), channels=channels,
                         interpolation="bilinear")
    return Data(_loader_batches(train_set, cfg.batch_size, cfg, True, pin, ctx),
                _loader_batches(val_set, cfg.eval_batch_size, cfg, False, pin, ctx), classes,
                preprocessing)


# -- optimisation ---------------------------------------------------------------------------------

def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum ("asynchronous stochastic gradient descent with 0.9 momentum" becomes
    synchronous SGD here). Weight decay applies to weights, not to biases or BN parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


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


# -- one epoch ------------------------------------------------------------------------------------

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
    learning rate; `wall_s` is the run's wall time up to the checkpoint."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    seen: int = 0
    train_s: float = 0.0
    lr: float = 0.0
    wall_s: float = 0.0


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

    def forward(self, x: torch.Tensor):
        return self.model.forward_aux(x) if self.model.aux else self.model(x)


def train_one_epoch(model: GoogLeNet, batches: Iterator, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: TrainConfig,
                    device: torch.device, average: Average | None, average_from: int,
                    pos: Position, after_step: Callable[[Callable[[], None], bool], None]
                    | None = None, progress=None, forward: nn.Module | None = None,
                    ctx: distributed.Context = _SINGLE, sync_every: int = 1) -> None:
    """The rest of an epoch from `pos`, updating `pos` as it goes.

    Nothing is read from the device between steps: every `sync_every` steps (a "poll") the
    pending losses are read in one transfer, checked for NaN/inf (`RunError`) and shown on the
    progress bar. After each step `after_step(sync, poll)` may checkpoint or stop; `sync()`
    first reads the losses and brings `pos`'s loss sum, image count and time up to date (summed
    over ranks under DDP). `forward` is `TrainForward(model)`, its DDP wrapper or its compiled
    form."""
    if forward is None:  # not `or`: a compiled module has no truth value
        forward = TrainForward(model)
    model.train()
    # pos holds totals over all ranks; rank 0 carries them on, the others add from zero.
    meter = LossMeter(*((pos.loss_sum, pos.seen) if ctx.main else (0.0, 0)))
    t = time.perf_counter()

    def read() -> None:
        steps = meter.read(pos.step)
        # Every rank stops together (a rank that raised alone would leave the others waiting).
        if distributed.any_rank(ctx, meter.error is not None):
            raise RunError(meter.error or "the loss became non-finite on another process; "
                           "lower --lr or use --norm bn (the last checkpoint is kept)")
        if progress is not None and steps:
            progress.update(steps)
            progress.set_postfix(loss=f"{meter.last:.3f}", refresh=False)

    def sync() -> None:
        nonlocal t
        read()
        now = time.perf_counter()
        pos.loss_sum, global_seen = distributed.all_reduce_sum(ctx, meter.loss_sum, meter.seen)
        pos.seen, pos.train_s, t = int(global_seen), pos.train_s + now - t, now

    for x, y in batches:
        x, y = _to_device(x, y, device, cfg.channels_last)
        with autocast(device, cfg.precision == "bf16"):
            out = forward(x)
            if model.aux:
                loss = googlenet_loss(out, y, cfg.model.aux_weight, cfg.label_smoothing)
            else:
                loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        pos.step += 1
        pos.batch += 1
        if average is not None and pos.step > average_from:
            average.update_parameters(model)
        meter.add(loss, len(y))
        poll = pos.step % sync_every == 0
        if poll:
            read()
        if after_step is not None:
            after_step(sync, poll)
    sync()


@torch.no_grad()
def evaluation_sums(model: nn.Module, batches: Iterator, num_classes: int, cfg: TrainConfig,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(loss sum, top-5 count, confusion counts C*C, images) over `batches`, the sums kept on
    `device`: nothing is read from it until the caller does."""
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    k = min(5, num_classes)
    for x, y in batches:
        x, y = _to_device(x, y, device, cfg.channels_last)
        with autocast(device, cfg.precision == "bf16"):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        top5 += (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
        # index_add_, not bincount: on a GPU bincount reads the largest label to size its output.
        confusion.index_add_(0, y * num_classes + logits.argmax(dim=1), torch.ones_like(y))
        n += len(y)
    return loss_sum, top5, confusion, n


def evaluate(model: nn.Module, batches: Iterator, num_classes: int, cfg: TrainConfig,
             device: torch.device, ctx: distributed.Context = _SINGLE) -> dict[str, Any]:
    """Loss, top-1 and top-5 (percent) and the confusion matrix (rows: true class), summed over
    the ranks' shards under DDP."""
    loss_sum, top5, confusion, n = evaluation_sums(model, batches, num_classes, cfg, device)
    confusion = host(confusion).view(num_classes, num_classes)
    distributed.all_reduce_tensor(ctx, confusion)
    total_loss, top5_count, n = distributed.all_reduce_sum(
        ctx, host(loss_sum).item(), host(top5).item(), n)
    top1 = confusion.diag().sum().item()
    return {"loss": total_loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5_count / n,
            "confusion": confusion}


# -- files ----------------------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(path: Path, write: Callable[[Any], None], mode: str = "w",
                        keep_previous: Path | None = None) -> None:
    """Write through `write(file)` to a temporary file, fsync, then rename over `path`: a crash
    mid-write leaves the previous file intact. With `keep_previous`, the file being replaced is
    first renamed there, so the last good version survives whatever happens to the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode, **({} if "b" in mode else {"newline": ""})) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous is not None and path.exists():
        os.replace(path, keep_previous)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: Path, keep_previous: Path | None = None) -> None:
    """torch.save, atomically (see `_replace_atomically`)."""
    _replace_atomically(path, lambda f: torch.save(obj, f), "wb", keep_previous)


def _write_json(path: Path, obj: Any) -> None:
    _replace_atomically(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"))


def export_model(run_dir: Path, model: GoogLeNet, classes: list[str],
                 preprocessing: dict[str, Any], extra: dict[str, Any]) -> Path:
    """`model.safetensors` (inference weights, no aux heads) and `model.json` beside it."""
    from safetensors.torch import save_file

    config = model.config.replace(aux_logits=False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not k.startswith("aux.")}
    path = run_dir / "model.safetensors"
    save_file(state, str(path), metadata={"format": "inception.googlenet"})
    _write_json(run_dir / "model.json", {"model": config.to_dict(),
                                         "preprocessing": preprocessing, "classes": classes,
                                         **extra})
    return path


def write_plots(run_dir: Path, rows: list[dict[str, Any]], confusion: torch.Tensor,
                classes: list[str], val_name: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in rows], "o-", label=val_name)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [r["val_top1"] for r in rows], "o-", label="top-1")
    ax2.plot(epochs, [r["val_top5"] for r in rows], "o-", label="top-5")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"{val_name} accuracy (%)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    curves = run_dir / "curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    cm = plot_confusion(run_dir / "confusion.png", confusion, classes,
                        f"confusion matrix ({val_name})")
    return [curves, cm]


def plot_confusion(path: Path, confusion: torch.Tensor, classes: list[str], title: str) -> Path:
    """The confusion matrix (rows: true class) as a PNG with the counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(confusion.numpy(), cmap="Blues")
    for i in range(n):
        for j in range(n):
            value = int(confusion[i, j])
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > confusion.max() / 2 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the run --------------------------------------------------------------------------------------

@dataclass
class RunResult:
    run_dir: Path
    results: dict[str, Any]
    plots: list[Path] = field(default_factory=list)


def killed_before_first_checkpoint(out: Path) -> bool:
    """Whether `out` holds only what a run writes while it starts (`config.json`, an empty
    `checkpoints/` or the temporary file of its first save): a run killed then has trained
    nothing, so it starts again, with or without --resume, as the same command would have."""
    if not out.is_dir() or not (out / "config.json").is_file():
        return False
    if any(p.name not in ("config.json", "checkpoints", ".write-test") for p in out.iterdir()):
        return False
    folder = out / "checkpoints"
    return not folder.exists() or all(p.suffix == ".tmp" for p in folder.iterdir())


def check_run_dir(out: Path, resume: bool) -> None:
    """Refuse to write into someone else's results, before anything is loaded or created."""
    if killed_before_first_checkpoint(out):
        log.warning("%s holds a run killed before its first checkpoint; starting it again", out)
        return
    if resume:
        if not any((out / "checkpoints" / name).exists() for name in ("last.pt", "previous.pt")):
            raise RunError(f"--resume: {out}/checkpoints/last.pt does not exist; start a new run "
                           "without --resume")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"--out {out} already exists and is not empty; pass --resume to continue "
                       "it or choose another --out")


def create_run_dir(out: Path, model: nn.Module) -> None:
    """Create `out` once the run is known to be able to start, and check it is writable and has
    room for the checkpoints."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunError(f"--out {out}: cannot write there ({e.strerror})") from e
    check_free_space(out, model)


def init_from_torchvision(model: GoogLeNet, cfg: TrainConfig) -> None:
    """Load `cfg.init` ("torchvision:PATH") into every layer of `model` but the classifiers."""
    from inception.weights import torchvision_backbone_state

    if cfg.model.transform_input and cfg.augment == "paper":
        raise ConfigError("--augment paper subtracts the mean only, but transform_input expects "
                          "ImageNet mean/std normalisation; use --augment folder")
    path = cfg.init.removeprefix("torchvision:")
    state = torchvision_backbone_state(path, model)
    missing = model.load_state_dict(state, strict=False).missing_keys
    log.info("initialised from torchvision weights %s (new: %s)", path, ", ".join(missing))


def load_latest_checkpoint(folder: Path) -> dict[str, Any]:
    """`last.pt`, or `previous.pt` when the last one is missing or damaged (a crash during its
    save), with a warning."""
    last, previous = folder / "last.pt", folder / "previous.pt"
    try:
        return load_checkpoint(last)
    except (RunError, FileNotFoundError):
        if not previous.exists():
            raise
        log.warning("%s is missing or damaged; resuming from %s", last, previous)
        return load_checkpoint(previous)


def check_free_space(out: Path, model: nn.Module) -> None:
    """Refuse to start when `out` cannot hold two checkpoints (model, optimizer state and the
    average) plus the exported model."""
    import shutil

    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    need = 8 * param_bytes + 16 * 2**20
    free = shutil.disk_usage(out).free
    if free < need:
        raise RunError(f"--out {out}: {free / 2**20:.0f} MiB free, but checkpoints need about "
                       f"{need / 2**20:.0f} MiB; free some space or choose another --out")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `train`, loaded safely (`weights_only=True`)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files, foreign pickles: all refused the same way
        raise RunError(f"{path}: not a loadable checkpoint ({type(e).__name__}); it may be "
                       "truncated or not written by inception") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (1, CHECKPOINT_FORMAT):
        raise RunError(f"{path}: not an inception checkpoint")
    return ckpt


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the run saved a checkpoint at `position` and stopped."""

    def __init__(self, signum: int, out: Path, position: Position) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"{name} at epoch {position.epoch + 1}, step {position.step}: "
                         f"checkpoint saved; continue with --resume --out {out}")
        self.signum = signum


@dataclass
class _StopFlag:
    signum: int | None = None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    """SIGINT and SIGTERM set a flag that the loop checks after each step (a second one acts at
    once, as usual). Only where signals can be handled: the main thread."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        flag.signum = signum
        signal.signal(signum, previous[signum])

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(cfg: TrainConfig, data: str = "fashion-mnist", out: str | Path | None = None,
          data_dir: str | None = None, device: str = "auto", resume: bool = False,
          progress: bool = True, stop_after: int | None = None,
          checkpoint_every: int | None = 100, sync_every: int | None = None,
          compile: str | None = None) -> RunResult | None:
    """Train a GoogLeNet as `cfg` says and write the run directory. See the module docstring.

    A checkpoint is written before the first step, every `checkpoint_every` steps (None: only
    at epoch ends) and at the end of every epoch; it holds the position within the epoch and
    every random state, so `resume=True` continues from any of them exactly as if the run had
    not stopped. SIGINT/SIGTERM save one and raise `Interrupted`. `stop_after=N` ends the
    session after epoch N (time-sliced training); it returns None then.

    The loop reads from the device only every `sync_every` steps (default: every step on the
    CPU, where a read costs nothing, and every `GPU_SYNC_EVERY` on a GPU, where each read
    stalls the kernel queue): the loss sum, the NaN check, the progress bar and the SIGINT/
    SIGTERM poll happen then and at checkpoints; a NaN still stops the run before any
    checkpoint holds it. `compile` runs the training forward through `torch.compile` in that
    mode ("default", "reduce-overhead": with CUDA graphs, "max-autotune"). On a GPU, cuDNN picks
    its fastest convolution algorithms for the run's fixed shapes (`cudnn.benchmark`).

    Under `torchrun` the processes train one model with DDP (`inception.distributed`):
    `cfg.batch_size` is the global batch and rank 0 writes the run directory.
    """
    dev = resolve_device(device)
    ctx = distributed.setup(dev.type)
    if ctx.active and dev.type == "cuda":
        dev = torch.device("cuda", ctx.local_rank)
    try:
        if sync_every is None:
            sync_every = 1 if dev.type == "cpu" else GPU_SYNC_EVERY
        if sync_every < 1:
            raise RunError(f"--sync-every {sync_every}: must be at least 1")
        if compile not in COMPILE_MODES:
            raise RunError(f"--compile {compile}: use one of "
                           f"{', '.join(m for m in COMPILE_MODES if m)}")
        loop = Loop(checkpoint_every, sync_every, compile)
        with _cudnn_benchmark(dev.type == "cuda"):
            return _train(cfg, data, out, data_dir, dev, resume, progress and ctx.main,
                          stop_after, loop, ctx)
    finally:
        distributed.teardown(ctx)


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN's autotuner for the fixed shapes of a GPU run, as it was set afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def sync_batch_norm(model: GoogLeNet, cfg: TrainConfig, ctx: distributed.Context,
                    dev: torch.device) -> GoogLeNet:
    """`cfg.sync_bn`: the model with `nn.SyncBatchNorm` layers, under DDP on GPUs."""
    if not cfg.sync_bn:
        return model
    if cfg.model.norm != "bn":
        raise RunError("--sync-bn needs --norm bn (this model has no BatchNorm)")
    if not ctx.active:
        log.warning("--sync-bn has no effect in a single process")
        return model
    if dev.type != "cuda":
        raise RunError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm is GPU-only; on CPUs each "
                       "process normalises over its own slice of the batch")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _rng_states(ctx: distributed.Context, dev: torch.device
                ) -> tuple[torch.Tensor | list[torch.Tensor], Any]:
    """(the CPU generator's state, the GPU's or None): one tensor each, or every rank's under
    DDP (a collective call). On a GPU, dropout draws from the GPU's generator."""
    state = torch.get_rng_state()
    gpu = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
    if ctx.active:
        return distributed.gather_objects(ctx, state), distributed.gather_objects(ctx, gpu)
    return state, gpu


def _restore_rng(saved: torch.Tensor | list[torch.Tensor] | None, saved_gpu: Any,
                 ctx: distributed.Context, cfg: TrainConfig, pos: Position,
                 dev: torch.device) -> None:
    """Each rank's generators as they were at the checkpoint; if the world size changed, a
    fresh seed from (seed, epoch, step, rank): the run goes on, its dropout masks differ."""
    if isinstance(saved, list) and len(saved) == ctx.world:
        torch.set_rng_state(saved[ctx.rank])
        saved_gpu = saved_gpu[ctx.rank] if isinstance(saved_gpu, list) else None
    elif isinstance(saved, torch.Tensor) and ctx.world == 1:
        torch.set_rng_state(saved)
    else:
        log.warning("resuming mid-epoch under a different number of processes: dropout masks "
                    "are reseeded, so the run will not be bitwise the uninterrupted one")
        torch.manual_seed(epoch_seed(cfg.seed, pos.epoch) + 31 * pos.step + 7_777_777 * ctx.rank)
        return
    if dev.type == "cuda" and isinstance(saved_gpu, torch.Tensor):
        torch.cuda.set_rng_state(saved_gpu, dev)


@dataclass(frozen=True)
class Loop:
    """How the loop runs, not what it computes: none of these change the trained model."""

    checkpoint_every: int | None = 100
    sync_every: int = 1
    compile: str | None = None  # a torch.compile mode, or None: eager


def _train(cfg: TrainConfig, data: str, out: str | Path | None, data_dir: str | None,
           dev: torch.device, resume: bool, progress: bool, stop_after: int | None,
           loop: Loop, ctx: distributed.Context) -> RunResult | None:
    t0 = time.perf_counter()
    out = Path(out) if out else Path("runs") / f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if ctx.active:
        out = Path(distributed.gather_objects(ctx, str(out))[0])  # rank 0's timestamp
    distributed.on_main(ctx, lambda: check_run_dir(out, resume), RunError)
    if resume:  # a run killed before its first checkpoint starts again; rank 0 decides
        resume = not distributed.gather_objects(ctx, killed_before_first_checkpoint(out))[0]
    ckpt_path = out / "checkpoints" / "last.pt"
    ckpt = load_latest_checkpoint(ckpt_path.parent) if resume else None
    if ckpt is not None:
        saved = TrainConfig.from_dict(ckpt["train_config"])
        if saved != cfg:
            diffs = [k for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v]
            raise RunError(f"--resume: the flags differ from the run's saved config in "
                           f"{', '.join(diffs)}; resume without changing them")
    if cfg.batch_size % ctx.world:
        raise RunError(f"--batch-size {cfg.batch_size} (the global batch) must be divisible by "
                       f"the {ctx.world} processes")
    torch.manual_seed(cfg.seed)
    dataset = load_data(cfg, data, data_dir, dev, ctx)
    if cfg.model.num_classes != len(dataset.classes):
        cfg = cfg.replace(num_classes=len(dataset.classes))
    if dataset.train.num_images < cfg.batch_size:
        raise RunError(f"--batch-size {cfg.batch_size} is larger than the "
                       f"{dataset.train.num_images} training images; lower it")
    model = GoogLeNet(cfg.model)
    if cfg.init is not None and ckpt is None:
        init_from_torchvision(model, cfg)
    distributed.on_main(ctx, lambda: create_run_dir(out, model), RunError)
    if ctx.main:
        log.info("config: %s", json.dumps(cfg.to_dict()))
        _write_json(out / "config.json", {"train": cfg.to_dict(), "data": data,
                                          "processes": ctx.world})

    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = sync_batch_norm(model, cfg, ctx, dev)
    forward: nn.Module = TrainForward(model)
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            forward, device_ids=[dev.index] if dev.type == "cuda" else None)
    if loop.compile:
        forward = torch.compile(forward, mode=None if loop.compile == "default" else loop.compile)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = dataset.train.num_batches
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    average = make_average(model, cfg)
    average_from = int(cfg.average_start * cfg.epochs * steps_per_epoch)
    rows: list[dict[str, Any]] = []
    pos, rng_state, gpu_rng_state, data_state = Position(), None, None, None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if average is not None:
            average.load_state_dict(ckpt["average"])
        rows = ckpt["metrics"]
        if "position" in ckpt:
            pos = Position(**ckpt["position"])
            rng_state, data_state = ckpt["rng"], ckpt["data_rng"]
            gpu_rng_state = ckpt.get("gpu_rng")
        else:  # format 1: epoch-end checkpoints only
            pos = Position(epoch=ckpt["epoch"], step=ckpt["step"],
                           wall_s=rows[-1]["wall_s"] if rows else 0.0)
        log.info("resuming %s at epoch %d, step %d", out, pos.epoch + 1, pos.step)
    wall_before = pos.wall_s

    def save(generator: torch.Generator | None) -> None:
        """A checkpoint (rank 0 writes it; every rank must call this: it gathers RNG states)."""
        rng, gpu_rng = _rng_states(ctx, dev)
        if not ctx.main:
            return
        pos.wall_s = round(wall_before + time.perf_counter() - t0, 2)
        atomic_save({"format": CHECKPOINT_FORMAT, "train_config": cfg.to_dict(),
                     "epoch": pos.epoch, "step": pos.step, "position": asdict(pos),
                     "metrics": rows, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "average": average.state_dict() if average is not None else None,
                     "rng": rng, "gpu_rng": gpu_rng, "processes": ctx.world,
                     "data_rng": generator.get_state() if generator is not None else None,
                     "classes": dataset.classes}, ckpt_path,
                    keep_previous=ckpt_path.with_name("previous.pt"))

    def averaged_or_model() -> nn.Module:
        """What is evaluated and exported: the parameter average once averaging has begun."""
        return average.module if average is not None and pos.step > average_from else model

    result = None
    with _stop_on_signals() as stop:
        if ckpt is None:
            save(None)  # so that a run killed before its first interval can be resumed
        for epoch in range(pos.epoch, cfg.epochs):
            if pos.batch == 0:
                # Dropout masks: rank 0's stream is the single-process one.
                torch.manual_seed(epoch_seed(cfg.seed, epoch) + 1 + 7_777_777 * ctx.rank)
                pos.loss_sum, pos.seen, pos.train_s = 0.0, 0, 0.0
                pos.lr = optimizer.param_groups[0]["lr"]
                current = dataset.train.epoch(epoch)
            else:  # mid-epoch: the random states of the moment the checkpoint was taken
                _restore_rng(rng_state, gpu_rng_state, ctx, cfg, pos, dev)
                current = dataset.train.epoch(epoch, pos.batch, data_state)

            def after_step(sync: Callable[[], None], poll: bool, current: Epoch = current
                           ) -> None:
                every = loop.checkpoint_every
                due = every is not None and pos.step % every == 0
                # Every rank polls at the same steps (the all-reduce is a collective).
                stopping = (poll or due) and distributed.any_rank(ctx, stop.signum is not None)
                if due or stopping:
                    sync()
                    save(current.generator)
                if stopping:
                    raise Interrupted(stop.signum or signal.SIGTERM, out, pos)

            bar = _progress(progress, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}",
                            pos.batch)
            train_one_epoch(model, current.batches, optimizer, scheduler, cfg, dev, average,
                            average_from, pos, after_step, bar, forward, ctx, loop.sync_every)
            if bar is not None:
                bar.close()
            result = evaluate(averaged_or_model(), dataset.val.epoch(0).batches,
                              len(dataset.classes), cfg, dev, ctx)
            row = {"epoch": epoch + 1,
                   "wall_s": round(wall_before + time.perf_counter() - t0, 2),
                   "train_loss": round(pos.loss_sum / max(pos.seen, 1), 6),
                   "val_loss": round(result["loss"], 6),
                   "val_top1": round(result["top1"], 4), "val_top5": round(result["top5"], 4),
                   "lr": pos.lr, "images_per_s": round(pos.seen / max(pos.train_s, 1e-9), 1)}
            rows.append(row)
            skipped = distributed.gather_objects(
                ctx, (dataset.train.skipped, dataset.val.skipped))
            for train_skips, val_skips in skipped:
                dataset.train.skipped.update(train_skips)
                dataset.val.skipped.update(val_skips)
            if ctx.main:
                log.info("epoch %d/%d  train loss %.4f  %s loss %.4f  top-1 %.2f%%  top-5 "
                         "%.2f%%  %.0f img/s", epoch + 1, cfg.epochs, row["train_loss"],
                         dataset.val_name, result["loss"], result["top1"], result["top5"],
                         row["images_per_s"])
                _write_metrics(out / "metrics.csv", rows)
                _write_skipped(out, dataset)
            pos.epoch, pos.batch = epoch + 1, 0
            save(None)
            if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < cfg.epochs:
                log.info("stopping after epoch %d; continue with --resume --out %s", epoch + 1,
                         out)
                return None

    if result is None:  # resumed a finished run: evaluate what it saved
        result = evaluate(averaged_or_model(), dataset.val.epoch(0).batches,
                          len(dataset.classes), cfg, dev, ctx)
    final = averaged_or_model()
    model_path = out / "model.safetensors"
    plots = [out / "curves.png", out / "confusion.png"]
    if ctx.main:
        model_path = export_model(out, final.cpu(), dataset.classes, dataset.preprocessing,
                                  {"recipe": cfg.recipe, "data": data})
        plots = write_plots(out, rows, result["confusion"], dataset.classes, dataset.val_name)
    per_class = (result["confusion"].diag().float()
                 / result["confusion"].sum(1).clamp(min=1).float() * 100).tolist()
    results = {f"{dataset.val_name}_top1": round(result["top1"], 4),
               f"{dataset.val_name}_top5": round(result["top5"], 4),
               f"{dataset.val_name}_loss": round(result["loss"], 6),
               "per_class_top1": dict(zip(dataset.classes, (round(p, 2) for p in per_class),
                                          strict=True)),
               "wall_s": round(wall_before + time.perf_counter() - t0, 2),
               "epochs": cfg.epochs, "recipe": cfg.recipe, "data": data,
               "model": str(model_path), "run_dir": str(out),
               "plots": [str(p) for p in plots],
               "device": str(dev), "threads": torch.get_num_threads(), "processes": ctx.world}
    if ctx.main:
        _write_json(out / "results.json", results)
    return RunResult(out, results, plots)


def _write_skipped(out: Path, dataset: Data) -> None:
    """`skipped_files.json`: the files that could not be decoded, when there are any."""
    skipped = {"train": dataset.train.skipped, dataset.val_name: dataset.val.skipped}
    count = sum(map(len, skipped.values()))
    if count:
        _write_json(out / "skipped_files.json", {"count": count, "files": skipped})


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    _replace_atomically(path, write)


def _progress(enabled: bool, total: int, desc: str, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True, mininterval=1.0)
