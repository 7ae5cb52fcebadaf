"""The device rules, checked on a CPU-only machine: `--device` resolution, and the training loop
run on *fake* CUDA tensors (`FakeTensorMode`), where any tensor created on the wrong device
raises `FakeTensorDeviceMismatchError` and any read of a value (`.item()`, `bool()`) raises
`DataDependentOutputException`. That is how the first GPU run crashed (a loss sum created on
the CPU), and how a per-step host synchronisation would show up."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.optim import swa_utils

from inception import data as data_lib
from inception.devices import DeviceError, resolve_device, to_device
from inception.model import GoogLeNet
from inception.recipes import get_recipe
from inception.train import engine, loaders, optim


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="--device tpu: not a device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device is available; use --device cpu"):
            resolve_device("cuda")


def test_to_device_keeps_tensors_already_there():
    t = torch.arange(3)
    assert to_device(t, torch.device("cpu")) is t


class _HostReads:
    """A stand-in for `engine.host` on fake tensors: counts the reads and answers each with
    zeros of the right shape (a fake tensor has no values to read)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        assert t.device.type == "cuda", "the loop read a tensor that is not on the model's device"
        self.calls += 1
        with unset_fake_temporarily():
            return torch.zeros(t.shape, dtype=t.dtype)


def _cuda_model(config) -> GoogLeNet:
    with torch.device("cuda"):
        return GoogLeNet(config)


@pytest.mark.filterwarnings("ignore::UserWarning")  # fake tensors' data_ptr, autocast off
@pytest.mark.parametrize("averaging", ["ema", "polyak"])
def test_an_epoch_and_its_evaluation_run_on_fake_cuda_tensors(monkeypatch, averaging):
    """One epoch of the real loop (data pipeline, bf16 autocast, aux loss, optimizer,
    scheduler, parameter average, loss meter, checkpoint hook) and evaluation, on fake CUDA
    tensors. Left out, because they need a real GPU: the backward pass (autograd's device
    threads) and pinning host memory (CUDA's host allocator); `tests/test_gpu.py` runs the whole
    step there."""
    cfg = get_recipe("fashion-mnist").replace(width=0.25, batch_size=8, eval_batch_size=8,
                                              averaging=averaging, precision="bf16")
    cuda = torch.device("cuda")
    reads = _HostReads()
    monkeypatch.setattr(engine, "host", reads)
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *args, **kwargs: self)
    # AveragedModel deep-copies the model; copies of fake tensors crash the garbage collector
    # later (torch 2.14), so a freshly built model on the same device stands in for the copy.
    monkeypatch.setattr(swa_utils, "deepcopy", lambda model: _cuda_model(model.config))
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    split = data_lib.TensorSplit(images, torch.arange(40) % 10)
    mean, std = data_lib.FASHION_MNIST_MEAN, data_lib.FASHION_MNIST_STD
    polls = []
    with FakeTensorMode(allow_non_fake_inputs=True):
        train_batches = loaders.tensor_batches(split, 8, cfg, mean, std, True, device=cuda)
        val_batches = loaders.tensor_batches(split, 8, cfg, mean, std, False, device=cuda)
        model = _cuda_model(cfg.model)
        optimizer = optim.make_optimizer(model, cfg)
        scheduler = optim.make_scheduler(optimizer, cfg, train_batches.num_batches)
        trainer = engine.Trainer(model, optimizer, scheduler, cfg, cuda,
                                 optim.make_average(model, cfg), sync_every=2)
        pos = engine.Position()
        for poll in trainer.steps(train_batches.epoch(0).batches, pos):
            polls.append(poll)
            if len(polls) == 3:
                trainer.sync(pos)  # what a checkpoint does between steps
        tally = engine.evaluation_tally(trainer.average.module, val_batches.epoch(0).batches,
                                        10, cfg, cuda)
    assert pos.step == 5 and polls == [False, True, False, True, False]
    # The losses of steps 1-2, then step 3 at the checkpoint, 4, and 5 at the epoch's end.
    assert reads.calls == 4
    assert tally.images == 40
    assert all(t.device.type == "cuda" for t in (tally.loss_sum, tally.top5, tally.confusion))


def test_the_loss_sum_does_not_depend_on_how_often_it_is_read():
    losses = torch.rand(7, dtype=torch.float32) * 3
    sizes = [8, 8, 8, 8, 8, 8, 5]
    total = torch.tensor(0.0, dtype=torch.float64)  # what the loop summed before: step by step
    for loss, n in zip(losses, sizes, strict=True):
        total += loss.double() * n
    for every in (1, 3, 7):
        meter = engine.LossMeter()
        for step, (loss, n) in enumerate(zip(losses, sizes, strict=True), 1):
            meter.add(loss, n)
            if step % every == 0:
                meter.read(step)
        meter.read(len(sizes))
        assert meter.loss_sum == total.item() and meter.seen == sum(sizes)


