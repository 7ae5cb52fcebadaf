"""Kill a training run at random points, resume it, and get the same bytes as a run that was
never interrupted (CPU, fixed seed)."""

import csv
import random
import signal
import subprocess
import sys
import time

import pytest

ARGS = [sys.executable, "-m", "inception", "train", "--subset", "768", "--epochs", "3",
        "--batch-size", "64", "--width", "0.25", "--workers", "0", "--checkpoint-every", "5",
        "--no-progress", "--threads", "2"]  # 12 steps an epoch, a checkpoint every 5
TIMING = {"wall_s", "images_per_s"}


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def _started(out) -> bool:
    return any((out / "checkpoints" / n).exists() for n in ("last.pt", "previous.pt"))


def _launch(out):
    return subprocess.Popen(ARGS + ["--out", str(out)] + (["--resume"] if _started(out) else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
def reference(tmp_path_factory, fashion_mnist):
    out = tmp_path_factory.mktemp("crash") / "reference"
    subprocess.run([*ARGS, "--out", str(out)], check=True, capture_output=True)
    return out


@pytest.mark.slow
def test_sigkill_at_5_random_points_then_resume_is_bitwise_identical(tmp_path, reference):
    rng = random.Random(0)
    out = tmp_path / "killed"
    kills = 0
    while kills < 5:
        proc = _launch(out)
        if kills == 0:
            time.sleep(rng.uniform(0.5, 4.0))  # anywhere, start-up included
        elif not _wait_for_new_checkpoint(out, proc):
            break  # finished before we could kill it
        else:
            time.sleep(rng.uniform(0.0, 0.4))  # between two checkpoints: mid-epoch
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills == 5
    done = subprocess.run([*ARGS, "--out", str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()
    assert _metrics(out) == _metrics(reference)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path, reference):
    out = tmp_path / "term"
    proc = _launch(out)
    assert _wait_for_new_checkpoint(out, proc)  # the first one, before step 1
    assert _wait_for_new_checkpoint(out, proc)  # step 5
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    done = subprocess.run([*ARGS, "--out", str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_kill_during_checkpoint_write_leaves_the_run_resumable(tmp_path, reference):
    """A save cut short leaves `last.pt.tmp` behind and `last.pt` untouched; or, between the two
    renames, no `last.pt` but `previous.pt`. Both resume to the same bytes."""
    out = tmp_path / "cut"
    subprocess.run([*ARGS, "--out", str(out), "--epochs", "3"], check=True, capture_output=True)
    folder = out / "checkpoints"
    for name in ("model.safetensors", "results.json"):
        (out / name).unlink()
    # A half-written temporary file next to a good checkpoint...
    (folder / "last.pt.tmp").write_bytes((folder / "last.pt").read_bytes()[:3000])
    # ...and the moment between the renames: previous.pt only.
    (folder / "last.pt").unlink()
    done = subprocess.run([*ARGS, "--out", str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()


# The same command, but the process kills itself when it is about to write its first checkpoint:
# after the run directory and config.json exist, before anything else does.
KILL_AT_FIRST_SAVE = """
import os, signal, sys
from inception.train import checkpoint
checkpoint.atomic_save = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
from inception.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("again", [["--resume"], []], ids=["resume", "restart"])
def test_a_run_killed_during_start_up_resumes_or_restarts(tmp_path, reference, again):
    out = tmp_path / "startup"
    killed = subprocess.run([sys.executable, "-c", KILL_AT_FIRST_SAVE, *ARGS[3:], "--out",
                             str(out)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "config.json").exists() and not _started(out)
    done = subprocess.run([*ARGS, "--out", str(out), *again], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == \
           (reference / "model.safetensors").read_bytes()
    assert _metrics(out) == _metrics(reference)
