"""Data-parallel training with PyTorch's own stack: `torchrun` starts the processes, DDP averages
the gradients, gloo on CPUs and NCCL on GPUs.

    torchrun --nproc_per_node 2 -m inception train fashion-mnist --out runs/ddp

The paper trained on DistBelief with "a modest amount of model and data-parallelism"; this is its
modern equivalent. Semantics:

- `--batch-size` is the **global** batch: each of the N processes takes its 1/N slice of every
  batch, so a run gives the same batches on any number of processes, and a checkpoint resumes
  under any world size. The model is the same within float rounding only without BatchNorm
  (per-rank statistics, unless `--sync-bn`) and without dropout (per-rank masks). When you
  change the batch size, scale the learning rate with it (linear rule, Goyal et al. 2017);
  changing the number of processes needs no change.
- Rank 0 writes everything (config, metrics, checkpoints, plots, the model); losses and
  evaluation counts are summed over ranks before they are written.
- Dropout masks are drawn per rank (seeded by seed, epoch and rank).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank, world size, local rank (GPU index)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: bool = False  # a process group is set up (torchrun), even of one process

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """DDP, collectives and per-rank state are in use: under torchrun, whatever the number
        of processes (one process takes the same code path as many, NCCL included)."""
        return self.group or self.world > 1


SINGLE = Context()  # one process, no process group


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str) -> Context:
    """Join the process group that torchrun describes in the environment (gloo for the CPU,
    NCCL for CUDA); a single-process context otherwise."""
    if not launched_by_torchrun():
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return Context(dist.get_rank(), dist.get_world_size(), local, group=True)


def teardown(ctx: Context) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


def _reduce(t: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """all_reduce a CPU tensor in place; NCCL only reduces GPU tensors, so go through one."""
    if dist.get_backend() == "nccl":
        moved = t.cuda()
        dist.all_reduce(moved, op=op)
        return t.copy_(moved.cpu())
    dist.all_reduce(t, op=op)
    return t


def all_reduce_sum(ctx: Context, *values: float) -> list[float]:
    """Sums of scalars over the ranks (float64)."""
    if not ctx.active:
        return list(values)
    return _reduce(torch.tensor(values, dtype=torch.float64)).tolist()


def all_reduce_tensor(ctx: Context, t: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over the ranks, in place."""
    return _reduce(t) if ctx.active else t


def any_rank(ctx: Context, flag: bool) -> bool:
    """True on every rank if `flag` is true on any."""
    if not ctx.active:
        return flag
    return bool(_reduce(torch.tensor([int(flag)]), dist.ReduceOp.MAX).item())


def gather_objects(ctx: Context, obj: T) -> list[T]:
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def on_main(ctx: Context, fn: Callable[[], T], error: type[Exception]) -> T | None:
    """Run `fn` on rank 0 only; if it raises, every rank raises `error` with its message (so no
    rank is left waiting for the others)."""
    result, message = None, None
    if ctx.main:
        try:
            result = fn()
        except Exception as e:
            if not ctx.active:
                raise
            message = str(e)
    if ctx.active:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        raise error(message)
    return result


def shard(ctx: Context, indices: torch.Tensor, global_batch: int) -> torch.Tensor:
    """This rank's slice of each consecutive global batch of `indices` (batch sizes divisible
    by the world size; a short last batch is split as evenly as it goes)."""
    if not ctx.active:
        return indices
    parts = []
    for i in range(0, len(indices), global_batch):
        parts.append(indices[i:i + global_batch].tensor_split(ctx.world)[ctx.rank])
    return torch.cat(parts) if parts else indices
