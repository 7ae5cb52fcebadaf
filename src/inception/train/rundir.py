"""The run directory: created only when the run can start, written atomically, never clobbered.

A run directory holds `config.json` (the resolved `TrainConfig`), `metrics.csv` (one row per
epoch), `checkpoints/last.pt` and `previous.pt` (`inception.train.checkpoint`), the final
`model.safetensors` + `model.json` (model config, preprocessing, class names), `results.json`,
`skipped_files.json` when some images could not be decoded, and the PNG plots. Every file is
written to a temporary name, fsynced and renamed over the old one, so a crash at any moment
leaves the previous version whole.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inception.model import GoogLeNet
from inception.preprocessing import Preprocessing
from inception.train.config import RunError
from inception.train.loaders import Data

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "wall_s", "train_loss", "val_loss", "val_top1", "val_top5", "lr",
                  "images_per_s")


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


def write_json(path: Path, obj: Any) -> None:
    _replace_atomically(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"))


def export_model(run_dir: Path, model: GoogLeNet, classes: list[str],
                 preprocessing: Preprocessing, extra: dict[str, Any]) -> Path:
    """`model.safetensors` (inference weights, no aux heads) and `model.json` beside it."""
    from safetensors.torch import save_file

    config = model.config.replace(aux_logits=False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not k.startswith("aux.")}
    path = run_dir / "model.safetensors"
    save_file(state, str(path), metadata={"format": "inception.googlenet"})
    write_json(run_dir / "model.json", {"model": config.to_dict(),
                                        "preprocessing": preprocessing.to_dict(),
                                        "classes": classes, **extra})
    return path


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


def check_free_space(out: Path, model: nn.Module) -> None:
    """Refuse to start when `out` cannot hold two checkpoints (model, optimizer state and the
    average) plus the exported model."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    need = 8 * param_bytes + 16 * 2**20
    free = shutil.disk_usage(out).free
    if free < need:
        raise RunError(f"--out {out}: {free / 2**20:.0f} MiB free, but checkpoints need about "
                       f"{need / 2**20:.0f} MiB; free some space or choose another --out")


def write_skipped(out: Path, dataset: Data) -> None:
    """`skipped_files.json`: the files that could not be decoded, when there are any."""
    skipped = {"train": dataset.train.skipped, dataset.val_name: dataset.val.skipped}
    count = sum(map(len, skipped.values()))
    if count:
        write_json(out / "skipped_files.json", {"count": count, "files": skipped})


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """`metrics.csv`: METRIC_COLUMNS, then any further column the rows have (`lower_grad_norm`
    with `watch_gradients`)."""
    extra = [k for k in (rows[0] if rows else {}) if k not in METRIC_COLUMNS]

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=[*METRIC_COLUMNS, *extra])
        writer.writeheader()
        writer.writerows(rows)
    _replace_atomically(path, write)
