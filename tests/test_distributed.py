"""torchrun/DDP on 2 CPU processes (gloo) against 1 process: same batches, same model."""

import json
import subprocess
import sys

import pytest
import torch

from inception import distributed

# No BatchNorm (per-rank batch statistics would differ), no dropout and no averaging, so that
# the only difference between 1 and 2 processes is float rounding in the gradient average.
FLAGS = ["fashion-mnist", "--subset", "256", "--batch-size", "64", "--epochs", "2",
         "--width", "0.25", "--norm", "lrn", "--dropout", "0", "--aux-dropout", "0",
         "--averaging", "none", "--lr", "0.05", "--precision", "fp32", "--workers", "0",
         "--no-progress", "--threads", "1", "--checkpoint-every", "0"]
SINGLE = [sys.executable, "-m", "inception", "train"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "inception", "train"]


@pytest.fixture(scope="module")
def flags(small_fashion_mnist_dir):
    """FLAGS, evaluated on the small data set's 512 test images."""
    return [*FLAGS, "--data-dir", small_fashion_mnist_dir]


def _run(cmd, flags, out, *extra):
    done = subprocess.run([*cmd, *flags, "--out", str(out), *extra], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(run, name="last.pt"):
    state = torch.load(run / "checkpoints" / name, weights_only=True)["model"]
    return torch.cat([v.flatten().double() for k, v in sorted(state.items())
                      if v.is_floating_point()])


def _assert_same_model(single, other):
    """Equal within float rounding: the gradient of a 64-image batch averaged over 2 x 32 is
    summed in another order, and SGD carries that on. Measured against how far the last epoch
    moved the weights, the difference must be tiny (about 1e-3 here; a sharding or averaging
    mistake would be of the order of 1)."""
    final, other_final = _weights(single), _weights(other)
    last_epoch = (final - _weights(single, "previous.pt")).norm()
    assert last_epoch > 0.1  # the weights did move
    assert (final - other_final).norm() <= 0.02 * last_epoch
    for ra, rb in zip((single / "metrics.csv").read_text().splitlines()[1:],
                      (other / "metrics.csv").read_text().splitlines()[1:], strict=True):
        assert abs(float(ra.split(",")[2]) - float(rb.split(",")[2])) < 1e-4  # train loss


@pytest.fixture(scope="module")
def single(tmp_path_factory, flags):
    out = tmp_path_factory.mktemp("ddp") / "single"
    _run(SINGLE, flags, out)
    return out


def test_shard_takes_each_ranks_slice_of_every_global_batch():
    idx = torch.arange(10)
    parts = [distributed.shard(distributed.Context(r, 2), idx, 4) for r in (0, 1)]
    assert parts[0].tolist() == [0, 1, 4, 5, 8] and parts[1].tolist() == [2, 3, 6, 7, 9]


@pytest.mark.slow
def test_two_processes_equal_one_and_write_one_run_directory(tmp_path, single, flags):
    out = tmp_path / "ddp"
    done = _run(TORCHRUN, flags, out)
    assert done.stdout.count("run directory:") == 1  # rank 0 reports, rank 1 stays quiet
    _assert_same_model(single, out)
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (out, single))
    assert ours.keys() == theirs.keys() and ours["processes"] == 2
    assert abs(ours["test_top1"] - theirs["test_top1"]) <= 0.2  # one image of the 512
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [(TORCHRUN, SINGLE), (SINGLE, TORCHRUN)],
                         ids=["2-then-1", "1-then-2"])
def test_a_checkpoint_resumes_under_another_world_size(tmp_path, single, flags, first, second):
    out = tmp_path / "elastic"
    _run(first, flags, out, "--stop-after", "1")
    _run(second, flags, out, "--resume")
    _assert_same_model(single, out)


def test_sync_bn_is_refused_where_pytorch_cannot_do_it(caplog):
    from inception import googlenet
    from inception.recipes import get_recipe
    from inception.train.run import RunError, sync_batch_norm

    cfg = get_recipe("fashion-mnist").replace(sync_bn=True, width=0.25)
    model = googlenet(cfg.model)
    cpu = torch.device("cpu")
    assert sync_batch_norm(model, cfg, distributed.Context(), cpu) is model  # one process
    with pytest.raises(RunError, match="GPU-only"):
        sync_batch_norm(model, cfg, distributed.Context(0, 2), cpu)
    with pytest.raises(RunError, match="--norm bn"):
        sync_batch_norm(model, cfg.replace(norm="lrn"), distributed.Context(0, 2), cpu)
    if torch.cuda.is_available():
        synced = sync_batch_norm(model, cfg, distributed.Context(0, 2), torch.device("cuda"))
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