def test_a_nan_is_reported_at_its_own_step():
    meter = engine.LossMeter()
    for loss in (1.0, float("nan"), 2.0):
        meter.add(torch.tensor(loss), 4)
    assert meter.read(12) == 3
    assert meter.error.startswith("the loss became nan at step 11;")
    assert meter.loss_sum == 4.0 and meter.seen == 4  # only the steps before it


def _bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.Flatten(), torch.nn.LazyLinear(2))


@pytest.mark.parametrize("averaging", ["ema", "polyak"])
def test_the_average_is_torchs_average_bit_for_bit_on_the_cpu(averaging):
    """`Average` only changes where the step count is read; on the CPU its parameters and
    buffers (BN's statistics and batch counter included) are torch's `AveragedModel`'s."""
    from torch.optim.swa_utils import AveragedModel

    cfg = get_recipe("fashion-mnist").replace(averaging=averaging, ema_decay=0.9)
    model = _bn_model()
    model(torch.randn(2, 3, 5, 5))  # materialise the lazy layer
    ours = optim.make_average(model, cfg)
    fn = optim.ema_multi_avg_fn(0.9) if averaging == "ema" else None
    theirs = AveragedModel(model, multi_avg_fn=fn, use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(12):
        model(torch.randn(8, 3, 5, 5)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ours.update_parameters(model)
        theirs.update_parameters(model)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert int(a["n_averaged"]) == 12


def test_threads_follow_the_cores_other_processes_leave_free(monkeypatch):
    """1.0 core busy elsewhere on 2 cores leaves 1 thread; 0.2 leaves 2; no /proc/stat leaves
    torch's default. `CpuShare` is the machine's busy time less this process's own."""
    from inception import devices

    monkeypatch.setattr(devices, "cpu_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    measured = devices.CpuShare.others
    for others, threads in ((1.0, 1), (0.2, 2), (1.9, 1), (None, 2)):
        monkeypatch.setattr(devices.CpuShare, "others", lambda self, o=others: o)
        assert devices.cpu_threads(sample_s=0) == (threads, others)
    samples = iter([(100.0, 5.0), (100.8, 5.3)])  # the machine busy 0.8 s, of which ours 0.3
    monkeypatch.setattr(devices, "_cpu_seconds", lambda: next(samples))
    share = devices.CpuShare()
    share._at -= 0.5  # half a second later
    assert measured(share) == pytest.approx(1.0, abs=0.05)  # (0.8 - 0.3) / 0.5 s


def test_a_busy_process_is_seen_and_named_on_the_progress_bar(monkeypatch):
    """A real competitor spinning on one core is measured as about one core busy elsewhere, and
    the training loop's progress bar then says what to do."""
    import subprocess
    import sys
    import time

    from inception import devices
    from inception.devices import CpuShare

    if devices._cpu_seconds() is None:
        pytest.skip("no /proc/stat here")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        share = CpuShare()
        time.sleep(0.5)
        assert share.others() > 0.6
    finally:
        spinner.kill()

    class Busy:
        def others(self):
            return 1.0

    cfg = get_recipe("fashion-mnist").replace(width=0.25)
    model = GoogLeNet(cfg.model)
    opt = optim.make_optimizer(model, cfg)
    trainer = engine.Trainer(model, opt, optim.make_scheduler(opt, cfg, 10), cfg,
                             torch.device("cpu"))
    monkeypatch.setattr(engine, "cpu_cores", lambda: 2)
    monkeypatch.setattr(engine.torch, "get_num_threads", lambda: 2)
    trainer._share, trainer._share_at = Busy(), 0.0
    assert trainer._cpu_note() == {"cpu": "1.0 of 2 cores busy elsewhere: slow; restart with "
                                          "--resume --threads 1"}
    assert trainer._cpu_note()["cpu"].endswith("--threads 1")  # kept until the next look
    Busy.others = lambda self: 0.1  # the other process has gone
    trainer._share_at = 0.0
    assert trainer._cpu_note() == {}


def test_a_resumed_run_keeps_its_recorded_thread_count(tmp_path):
    """The thread count changes float rounding, so `train --resume` without --threads uses the
    count the run's config.json records (torch's default for runs that record none)."""
    import json

    from inception.cli import _cpu_threads

    before = torch.get_num_threads()
    (tmp_path / "config.json").write_text(json.dumps({"train": {}, "threads": 1}))
    torch.set_num_threads(2)
    _cpu_threads("train", tmp_path)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    (tmp_path / "config.json").write_text(json.dumps({"train": {}}))
    _cpu_threads("train", tmp_path)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)
