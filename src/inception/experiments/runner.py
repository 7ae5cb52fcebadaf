"""Running experiments: every arm over several seeds, resumable, then the measurements.

Runs live in `OUT/runs/<regime>/<arm>-seed<k>/`, ordinary run directories (`inception eval` and
`predict` take them), named by the arm's changes, so that arms with the same changes in the same
regime share their runs across experiments: the paper's arm is trained once per seed. A
finished run (it has `results.json`) is never trained again; an interrupted one resumes from its
last checkpoint; one whose loss became NaN or infinite is kept with a `diverged.json` (an
outcome of its arm: a grid scores it worst, a report counts it). Each run's measurements are
cached in its `measures.json`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inception.devices import CpuShare, cpu_cores, cpu_threads
from inception.experiments.claims import GRID_SEED, Arm, Experiment
from inception.files import write_json
from inception.train import train
from inception.train.config import Diverged, RunError, TrainConfig
from inception.train.rundir import recorded_threads

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
DIVERGED_FILE = "diverged.json"  # written in a run directory whose loss became NaN or inf
SHARING_FILE = "sharing.json"  # each training session: wall time, cores busy elsewhere
MEASURES_FILE = "measures.json"


def run_dir(out: Path, experiment: Experiment, arm: Arm, seed: int,
            lr: float | None = None) -> Path:
    """`OUT/runs/<regime>/<arm's changes>[,lr=X]-seed<k>`: the run directory of one arm and
    seed (and learning rate, for an experiment with a grid; the regime's own rate is left out of
    the name, so that the grid's run at that rate is the arm's ordinary run)."""
    if lr == experiment.base().lr:
        lr = None
    return Path(out) / "runs" / experiment.regime / f"{arm.run_name(lr)}-seed{seed}"


@dataclass(frozen=True)
class Job:
    """One run an experiment needs: an arm of `experiment` for `seed`, at learning rate `lr`
    (None: the regime's)."""

    experiment: Experiment
    arm: Arm
    seed: int
    lr: float | None = None

    @property
    def config(self) -> TrainConfig:
        return self.arm.config(self.experiment.base(), self.seed, self.lr)

    def folder(self, out: Path) -> Path:
        return run_dir(out, self.experiment, self.arm, self.seed, self.lr)


def seeds_of(experiment: Experiment, seeds: Sequence[int] | None = None) -> list[int]:
    """The seeds an experiment runs: `seeds` when given, else its planned number from 0."""
    return list(seeds) if seeds is not None else list(range(experiment.planned_seeds))


def chosen_lr(out: Path, experiment: Experiment, arm: Arm) -> float | None:
    """The learning rate the grid chose for `arm`: the best final validation top-1 of its
    `GRID_SEED` runs (a diverged run scores worst; ties: the smaller rate). None before every
    grid run has finished or diverged, and for an experiment without a grid."""
    if experiment.lr_grid is None:
        return None
    top1 = {}
    for lr in experiment.lr_grid:
        folder = run_dir(out, experiment, arm, GRID_SEED, lr)
        if (folder / DIVERGED_FILE).exists():
            top1[lr] = -math.inf
        elif (folder / RESULTS_FILE).exists():
            top1[lr] = read_json(folder / RESULTS_FILE)["val_top1"]
        else:
            return None
    return max(sorted(top1), key=lambda lr: top1[lr])


def done(folder: Path) -> bool:
    """Whether a run has ended: finished (`results.json`) or diverged (`diverged.json`)."""
    return (folder / RESULTS_FILE).exists() or (folder / DIVERGED_FILE).exists()


def jobs(experiments: Iterable[Experiment], out: Path,
         seeds: Sequence[int] | None = None) -> list[Job]:
    """The distinct runs the experiments need, seed by seed: the learning-rate grids first
    (`GRID_SEED`), then seed after seed, so that an interrupted session leaves every table a (thin)
    basis. A grid arm's later seeds are listed once its grid has finished (call again)."""
    experiments = list(experiments)
    todo: dict[Path, Job] = {}
    for e in experiments:
        for arm in e.arms:
            for lr in e.lr_grid or ():
                job = Job(e, arm, GRID_SEED, lr)
                todo.setdefault(job.folder(out), job)
    longest = max(len(seeds_of(e, seeds)) for e in experiments)
    for i in range(longest):
        for e in experiments:
            if i >= len(seeds_of(e, seeds)):
                continue
            for arm in e.arms:
                lr = chosen_lr(out, e, arm)
                if e.lr_grid is not None and lr is None:
                    continue
                job = Job(e, arm, seeds_of(e, seeds)[i], lr)
                todo.setdefault(job.folder(out), job)
    return list(todo.values())


def plan(experiments: Iterable[Experiment], seeds: Sequence[int] | None = None) -> list[Job]:
    """Every distinct run the experiments will train, known before any of them has: the grids'
    runs, then each arm's seeds. A grid arm's seeds are listed at the regime's learning rate
    (`lr` None), standing for the rate its grid will choose: the run is the same but for it."""
    todo: dict[Path, Job] = {}
    for e in experiments:
        for arm in e.arms:
            for job in [*(Job(e, arm, GRID_SEED, lr) for lr in e.lr_grid or ()),
                        *(Job(e, arm, seed) for seed in seeds_of(e, seeds))]:
                todo.setdefault(job.folder(Path()), job)
    return list(todo.values())


def shape(cfg: TrainConfig) -> str:
    """What a run costs depends on: its config less the seed and the learning rate (a grid's
    runs cost what their arm's do)."""
    fields = {k: v for k, v in cfg.to_dict().items() if k not in ("seed", "lr")}
    return json.dumps(fields, sort_keys=True)


def train_arms(experiments: Iterable[Experiment], out: Path, seeds: Sequence[int] | None = None,
               device: str = "auto", progress: bool = True, data_dir: str | None = None,
               trainer: Callable[..., Any] = train, threads: int | None = None) -> list[Path]:
    """Train every run the experiments need that is not finished yet; the run directories.
    `threads`: torch's threads for every run; None chooses them before each run (`run_threads`).
    `trainer` is `inception.train.train` (a test may wrap it)."""
    experiments, dirs, seen = list(experiments), [], set()
    most = torch.get_num_threads()
    try:
        while True:  # a grid's choice adds the arm's remaining seeds
            todo = [j for j in jobs(experiments, out, seeds) if j.folder(out) not in seen]
            if not todo:
                return dirs
            _train_jobs(todo, out, dirs, seen, threads, most,
                        dict(device=device, progress=progress, data_dir=data_dir), trainer)
    finally:
        torch.set_num_threads(most)


def _train_jobs(todo: list[Job], out: Path, dirs: list[Path], seen: set[Path],
                threads: int | None, most: int, options: dict[str, Any],
                trainer: Callable[..., Any]) -> None:
    for i, job in enumerate(todo, 1):
        folder, cfg = job.folder(out), job.config
        dirs.append(folder)
        seen.add(folder)
        if done(folder):
            check_run_config(folder, cfg)
            log.info("[%d/%d] %s: ended before, kept", i, len(todo), folder)
            continue
        resume = _resumable(folder)
        torch.set_num_threads(threads or run_threads(folder, resume, most))
        log.info("[%d/%d] %s: %s with %d thread(s)", i, len(todo), folder,
                 "resuming" if resume else "training", torch.get_num_threads())
        share = CpuShare()
        try:
            trainer(cfg, out=folder, resume=resume, **options)
        except Diverged as error:  # an outcome of this arm, recorded; the others go on
            log.warning("%s diverged: %s", folder, error)
            write_json(folder / DIVERGED_FILE, {"error": str(error), "lr": cfg.lr})
        finally:
            record_sharing(folder, share)


def run_threads(folder: Path, resume: bool, most: int) -> int:
    """The threads a run trains with when none were asked for: a resumed run's recorded ones
    (its arithmetic's rounding depends on them), else one per core that other processes leave
    free now, at most `most` (`devices.cpu_threads`). Chosen before each run, not once for the
    whole experiment: a process busy for a moment at the start would otherwise leave hours of
    runs on one thread, at about 0.6x the speed on two cores."""
    recorded = recorded_threads(folder) if resume else None
    if recorded is not None:
        return recorded
    torch.set_num_threads(most)
    chosen, others = cpu_threads()
    if chosen < min(most, cpu_cores()):
        log.warning("%s: other processes keep %.1f of %d cores busy: training with %d "
                    "thread(s)", folder, others, cpu_cores(), chosen)
    return chosen


def record_sharing(folder: Path, share: CpuShare) -> None:
    """Add this session of the run to its `sharing.json`: wall seconds and the cores' worth of
    CPU other processes used meanwhile (`devices.CpuShare`), so that a report can say which
    runs trained beside other work (their wall time is not this machine's alone)."""
    others, path = share.others(), folder / SHARING_FILE
    if not folder.exists():
        return
    sessions = read_json(path)["sessions"] if path.exists() else []
    sessions.append({"wall_s": round(time.monotonic() - share.started, 1),
                     "cores_busy_elsewhere": None if others is None else round(others, 2),
                     "threads": torch.get_num_threads()})
    write_json(path, {"sessions": sessions})


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


def shared_cores(folder: Path) -> float | None:
    """The most cores' worth of CPU other processes used during any session of the run
    (`sharing.json`), None where it was not recorded."""
    path = Path(folder) / SHARING_FILE
    if not path.exists():
        return None
    busy = [s["cores_busy_elsewhere"] for s in read_json(path)["sessions"]
            if s["cores_busy_elsewhere"] is not None]
    return max(busy) if busy else None


def session_threads(folder: Path) -> set[int]:
    """The torch thread counts the run's training sessions used (`sharing.json`; empty where
    not recorded)."""
    path = Path(folder) / SHARING_FILE
    if not path.exists():
        return set()
    return {s["threads"] for s in read_json(path)["sessions"] if s.get("threads") is not None}


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
