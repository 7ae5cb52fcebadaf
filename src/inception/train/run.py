"""A training run, start to finish: `train(cfg)` writes a run directory (`inception.train.rundir`).

A checkpoint is written before the first step, every `checkpoint_every` steps and at the end of
every epoch; it holds the position within the epoch and every random state, so a run resumed
from any of them (`resume=True`) continues exactly as if it had not stopped. Every epoch reseeds
the global generator (dropout) from (seed, epoch), and the data's own generator likewise
(`inception.train.loaders`). SIGINT and SIGTERM checkpoint and stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inception import distributed
from inception.config import ConfigError
from inception.data import recorded_path
from inception.devices import resolve_device
from inception.files import write_json
from inception.metrics import EvalResult, per_class_top1
from inception.model import GoogLeNet
from inception.plots import write_plots
from inception.provenance import provenance
from inception.train.checkpoint import Checkpointer, TrainState, load_latest_checkpoint, restore_rng
from inception.train.config import COMPILE_MODES, RunError, TrainConfig
from inception.train.engine import Position, Trainer, TrainForward, evaluate, progress_bar
from inception.train.loaders import Data, EvalSplit, epoch_seed, load_data
from inception.train.optim import make_average, make_optimizer, make_scheduler
from inception.train.probes import probe_gradients
from inception.train.rundir import (
    check_run_dir,
    create_run_dir,
    export_model,
    finished_results,
    killed_before_first_checkpoint,
    upgrade_metrics,
    write_metrics,
    write_skipped,
)

log = logging.getLogger(__name__)

GPU_SYNC_EVERY = 50  # steps between the loop's reads from a GPU (`train`'s `sync_every`)


@dataclass(frozen=True)
class Loop:
    """How the loop runs, not what it computes: none of these change the trained model."""

    checkpoint_every: int | None = 100
    sync_every: int = 1
    compile: str | None = None  # a torch.compile mode, or None: eager


def train(cfg: TrainConfig, data: str | Path = "fashion-mnist", out: str | Path | None = None,
          data_dir: str | None = None, device: str = "auto", resume: bool = False,
          progress: bool = True, stop_after: int | None = None,
          checkpoint_every: int | None = 100, sync_every: int | None = None,
          compile: str | None = None) -> RunResult | None:
    """Train a GoogLeNet as `cfg` says and write the run directory. See the module docstring.

    A checkpoint is written before the first step, every `checkpoint_every` steps (None: only
    at epoch ends) and at the end of every epoch; it holds the position within the epoch and
    every random state, so `resume=True` continues from any of them exactly as if the run had
    not stopped; on a finished run it changes nothing (`RunResult.already_finished`). SIGINT/
    SIGTERM save one and raise `Interrupted`. `stop_after=N` ends the session after epoch N
    (time-sliced training); it returns None then. `data`: a folder is recorded absolute.

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
    data = recorded_path(data)  # "fashion-mnist" or a folder's absolute path: config.json's
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


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the run saved a checkpoint at `position` and stopped."""

    def __init__(self, signum: int, out: Path, position: Position) -> None:
        self.signal_name = name = signal.Signals(signum).name
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


@dataclass
class RunResult:
    """A finished run's directory, results, plots; `already_finished`: resumed, it did nothing."""

    run_dir: Path
    results: dict[str, Any]
    plots: list[Path] = field(default_factory=list)
    already_finished: bool = False


