"""Kill a training run at chosen points, start-up and mid-epoch included, resume it, and get the
same bytes as a run that was never interrupted (CPU, fixed seed)."""

import csv
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

TRAIN = [sys.executable, "-m", "inception", "train"]
# 12 steps an epoch, a checkpoint every 5; `args` adds the small data set's folder, whose 512
# test images are what each epoch evaluates.
FLAGS = ["--subset", "768", "--epochs", "3", "--batch-size", "64", "--width", "0.25",
         "--workers", "0", "--checkpoint-every", "5", "--no-progress", "--threads", "2"]
TIMING = {"wall_s", "images_per_s"}


@pytest.fixture(scope="module")
def args(small_fashion_mnist_dir):
    return [*FLAGS, "--data-dir", small_fashion_mnist_dir]


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def _started(out) -> bool:
    return any((out / "checkpoints" / n).exists() for n in ("last.pt", "previous.pt"))


def _launch(out, args):
    return subprocess.Popen([*TRAIN, *args, "--out", str(out)]
                            + (["--resume"] if _started(out) else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _train(out, args, *extra):
    return subprocess.run([*TRAIN, *args, "--out", str(out), *extra], capture_output=True,
                          text=True)


def _wait_for_new_checkpoint(out, proc, timeout=120.0) -> bool:
    """Until the process writes a checkpoint after this call (True), or ends (False)."""
    last = out / "checkpoints" / "last.pt"
    before = last.stat().st_mtime_ns if last.exists() else 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if last.exists() and last.stat().st_mtime_ns != before:
            return True
        time.sleep(0.01)
    raise AssertionError("no checkpoint was written")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, args):
    out = tmp_path_factory.mktemp("crash") / "reference"
    done = _train(out, args)
    assert done.returncode == 0, done.stderr
    return out


# The same command in a process that kills itself (SIGKILL) at a chosen point: after the
# optimizer update of global step N (argv[1] = N), or, for N = 0, when it is about to write its
# first checkpoint (after the run directory and config.json exist, before anything else does).
KILLER = """
import os, signal, sys
from inception.train import checkpoint, engine
kill_at = int(sys.argv[1])
def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if kill_at == 0:
    checkpoint.atomic_save = kill
real_step = engine.Trainer._step
def step(self, x, y, pos):
    real_step(self, x, y, pos)
    if pos.step == kill_at:
        kill()
engine.Trainer._step = step
from inception.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _kill_at(step, out, args, *extra):
    return subprocess.run([sys.executable, "-c", KILLER, str(step), "train", *args, "--out",
                           str(out), *extra], capture_output=True, text=True)


def _checkpoint_step(out):
    from inception.train.checkpoint import load_checkpoint

    return load_checkpoint(out / "checkpoints" / "last.pt")["position"]["step"]


@pytest.mark.slow
def test_sigkill_at_5_points_then_resume_is_bitwise_identical(tmp_path, reference, args):
    """Killed during start-up, then mid-epoch 1, at the end of epoch 1 before its checkpoint,
    early in epoch 2 (the last checkpoint is epoch 1's end: the resume starts at an epoch
    boundary) and mid-epoch 3 (12 steps an epoch, checkpoints every 5 steps and at epoch
    ends); each time the last checkpoint is the one before the kill, and the run resumes. After
    the start-up kill there is no checkpoint: the same command without --resume starts the run
    again (`test_a_run_killed_during_start_up_resumes` gives it --resume)."""
    out = tmp_path / "killed"
    for kill_at, last_checkpoint in [(0, None), (7, 5), (12, 10), (14, 12), (34, 30)]:
        killed = _kill_at(kill_at, out, args, *(["--resume"] if _started(out) else []))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        if last_checkpoint is None:
            assert (out / "config.json").exists() and not _started(out)
        else:
            assert _checkpoint_step(out) == last_checkpoint
    done = _train(out, args, "--resume")
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()
    assert _metrics(out) == _metrics(reference)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_and_exits_cleanly(tmp_path, reference, args, signum):
    """Sent after the checkpoint of step 5: the run saves at the step it has reached, exits with
    128 + the signal and a line saying how to resume, and the resumed run is the same (resumed
    after SIGINT only: both signals go through one handler, and the resume is the slow part)."""
    out = tmp_path / "signal"
    proc = _launch(out, args)
    assert _wait_for_new_checkpoint(out, proc)  # the first one, before step 1
    assert _wait_for_new_checkpoint(out, proc)  # step 5
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert f"interrupted by {name}" in err and "--resume" in err and "Traceback" not in err
    # The checkpoint is the one saved on the signal, at the step the message names (past 5).
    step = int(re.search(r"step (\d+): checkpoint saved", err).group(1))
    assert step > 5 and _checkpoint_step(out) == step
    if signum != signal.SIGINT:
        return
    done = _train(out, args, "--resume")
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_kill_during_checkpoint_write_leaves_the_run_resumable(tmp_path, reference, args):
    """A save cut short leaves `last.pt.tmp` behind and `last.pt` untouched; or, between the two
    renames, no `last.pt` but `previous.pt`. Both resume to the same bytes. (The finished
    reference run, copied, stands for a run killed in its last save.)"""
    out = tmp_path / "cut"
    shutil.copytree(reference, out)
    folder = out / "checkpoints"
    for name in ("model.safetensors", "results.json"):
        (out / name).unlink()
    # A half-written temporary file next to a good checkpoint...
    (folder / "last.pt.tmp").write_bytes((folder / "last.pt").read_bytes()[:3000])
    # ...and the moment between the renames: previous.pt only.
    (folder / "last.pt").unlink()
    done = _train(out, args, "--resume")
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_run_killed_during_start_up_resumes(tmp_path, reference, args):
    """With --resume and no checkpoint yet, the run starts again (without --resume: the first
    point of `test_sigkill_at_5_points_then_resume_is_bitwise_identical`)."""
    out = tmp_path / "startup"
    killed = _kill_at(0, out, args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "config.json").exists() and not _started(out)
    done = _train(out, args, "--resume")
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()
    assert _metrics(out) == _metrics(reference)
