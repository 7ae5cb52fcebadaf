"""The run directory: created only when the run can start, written atomically, never clobbered.

A run directory holds `config.json` (the resolved `TrainConfig`), `metrics.csv` (one row per
epoch, its evaluation columns named for the split evaluated: `test_loss`, `test_top1`,
`test_top5`, or `val_*` when a validation split is held out; `metric_columns`),
`checkpoints/last.pt` and `previous.pt` (`inception.train.checkpoint`), the final
`model.safetensors` + `model.json` (model config, preprocessing, class names), `results.json`,
`skipped_files.json` when some images could not be decoded, and the PNG plots. Every file is
written to a temporary name, fsynced and renamed over the old one, so a crash at any moment
leaves the previous version whole.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inception.files import replace_atomically, write_json
from inception.model import GoogLeNet
from inception.preprocessing import Preprocessing
from inception.train.config import RunError, TrainConfig
from inception.train.loaders import Data
from inception.weights import save_model

log = logging.getLogger(__name__)

EVAL_METRICS = ("loss", "top1", "top5")  # each epoch's evaluation, columns SPLIT_loss, ...


def atomic_save(obj: Any, path: Path, keep_previous: Path | None = None) -> None:
    """torch.save, atomically (see `replace_atomically`)."""
    replace_atomically(path, lambda f: torch.save(obj, f), "wb", keep_previous)


def export_model(run_dir: Path, model: GoogLeNet, classes: list[str],
                 preprocessing: Preprocessing, extra: dict[str, Any]) -> Path:
    """`model.safetensors` (inference weights, no aux heads) and `model.json` beside it."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("aux.")}
    return save_model(run_dir, model.config.replace(aux_logits=False), state, preprocessing,
                      classes, extra)


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


def recorded_threads(out: Path) -> int | None:
    """The torch thread count a run's `config.json` records, None where it records none or
    cannot be read (`train` then says what is wrong with the run directory). A resumed run
    trains with it: the thread count changes the arithmetic's rounding."""
    try:
        recorded = json.loads((Path(out) / "config.json").read_text()).get("threads")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, int) and recorded >= 1 else None


def read_results(out: Path) -> dict[str, Any] | None:
    """A run directory's `results.json`, or None where there is none or it holds no object."""
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def finished_results(out: Path, ckpt: dict[str, Any] | None) -> dict[str, Any] | None:
    """`results.json` of a run that has nothing left to do (resumed from `ckpt`, a checkpoint
    at the end of its last epoch, with `results.json` written), said in the log; else None."""
    if ckpt is None:
        return None
    epochs = TrainConfig.from_dict(ckpt["train_config"]).epochs
    results = read_results(out)
    if ckpt["epoch"] < epochs or results is None:
        return None
    log.info("%s is finished (%d epoch%s); nothing to do", out, epochs, "" if epochs == 1 else "s")
    return results


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
    """`skipped_files.json`: the files that could not be decoded, by split, when there are
    any."""
    skipped = {"train": dataset.train.skipped}
    for split in (dataset.every_epoch, dataset.test):
        if split is not None:
            skipped[split.name] = split.skipped
    count = sum(map(len, skipped.values()))
    if count:
        write_json(out / "skipped_files.json", {"count": count, "files": skipped})


def metric_columns(split: str) -> tuple[str, ...]:
    """`metrics.csv`'s columns for a run whose every epoch is evaluated on `split`."""
    return ("epoch", "wall_s", "train_loss", *(f"{split}_{m}" for m in EVAL_METRICS), "lr",
            "images_per_s")


def upgrade_metrics(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Rows of a run saved before the columns were named for the split (every epoch's
    evaluation in `val_loss`, `val_top1`, `val_top5`, whichever split it was), renamed for
    `split`, the one the run evaluates every epoch; rows already named pass unchanged."""
    if split == "val":
        return rows
    renamed = {f"val_{m}": f"{split}_{m}" for m in EVAL_METRICS}
    return [{renamed.get(k, k): v for k, v in row.items()} for row in rows]


def write_metrics(path: Path, rows: list[dict[str, Any]], split: str) -> None:
    """`metrics.csv`: `metric_columns(split)`, then any further column the rows have
    (`lower_grad_norm` with `watch_gradients`)."""
    columns = metric_columns(split)
    extra = [k for k in (rows[0] if rows else {}) if k not in columns]

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=[*columns, *extra])
        writer.writeheader()
        writer.writerows(rows)
    replace_atomically(path, write)