def _open_run(cfg: TrainConfig, out: str | Path | None, resume: bool,
              ctx: distributed.Context) -> tuple[Path, dict[str, Any] | None]:
    """(the run directory, the checkpoint to resume from or None), refusing to write into
    someone else's results or to resume with changed flags."""
    out = Path(out) if out else Path("runs") / f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if ctx.active:
        out = Path(distributed.gather_objects(ctx, str(out))[0])  # rank 0's timestamp
    distributed.on_main(ctx, lambda: check_run_dir(out, resume), RunError)
    if resume:  # a run killed before its first checkpoint starts again; rank 0 decides
        resume = not distributed.gather_objects(ctx, killed_before_first_checkpoint(out))[0]
    ckpt = load_latest_checkpoint(out / "checkpoints") if resume else None
    if ckpt is not None:
        saved = TrainConfig.from_dict(ckpt["train_config"])
        if saved != cfg:
            raise RunError(f"--resume: the flags differ from the run's saved config in "
                           f"{', '.join(cfg.differing_fields(saved))}; resume without changing "
                           "them")
    if cfg.batch_size % ctx.world:
        raise RunError(f"--batch-size {cfg.batch_size} (the global batch) must be divisible by "
                       f"the {ctx.world} processes")
    return out, ckpt


def _start(cfg: TrainConfig, data: str, data_dir: str | None, out: Path, dev: torch.device,
           ctx: distributed.Context, fresh: bool) -> tuple[TrainConfig, Data, GoogLeNet]:
    """(the config with the data's class count, the data, the initialised model); creates the
    run directory and its `config.json` once all of them are known to work."""
    torch.manual_seed(cfg.seed)
    dataset = load_data(cfg, data, data_dir, dev, ctx)
    if cfg.model.num_classes != len(dataset.classes):
        cfg = cfg.replace(num_classes=len(dataset.classes))
    dataset.train.check(cfg.batch_size, say=ctx.main)
    model = GoogLeNet(cfg.model, init_seed=cfg.seed if cfg.init_by_name else None)
    if cfg.init is not None and fresh:
        init_from_torchvision(model, cfg)
    distributed.on_main(ctx, lambda: create_run_dir(out, model), RunError)
    if ctx.main:
        log.info("config: %s", json.dumps(cfg.to_dict()))
        write_json(out / "config.json", {"train": cfg.to_dict(), "data": data,
                                         "processes": ctx.world,
                                         "threads": torch.get_num_threads()})
    return cfg, dataset, model


def _trainer(model: GoogLeNet, cfg: TrainConfig, steps_per_epoch: int, dev: torch.device,
             ctx: distributed.Context, loop: Loop) -> Trainer:
    """The model on `dev` (channels-last, SyncBatchNorm) with its optimizer, schedule, average
    and training forward (under DDP and/or `torch.compile` as asked)."""
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
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    return Trainer(model, optimizer, scheduler, cfg, dev, make_average(model, cfg),
                   int(cfg.average_start * cfg.epochs * steps_per_epoch), forward, ctx,
                   loop.sync_every)


