"""Where the arithmetic runs: `--device auto|cpu|cuda` for every command, and the few helpers
that keep a CUDA path free of hidden host synchronisations.

The rule the rest of the library follows: a tensor it creates takes its device from the model
or the batch it works with, never the default one.
"""

from __future__ import annotations

import contextlib

import torch

from inception.config import ConfigError

__all__ = ["DEVICE_CHOICES", "DeviceError", "autocast", "resolve_device", "synchronize",
           "to_device"]

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
