"""What made a result: the record stored beside every run's and evaluation's figures.

A number in `results.json` or an `eval-*.json` is only as useful as what is known of where it
came from: the code (package version and git commit), the libraries (torch, torchvision), the
command line and the machine (CPU model and cores, the GPU when CUDA ran it). `provenance` is
that record; `inception.train` and `inception eval` store it under "provenance", and the
benchmark scripts' JSON records (`benchmarks/_record.py`) take their machine, versions and git
fields from the same functions here.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from inception.devices import cpu_cores

# The flags that change which kernels torch, oneDNN and ONNX Runtime pick on x86 and Arm.
CPU_FLAGS_OF_INTEREST = (
    "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "bf16", "i8mm",
    "sve", "sve2",
)
PACKAGES = ("torch", "torchvision", "inception", "onnxruntime", "openvino", "nncf")
PACKAGE_DIR = Path(__file__).resolve().parent


def _cpuinfo() -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _lscpu_model() -> str | None:
    """lscpu's "Model name" (Arm machines' /proc/cpuinfo has none)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpu_name(device: torch.device | None) -> str | None:
    """The name of the CUDA device that ran the work; for no device given, the first CUDA
    device when there is one; None for a CPU."""
    if device is not None:
        device = torch.device(device)
        if device.type != "cuda":
            return None
        return torch.cuda.get_device_name(device)
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine(device: torch.device | None = None) -> dict[str, Any]:
    """CPU model and flags, the cores there are and those this process may use, memory, the GPU
    (`_gpu_name`: the one `device` names, if CUDA) and the operating system."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {
        "cpu_model": info.get("model name") or _lscpu_model() or platform.processor() or None,
        "architecture": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cores_usable": cpu_cores(),
        "cpu_flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flags],
        "memory_gib": _memory_gib(),
        "gpu": _gpu_name(device),
        "os": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    """Python's version and each package's (None where it is not installed). An imported
    package's own `__version__` comes first: it names the build (torch's `+cu130`), and for
    inception run from a checkout it is the checkout's version where installed metadata may be
    older. A package not imported yet (onnxruntime) is read from its metadata, not imported."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = None
        found[name] = None if version is None else str(version)
    return found


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(root: Path | None = None) -> dict[str, Any]:
    """The commit checked out at `root` and whether tracked files differ from it (`dirty`, with
    the paths); all None outside a git checkout. Untracked files do not count.

    `root` None: the checkout this package is imported from, and only if the package's files
    are tracked there: an installed copy inside some other repository (a virtual environment in
    a project folder) has no commit of its own, and reports none rather than that repository's.
    """
    none = {"commit": None, "dirty": None, "changed_files": None}
    if root is None:
        root = PACKAGE_DIR
        if _git(root, "ls-files", "--error-unmatch", "__init__.py") is None:
            return none
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return none
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit.strip(), "dirty": bool(changed), "changed_files": changed}


def provenance(device: torch.device | None = None) -> dict[str, Any]:
    """What made a result, as JSON-ready values: the date (UTC), the command line (`sys.argv`),
    the package versions (`versions`), the git commit of the code (`git_state`, None when the
    package is not run from a checkout) and the machine (`machine`; `device` is the one the
    work ran on, whose GPU is named when it is a CUDA device)."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
        "argv": list(sys.argv),
        "versions": versions(),
        "git": git_state(),
        "machine": machine(device),
    }
