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

`benchmarks/results/README.md` describes the fields. `machine`, `versions` and `git` are
`inception.provenance`'s, the record every run and evaluation of the library stores too, so a
benchmark and a run on the same machine describe it in the same words.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from inception import provenance
from inception.provenance import CPU_FLAGS_OF_INTEREST, PACKAGES

__all__ = ["CPU_FLAGS_OF_INTEREST", "PACKAGES", "Recorder", "add_json_out_argument",
           "git_state", "machine", "versions"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
FORMAT = 1


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and flags, cores, memory, the first GPU
    when CUDA has one (`inception.provenance.machine`)."""
    return provenance.machine()


def versions() -> dict[str, str | None]:
    """Python's version and each of `PACKAGES`' (`inception.provenance.versions`)."""
    return provenance.versions()


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit checked out at `root` (this checkout by default) and whether tracked files
    differ from it (`inception.provenance.git_state`)."""
    return provenance.git_state(root)


def add_json_out_argument(parser: argparse.ArgumentParser) -> None:
    """`--json-out PATH`, the one flag every benchmark script shares for its record."""
    parser.add_argument("--json-out", default=None, metavar="PATH",
                        help="write the run's JSON record here (default: benchmarks/results/"
                             "<script>-<UTC time>.json)")


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