class _Run:
    """One session of a run: its epochs from the saved position on, checkpointed, then the
    exported model, plots and results."""

    def __init__(self, cfg: TrainConfig, data: str, out: Path, dataset: Data, trainer: Trainer,
                 ckpt: dict[str, Any] | None, loop: Loop, t0: float) -> None:
        self.cfg, self.data, self.out, self.dataset, self.trainer = cfg, data, out, dataset, trainer
        self.ctx, self.dev, self.loop, self.t0 = trainer.ctx, trainer.device, loop, t0
        self.state = TrainState(trainer.model, trainer.optimizer, trainer.scheduler,
                                trainer.average)
        if ckpt is not None:
            self.state.load_state_dict(ckpt)
            self.state.metrics = upgrade_metrics(self.state.metrics, dataset.every_epoch.name)
            pos = self.state.position
            log.info("resuming %s at epoch %d, step %d", out, pos.epoch + 1, pos.step)
        self.wall_before = self.state.position.wall_s
        self.checkpointer = Checkpointer(out / "checkpoints" / "last.pt", cfg, dataset.classes,
                                         self.dev, self.ctx)

    def wall(self) -> float:
        return round(self.wall_before + time.perf_counter() - self.t0, 2)

    def save(self, generator: torch.Generator | None) -> None:
        if self.ctx.main:
            self.state.position.wall_s = self.wall()
        self.checkpointer.save(self.state, generator)

    def evaluate(self, split: EvalSplit | None = None) -> EvalResult:
        """The model's (or the average's) evaluation on `split`, by default the split evaluated
        every epoch: what `inception eval RUN --crops 1` measures on it."""
        model = self.trainer.averaged_or_model(self.state.position)
        return evaluate(model, split or self.dataset.every_epoch, self.dataset.preprocessing,
                        self.dataset.classes, self.cfg, self.dev, self.ctx)

    def epochs(self, stop: _StopFlag, fresh: bool, progress: bool,
               stop_after: int | None) -> EvalResult | None:
        """The remaining epochs; the last one's evaluation, or None when `stop_after` ends the
        session early (or no epoch was left)."""
        if fresh:
            self.save(None)  # so that a run killed before its first interval can be resumed
        result = None
        for epoch in range(self.state.position.epoch, self.cfg.epochs):
            result = self.epoch(epoch, stop, progress)
            if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < self.cfg.epochs:
                log.info("stopping after epoch %d; continue with --resume --out %s", epoch + 1,
                         self.out)
                raise _StoppedAfter
        return result

    def epoch(self, epoch: int, stop: _StopFlag, progress: bool) -> EvalResult:
        """Train epoch `epoch` from the saved position, evaluate, record and checkpoint it."""
        cfg, ctx, pos = self.cfg, self.ctx, self.state.position
        if pos.batch == 0:
            # Dropout masks: rank 0's stream is the single-process one.
            torch.manual_seed(epoch_seed(cfg.seed, epoch) + 1 + 7_777_777 * ctx.rank)
            pos.loss_sum, pos.seen, pos.train_s = 0.0, 0, 0.0
            pos.grad_norm_sum, pos.grad_norm_steps = 0.0, 0
            pos.lr = self.trainer.optimizer.param_groups[0]["lr"]
            current = self.dataset.train.epoch(epoch)
        else:  # mid-epoch: the random states of the moment the checkpoint was taken
            restore_rng(self.state.rng, self.state.gpu_rng, ctx, cfg, pos, self.dev)
            current = self.dataset.train.epoch(epoch, pos.batch, self.state.data_rng)
        bar = progress_bar(progress, self.dataset.train.num_batches,
                           f"epoch {epoch + 1}/{cfg.epochs}", pos.batch)
        every = self.loop.checkpoint_every
        for poll in self.trainer.steps(current.batches, pos, bar):
            due = every is not None and pos.step % every == 0
            # Every rank polls at the same steps (the all-reduce is a collective).
            stopping = (poll or due) and distributed.any_rank(ctx, stop.signum is not None)
            if due or stopping:
                self.trainer.sync(pos)
                self.save(current.generator)
            if stopping:
                raise Interrupted(stop.signum or signal.SIGTERM, self.out, pos)
        if bar is not None:
            bar.close()
        result = self.evaluate()
        self.record(epoch, result)
        pos.epoch, pos.batch = epoch + 1, 0
        self.save(None)
        return result

    def record(self, epoch: int, result: EvalResult) -> None:
        """The epoch's row of `metrics.csv` (its evaluation columns named for `result.split`),
        its log line and the files skipped so far."""
        pos, dataset, split = self.state.position, self.dataset, result.split
        row = {"epoch": epoch + 1, "wall_s": self.wall(),
               "train_loss": round(pos.loss_sum / max(pos.seen, 1), 6),
               f"{split}_loss": round(result.loss, 6), f"{split}_top1": round(result.top1, 4),
               f"{split}_top5": round(result.top5, 4),
               "lr": pos.lr, "images_per_s": round(pos.seen / max(pos.train_s, 1e-9), 1)}
        if self.cfg.watch_gradients:  # the step's gradient, then the main loss's alone
            row["lower_grad_norm"] = round(pos.grad_norm_sum / max(pos.grad_norm_steps, 1), 6)
            row.update(probe_gradients(self.trainer.model, dataset.every_epoch.images,
                                       dataset.preprocessing, self.cfg.label_smoothing))
        self.state.metrics.append(row)
        evaluated = dataset.every_epoch
        skipped = distributed.gather_objects(self.ctx, (dataset.train.skipped,
                                                        evaluated.skipped))
        for train_skips, eval_skips in skipped:
            dataset.train.skipped.update(train_skips)
            evaluated.skipped.update(eval_skips)
        if self.ctx.main:
            log.info("epoch %d/%d  train loss %.4f  %s loss %.4f  top-1 %.2f%%  top-5 "
                     "%.2f%%  %.0f img/s", epoch + 1, self.cfg.epochs, row["train_loss"],
                     split, result.loss, result.top1, result.top5, row["images_per_s"])
            write_metrics(self.out / "metrics.csv", self.state.metrics, split)
            write_skipped(self.out, dataset)

    def finish(self, result: EvalResult | None) -> RunResult:
        """Export the (averaged) model, draw the plots and write `results.json`; with a held-out
        validation split, the test set is evaluated here, once."""
        if result is None:  # resumed a finished run: evaluate what it saved
            result = self.evaluate()
        test = self.evaluate(self.dataset.test) if self.dataset.test is not None else None
        out, dataset = self.out, self.dataset
        final = self.trainer.averaged_or_model(self.state.position)
        model_path = out / "model.safetensors"
        plots = [out / "curves.png", out / "confusion.png"]
        # Per-class accuracy and confusion matrix: of the test set when a split was held out.
        headline = test if test is not None else result
        if self.ctx.main:
            model_path = export_model(out, final.cpu(), dataset.classes, dataset.preprocessing,
                                      {"recipe": self.cfg.recipe, "data": self.data,
                                       "precision": self.cfg.precision})
            write_metrics(out / "metrics.csv", self.state.metrics, result.split)
            plots = write_plots(out, self.state.metrics, result.split, headline)
        per_class = per_class_top1(headline.confusion)
        results = {**result.named_figures(),
                   "per_class_top1": dict(zip(dataset.classes, (round(p, 2) for p in per_class),
                                              strict=True)),
                   "wall_s": self.wall(), "epochs": self.cfg.epochs, "recipe": self.cfg.recipe,
                   "data": self.data, "model": str(model_path), "run_dir": str(out),
                   **dataset.train.per_epoch(),
                   "plots": [str(p) for p in plots], "device": str(self.dev),
                   "threads": torch.get_num_threads(), "processes": self.ctx.world,
                   **(test.named_figures() if test is not None else {}),
                   "provenance": provenance(self.dev)}
        if self.ctx.main:
            write_json(out / "results.json", results)
        return RunResult(out, results, plots)


class _StoppedAfter(Exception):
    """`stop_after` ended the session at an epoch boundary (checkpointed)."""


def _train(cfg: TrainConfig, data: str, out: str | Path | None, data_dir: str | None,
           dev: torch.device, resume: bool, progress: bool, stop_after: int | None,
           loop: Loop, ctx: distributed.Context) -> RunResult | None:
    t0 = time.perf_counter()
    out, ckpt = _open_run(cfg, out, resume, ctx)
    done = distributed.gather_objects(ctx, finished_results(out, ckpt) if ctx.main else None)[0]
    if done is not None:  # resumed a finished run: nothing to do
        return RunResult(out, done, [Path(p) for p in done.get("plots", [])], True)
    cfg, dataset, model = _start(cfg, data, data_dir, out, dev, ctx, fresh=ckpt is None)
    trainer = _trainer(model, cfg, dataset.train.num_batches, dev, ctx, loop)
    run = _Run(cfg, data, out, dataset, trainer, ckpt, loop, t0)
    with _stop_on_signals() as stop:
        try:
            result = run.epochs(stop, ckpt is None, progress, stop_after)
        except _StoppedAfter:
            return None
    return run.finish(result)
