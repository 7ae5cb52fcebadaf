"""Checkpoints: everything needed to continue a run exactly, at any step.

`TrainState` is the training's own state as one `state_dict()` / `load_state_dict()` pair:
model, optimizer, schedule, parameter average, the position in the run (epoch, batch, step,
partial epoch sums), the metrics so far and every random state (CPU, GPU, the epoch's batch
generator). A checkpoint is that plus the run's config and class names, saved atomically with
the previous one kept (`previous.pt`) and loaded with `weights_only=True`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inception import distributed
from inception.train.config import RunError, TrainConfig
from inception.train.engine import Position
from inception.train.loaders import epoch_seed
from inception.train.optim import Average
from inception.train.rundir import atomic_save

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 1: epoch-end checkpoints (still loaded); 2: any step


@dataclass
class TrainState:
    """The state a run continues from. `rng` is the CPU generator's state (every rank's under
    DDP), `gpu_rng` the GPU's, `data_rng` the current epoch's batch generator's (mid-epoch);
    they are what `Checkpointer.save` captured or `load_state_dict` read."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    average: Average | None = None
    position: Position = field(default_factory=Position)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    rng: Any = None
    gpu_rng: Any = None
    data_rng: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        pos = self.position
        return {"epoch": pos.epoch, "step": pos.step, "position": asdict(pos),
                "metrics": self.metrics, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "average": self.average.state_dict() if self.average is not None else None,
                "rng": self.rng, "gpu_rng": self.gpu_rng, "data_rng": self.data_rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint of either format (format 1 saved at epoch ends only)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.metrics = state["metrics"]
        if "position" in state:
            self.position = Position(**state["position"])
            self.rng, self.data_rng = state["rng"], state["data_rng"]
            self.gpu_rng = state.get("gpu_rng")
        else:
            wall_s = self.metrics[-1]["wall_s"] if self.metrics else 0.0
            self.position = Position(epoch=state["epoch"], step=state["step"], wall_s=wall_s)


@dataclass
class Checkpointer:
    """Writes `path` (`checkpoints/last.pt`) for the run: rank 0 writes, every rank calls `save`
    (it gathers the ranks' random states)."""

    path: Path
    cfg: TrainConfig
    classes: list[str]
    device: torch.device
    ctx: distributed.Context = distributed.SINGLE

    def save(self, state: TrainState, generator: torch.Generator | None) -> None:
        """A checkpoint of `state` now, `generator` being the current epoch's batch generator
        (None at an epoch boundary)."""
        state.rng, state.gpu_rng = rng_states(self.ctx, self.device)
        if not self.ctx.main:
            return
        state.data_rng = generator.get_state() if generator is not None else None
        atomic_save({"format": CHECKPOINT_FORMAT, "train_config": self.cfg.to_dict(),
                     **state.state_dict(), "processes": self.ctx.world,
                     "classes": self.classes},
                    self.path, keep_previous=self.path.with_name("previous.pt"))


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


def rng_states(ctx: distributed.Context, dev: torch.device
                ) -> tuple[torch.Tensor | list[torch.Tensor], Any]:
    """(the CPU generator's state, the GPU's or None): one tensor each, or every rank's under
    DDP (a collective call). On a GPU, dropout draws from the GPU's generator."""
    state = torch.get_rng_state()
    gpu = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
    if ctx.active:
        return distributed.gather_objects(ctx, state), distributed.gather_objects(ctx, gpu)
    return state, gpu


def restore_rng(saved: torch.Tensor | list[torch.Tensor] | None, saved_gpu: Any,
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
