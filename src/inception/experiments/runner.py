"""Running experiments: every arm over several seeds, resumable, then the measurements.

Runs live in `OUT/runs/<arm>-seed<k>/`, ordinary run directories (`inception eval` and
`predict` take them), named by the arm's changes, so that arms with the same changes share their
runs across experiments: the paper's protocol is trained once per seed, not six times. A
finished run (it has `results.json`) is never trained again; an interrupted one resumes from its
last checkpoint. Each run's measurements are cached in its `measures.json`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from inception.experiments.claims import Arm, Experiment, protocol
from inception.files import write_json
from inception.train import train
from inception.train.config import RunError, TrainConfig

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
MEASURES_FILE = "measures.json"


def run_dir(out: Path, arm: Arm, seed: int) -> Path:
    """`OUT/runs/<arm's changes>-seed<k>`: the run directory of one arm and seed."""
    return Path(out) / "runs" / f"{arm.run_name}-seed{seed}"


def jobs(experiments: Iterable[Experiment], seeds: Sequence[int]) -> list[tuple[Arm, int]]:
    """The distinct (arm, seed) runs the experiments need, seed by seed: once the first seed is
    done every arm has a run, so the runs of an interrupted session are already a (thin) basis
    for every table."""
    seen: dict[tuple[str, int], tuple[Arm, int]] = {}
    experiments = list(experiments)
    for seed in seeds:
        for experiment in experiments:
            for arm in experiment.arms:
                seen.setdefault((arm.run_name, seed), (arm, seed))
    return list(seen.values())


def train_arms(experiments: Iterable[Experiment], out: Path, seeds: Sequence[int],
               base: TrainConfig | None = None, device: str = "auto", progress: bool = True,
               data_dir: str | None = None, trainer: Callable[..., Any] = train) -> list[Path]:
    """Train every run the experiments need that is not finished yet; the run directories.

    `base` is the protocol (default `protocol()`); `trainer` is `inception.train.train` (a
    test may wrap it)."""
    base = base or protocol()
    dirs = []
    todo = jobs(experiments, seeds)
    for i, (arm, seed) in enumerate(todo, 1):
        folder, cfg = run_dir(out, arm, seed), arm.config(base, seed)
        dirs.append(folder)
        if (folder / RESULTS_FILE).exists():
            check_run_config(folder, cfg)
            log.info("[%d/%d] %s: finished, kept", i, len(todo), folder)
            continue
        resume = _resumable(folder)
        log.info("[%d/%d] %s: %s", i, len(todo), folder, "resuming" if resume else "training")
        trainer(cfg, out=folder, device=device, resume=resume, progress=progress,
                data_dir=data_dir)
    return dirs


def _resumable(folder: Path) -> bool:
    """Whether `folder` holds a started run (`train` resumes it, or restarts one killed before
    its first checkpoint). A folder left by a kill before even `config.json` was written holds
    no file and is removed; one with other files is someone else's and refused."""
    if not folder.exists() or (folder / "config.json").exists():
        return folder.exists()
    files = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.suffix == ".pt" for p in files):
        return True
    if any(p.name != ".write-test" and p.suffix != ".tmp" for p in files):
        raise RunError(f"{folder}: not a run directory of this experiment; move it away")
    shutil.rmtree(folder)
    return False


def check_run_config(folder: Path, cfg: TrainConfig) -> None:
    """Refuse a finished run whose saved config is not `cfg` (another protocol, another --out's
    runs copied in): its result would be silently mixed into the table."""
    saved = saved_config(folder)
    if saved != cfg:
        raise RunError(f"{folder}: trained with other settings "
                       f"({', '.join(cfg.differing_fields(saved))}) than this experiment's; "
                       "move it away or use another --out")


def saved_config(folder: Path) -> TrainConfig:
    """The config a run was trained with (its `config.json`)."""
    return TrainConfig.from_dict(read_json(Path(folder) / "config.json")["train"])


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict."""
    return json.loads(Path(path).read_text())


def cached_measure(folder: Path, name: str, compute: Callable[[], Any]) -> Any:
    """`compute()`, stored under `name` in the run's measures.json and read from there next
    time."""
    path = folder / MEASURES_FILE
    measures = read_json(path) if path.exists() else {}
    if name not in measures:
        measures[name] = compute()
        write_json(path, measures)
    return measures[name]
