"""Where the arithmetic runs: `--device auto|cpu|cuda` for every command, and the few helpers
that keep a CUDA path free of hidden host synchronisations.

The rule the rest of the library follows: a tensor it creates takes its device from the model
or the batch it works with, never the default one.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

from inception.config import ConfigError

__all__ = ["DEVICE_CHOICES", "CpuShare", "DeviceError", "autocast", "cpu_cores", "cpu_threads",
           "resolve_device", "synchronize", "to_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")  # `--device` of every command


class DeviceError(ConfigError):
    """A `--device` that this machine does not have; the message says what to use instead."""


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto`: the first CUDA GPU when there is one, else the CPU. `cuda` on a machine without a
    GPU is refused with a one-line error instead of a traceback at the first tensor."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"--device {name}: not a device; use auto, cpu or cuda") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA device is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {name}: only cpu and cuda are supported")
    return device


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`. To a GPU it goes through pinned memory with `non_blocking`:
    a copy from pageable memory may wait for the GPU's queue to drain, which would put a host
    synchronisation into every training step (CUDA's documented behaviour for pageable
    transfers). The pinned block comes from PyTorch's caching host allocator, which keeps it
    until the copy has finished."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work (a no-op on the CPU): for timing, never inside a loop."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when asked, else nothing."""
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds so far of the cores this process may run on, of this process); None
    where Linux's /proc/stat cannot be read. Only the `cpuN` lines of those cores count: in a
    container pinned to a few cores of a large host the rest of the host is not our business."""
    mine = {f"cpu{i}" for i in _affinity()}
    busy = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name in mine:
                    fields = [int(v) for v in values]
                    # user nice system idle iowait irq softirq steal ...: idle, iowait not busy
                    busy += sum(fields[:3]) + sum(fields[5:8])
    except (OSError, ValueError):
        return None
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _affinity() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(_affinity())


class CpuShare:
    """How much of the CPU other processes take, measured between calls of `others()`.

    torch runs each operation on all its threads and waits for the slowest. When another
    process keeps one of the cores busy, every operation waits for the thread that shares that
    core, and a training step slows far more than in proportion to the core lost
    (`benchmarks/contention.py`). So training starts with a thread per free core
    (`cpu_threads`), and the progress bar says when others take cores later on."""

    def __init__(self) -> None:
        self._last = _cpu_seconds()
        self._at = self.started = time.monotonic()

    def others(self) -> float | None:
        """Cores' worth of CPU that other processes used since the last call (or since this
        object was made); None where it cannot be measured."""
        now, at = _cpu_seconds(), time.monotonic()
        last, self._last, then, self._at = self._last, now, self._at, at
        if now is None or last is None or at <= then:
            return None
        busy, own = now[0] - last[0], now[1] - last[1]
        return min(float(cpu_cores()), max(0.0, (busy - own) / (at - then)))


def cpu_threads(sample_s: float = 0.3) -> tuple[int, float | None]:
    """(threads, cores busy elsewhere): one torch thread for each core that other processes
    left free over the next `sample_s` seconds, at least one and at most torch's default; the
    default itself where /proc/stat cannot be read."""
    share = CpuShare()
    time.sleep(sample_s)
    others = share.others()
    default = torch.get_num_threads()
    if others is None:
        return default, None
    free = cpu_cores() - others
    return max(1, min(default, round(free))), others
