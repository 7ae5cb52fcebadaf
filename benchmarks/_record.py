"""The JSON record every script in this folder writes beside its printed tables.

A table in BENCHMARKS.md is only as good as what is known about where it came from, and a
printed table says nothing of the machine, the versions or the code it ran. So each script
builds a `Recorder` right after parsing its flags and calls `Recorder.write` with its figures
when it is done. One JSON file per run (`benchmarks/results/<script>-<UTC time>.json`, or the
path given to `--json-out`) then holds:

- `machine`: CPU model, the cores there are and the cores this process may use, the CPU flags
  that decide which kernels run (AVX-512, VNNI, BF16, AMX, ...), memory, GPU name under CUDA;
- `versions`: Python, torch, torchvision, inception, onnxruntime (null where not installed);
- `git`: the commit of this checkout and whether tracked files differed from it;
- `command`, `arguments` (the parsed flags), `date` (UTC), `figures` (the unrounded numbers
  behind the tables) and `output` (everything the script printed, as printed).

`benchmarks/results/README.md` describes the fields. This module has no dependency beyond the
standard library; the packages whose versions it records are imported when it writes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
FORMAT = 1

# The flags that change which kernels torch, oneDNN and ONNX Runtime pick on x86 and Arm.
CPU_FLAGS_OF_INTEREST = (
    "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "bf16", "i8mm",
    "sve", "sve2",
)
PACKAGES = ("torch", "torchvision", "inception", "onnxruntime")


def add_json_out_argument(parser: argparse.ArgumentParser) -> None:
    """`--json-out PATH`, the one flag every benchmark script shares for its record."""
    parser.add_argument("--json-out", default=None, metavar="PATH",
                        help="write the run's JSON record here (default: benchmarks/results/"
                             "<script>-<UTC time>.json)")


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


def _gpu_name() -> str | None:
    """The first CUDA device's name when torch sees one (torch is imported only here)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and flags, cores, memory, GPU."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_model": info.get("model name") or _lscpu_model() or platform.processor() or None,
        "architecture": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cores_usable": usable,
        "cpu_flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flags],
        "memory_gib": _memory_gib(),
        "gpu": _gpu_name(),
        "os": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    """Python's version and each package's (None where it is missing). A package's own
    `__version__` comes first: it names the build (torch's `+cu130`), and for inception, installed
    editable, it is the checkout's version where the installed metadata may be older."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            found[name] = None
        except AttributeError:
            try:
                found[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                found[name] = None
    return found


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit checked out at `root` and whether tracked files differ from it (`dirty`, with
    the paths); all None outside a git checkout. Untracked files (new records among them) do
    not count."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return {"commit": None, "dirty": None, "changed_files": None}
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit.strip(), "dirty": bool(changed), "changed_files": changed}


def _clean(value: Any) -> Any:
    """`value` as strict JSON: non-finite floats become null (json.dumps would write NaN, which
    is not JSON), tuples lists, keys and other objects strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


class _Tee(io.TextIOBase):
    """Writes go to the real stream and into a buffer, so the record holds what was printed."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.buffer.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:  # writes through the descriptor bypass the copy
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


class Recorder:
    """One benchmark run's record. Made right after the flags are parsed: from then on it keeps
    a copy of what the script prints (stdout stays as it was); `write` saves the JSON."""

    def __init__(self, script: str, args: argparse.Namespace | None = None,
                 argv: list[str] | None = None) -> None:
        self.script = Path(script).stem
        self.arguments = {k: v for k, v in vars(args or argparse.Namespace()).items()
                          if k != "json_out"}
        self.json_out = getattr(args, "json_out", None)
        self.argv = list(sys.argv if argv is None else argv)
        self.started = dt.datetime.now(dt.UTC)
        self._tee = _Tee(sys.stdout)
        sys.stdout = self._tee

    def record(self, figures: Mapping[str, Any]) -> dict[str, Any]:
        """The record as a JSON-ready dict (`figures` as given, non-finite numbers as null)."""
        return _clean({
            "format": FORMAT,
            "script": f"benchmarks/{self.script}.py",
            "date": self.started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *self.argv]),
            "arguments": self.arguments,
            "machine": machine(),
            "versions": versions(),
            "git": git_state(),
            "figures": figures,
            "output": self._tee.buffer.getvalue(),
        })

    def write(self, figures: Mapping[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
        """Write the record (to `--json-out`, else a new file in `results_dir`), stop copying
        stdout, and say where it went on stderr. Returns the path."""
        data = self.record(figures)
        if sys.stdout is self._tee:
            sys.stdout = self._tee.stream
        if self.json_out:
            path = Path(self.json_out)
        else:
            stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
            path = results_dir / f"{self.script}-{stamp}.json"
            n = 1
            while path.exists():  # two runs started in the same second
                path = results_dir / f"{self.script}-{stamp}-{n}.json"
                n += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        tmp.replace(path)
        print(f"record: {path}", file=sys.stderr)
        return path
