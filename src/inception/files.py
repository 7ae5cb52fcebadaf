"""Files written atomically: to a temporary name, fsynced, then renamed over the old one, so that
a crash at any moment leaves the previous version whole. Run directories (`inception.train.rundir`)
and model directories (`inception.weights.save_model`) are written this way."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, write: Callable[[Any], None], mode: str = "w",
                       keep_previous: Path | None = None) -> None:
    """Write through `write(file)` to a temporary file, fsync, then rename over `path`: a crash
    mid-write leaves the previous file intact. With `keep_previous`, the file being replaced is
    first renamed there, so the last good version survives whatever happens to the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if keep_previous is not None and path.exists():
        os.replace(path, keep_previous)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class ReplaceError(ValueError):
    """A file holds other results than those that would replace it; the message says which."""


def check_replace(path: Path, identity: dict[str, Any]) -> None:
    """Refuse (`ReplaceError`) to replace the JSON object at `path` with results of another
    `identity`: a key of it that the file records with another value, or a file that is no JSON
    object. Nothing at `path`, or the same identity as far as the file records it: no error."""
    try:
        existing = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        existing = None
    if not isinstance(existing, dict):
        raise ReplaceError(f"{path} exists and holds no results; pass --force to replace it or "
                           "--out DIR to write elsewhere")
    for key, value in identity.items():
        if key in existing and existing[key] != value:
            raise ReplaceError(f"{path} holds other results ({key} {existing[key]}, these "
                               f"{value}); pass --force to replace them or --out DIR to keep both")


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON, atomically."""
    replace_atomically(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"))


def write_directory(out: Path, write: Callable[[Path], None]) -> None:
    """Fill the folder `out` through `write(folder)`. A new folder is written beside it under a
    temporary name and renamed into place, so a failed write leaves no half-written folder; an
    existing one is written into (each file of it atomically, by `write`)."""
    import shutil

    target = out if out.is_dir() else out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        target.mkdir(parents=True, exist_ok=True)
        write(target)
        if target != out:
            os.replace(target, out)
            fsync_dir(out.parent)
    except BaseException:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
        raise
