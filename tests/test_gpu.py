"""The CUDA path: skipped cleanly on machines without a GPU (this project's CI machine has none).
`scripts/gpu-check.sh` runs these on a GPU machine, with Fashion-MNIST in $INCEPTION_DATA_DIR."""

import json
import os

import pytest
import torch

from inception import GoogLeNetConfig, googlenet
from inception.inference import FusedInception, MaxPool3x3, optimize_for_inference
from inception.transforms import BatchAugment

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
DATA_DIR = ["--data-dir", os.environ["INCEPTION_DATA_DIR"]] if "INCEPTION_DATA_DIR" in os.environ \
    else []


@pytest.fixture
def exact_fp32(monkeypatch):
    """fp32 means fp32 here: no TF32 in cuDNN's convolutions or in matmuls."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def test_batch_augment_on_the_gpu_equals_the_cpu():
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    augment = BatchAugment(2, flip=True, erase_p=0.5)
    cpu = augment(x, torch.Generator().manual_seed(3))
    gpu = augment(x.cuda(), torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("config", [GoogLeNetConfig(image_size=80),
                                    GoogLeNetConfig(image_size=80, norm="bn")])
def test_optimize_for_inference_on_the_gpu(config, exact_fp32):
    torch.manual_seed(0)
    model = googlenet(config).eval().cuda()
    x = torch.randn(4, 3, 80, 80, device="cuda")
    fp32, bf16 = optimize_for_inference(model), optimize_for_inference(model, dtype=torch.bfloat16)
    # The GPU form has none of the CPU rewrites.
    assert not any(isinstance(m, FusedInception | MaxPool3x3) for m in bf16.modules())
    assert fp32.stem_chunk is None
    with torch.no_grad():
        ref = model(x)
        graph = optimize_for_inference(model, export=True)(x)
        out32, out16 = fp32(x), bf16(x)
    scale = ref.abs().max()
    assert (out32 - ref).abs().max() <= 1e-4 * scale
    assert (graph - ref).abs().max() <= 1e-4 * scale
    assert (out16 - ref).abs().max() <= 0.05 * scale


def test_lrn_gradients_on_the_gpu_equal_the_cpu(exact_fp32):
    torch.manual_seed(0)
    # No aux heads (an eval-mode forward does not reach them) and no dropout (eval mode).
    model = googlenet(GoogLeNetConfig(image_size=80, width=0.25, aux_logits=False)).eval()
    x = torch.randn(2, 3, 80, 80)
    model(x).square().sum().backward()
    cpu = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.cuda()
    model(x.cuda()).square().sum().backward()
    for a, b in zip(cpu, (p.grad.cpu() for p in model.parameters()), strict=True):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-4)


@pytest.mark.slow
def test_short_training_run_on_the_gpu(tmp_path, fashion_mnist):
    from inception.cli import main

    out = tmp_path / "run"
    assert main(["train", "--subset", "2048", "--epochs", "2", "--width", "0.25",
                 "--batch-size", "128", "--device", "cuda", "--precision", "bf16",
                 "--sync-every", "5", "--no-progress", "--out", str(out), *DATA_DIR]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["device"].startswith("cuda")
    assert results["test_top1"] > 50  # 10 classes: chance is 10%


def test_the_loop_never_waits_for_the_gpu_between_reads(fashion_mnist, monkeypatch):
    """One epoch under CUDA's sync debug mode: any synchronising call (`.item()`, a pageable
    copy, bincount...) raises, except the loss reads that `engine.host` makes on purpose."""
    from inception import data as data_lib
    from inception.model import GoogLeNet
    from inception.recipes import get_recipe
    from inception.train import engine, loaders, optim

    def host(t):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return t.cpu()
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(engine, "host", host)
    cfg = get_recipe("fashion-mnist").replace(width=0.25, batch_size=128)
    cuda = torch.device("cuda")
    train, test = fashion_mnist
    mean, std = data_lib.FASHION_MNIST_MEAN, data_lib.FASHION_MNIST_STD
    batches = loaders.tensor_batches(train.subset(1280), 128, cfg, mean, std, True, device=cuda)
    val = loaders.tensor_batches(test.subset(512), 256, cfg, mean, std, False, device=cuda)
    model = GoogLeNet(cfg.model).to(cuda, memory_format=torch.channels_last)
    optimizer = optim.make_optimizer(model, cfg)
    scheduler = optim.make_scheduler(optimizer, cfg, batches.num_batches)
    trainer = engine.Trainer(model, optimizer, scheduler, cfg, cuda,
                             optim.make_average(model, cfg), sync_every=4)
    pos = engine.Position()
    epoch = batches.epoch(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        engine.train_one_epoch(trainer, epoch.batches, pos)
        tally = engine.evaluation_tally(trainer.average.module, val.epoch(0).batches, 10, cfg,
                                        cuda)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert pos.step == 10 and pos.seen == 1280 and tally.images == 512


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_resumes_with_the_gpu_generator(tmp_path, fashion_mnist,
                                                                monkeypatch):
    """SIGTERM at step 10 of 16 (epoch 2): the checkpoint holds the GPU generator (dropout draws
    from it), the resume restores it and ends close to an uninterrupted run (GPU kernels are not
    bitwise deterministic, so "close": within 2 points)."""
    import os
    import signal

    from inception.recipes import get_recipe
    from inception.train import Interrupted, train
    from inception.train.checkpoint import load_checkpoint
    from inception.train.engine import LossMeter

    cfg = get_recipe("fashion-mnist").replace(width=0.25, subset=1024, epochs=2, batch_size=128)
    kw = dict(device="cuda", progress=False, data_dir=DATA_DIR[1] if DATA_DIR else None,
              sync_every=2, checkpoint_every=None)
    full = train(cfg, out=tmp_path / "full", **kw)
    real = LossMeter.read

    def read(self, step):
        if step == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, step)

    monkeypatch.setattr(LossMeter, "read", read)
    with pytest.raises(Interrupted):
        train(cfg, out=tmp_path / "cut", **kw)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ckpt["position"]["step"] == 10 and ckpt["position"]["batch"] == 2
    assert isinstance(ckpt["gpu_rng"], torch.Tensor)
    monkeypatch.setattr(LossMeter, "read", real)
    resumed = train(cfg, out=tmp_path / "cut", resume=True, **kw)
    assert abs(resumed.results["test_top1"] - full.results["test_top1"]) < 2.0


def _png(tmp_path, fashion_mnist):
    from PIL import Image

    _, test = fashion_mnist
    path = tmp_path / "image.png"
    Image.fromarray(test.images[0, 0].numpy()).save(path)
    return path


def test_eval_and_predict_on_the_gpu_match_the_cpu(fashion_run, fashion_mnist, tmp_path, capsys):
    from inception.cli import main

    for device in ("cpu", "cuda"):
        assert main(["eval", str(fashion_run), "--crops", "10", "--subset", "500", "--device",
                     device, "--json", "--out", str(tmp_path / device), *DATA_DIR]) == 0
    cpu, gpu = (json.loads((tmp_path / d / "eval-10crop-subset500.json").read_text())
                for d in ("cpu", "cuda"))
    assert abs(cpu["top1"] - gpu["top1"]) <= 0.4  # two images of 500, at most
    capsys.readouterr()
    image = _png(tmp_path, fashion_mnist)
    predictions = []
    for device in ("cpu", "cuda"):
        assert main(["predict", str(fashion_run), str(image), "--device", device,
                     "--json"]) == 0
        predictions.append(json.loads(capsys.readouterr().out)[0]["predictions"])
    assert predictions[0][0]["class"] == predictions[1][0]["class"]
    assert abs(predictions[0][0]["probability"] - predictions[1][0]["probability"]) < 0.02


def test_an_imported_caffe_model_predicts_on_the_gpu_as_on_the_cpu(tmp_path, capsys, exact_fp32):
    from test_caffe import PHOTO, caffemodel, random_paper_model

    from inception.cli import main

    path = tmp_path / "bvlc_googlenet.caffemodel"
    path.write_bytes(caffemodel(random_paper_model()))
    out = tmp_path / "imported"
    assert main(["import-caffe", str(path), "--out", str(out)]) == 0
    capsys.readouterr()
    results = {}
    for device in ("cpu", "cuda"):
        assert main(["predict", str(out), str(PHOTO), "--json", "--device", device]) == 0
        results[device] = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert [p["class"] for p in results["cuda"]] == [p["class"] for p in results["cpu"]]
    for a, b in zip(results["cuda"], results["cpu"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)


def test_visualize_and_dream_run_on_the_models_gpu(tmp_path, exact_fp32):
    """`inception.visualize` and `inception.dream` work on the model's device: the images come
    back on the CPU, a few steps on the GPU give the CPU's images to float precision, and the
    dreamt image raises its layer's norm."""
    from test_visualize import small_rgb_model

    import inception
    from inception.dream import dream, layer_norm
    from inception.visualize import target_module, visualize

    cpu = small_rgb_model(tmp_path / "m")
    gpu = inception.load(tmp_path / "m", "cuda")
    on_cpu = visualize(cpu, "4c", "0-3", branch="3x3", steps=4)
    on_gpu = visualize(gpu, "4c", "0-3", branch="3x3", steps=4)
    assert on_gpu.device.type == "cpu" and on_gpu.shape == (4, 3, 32, 32)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=1e-3)
    photo = torch.rand(3, 64, 48, generator=torch.Generator().manual_seed(0))
    dreamt = dream(gpu, photo, "4c", octaves=2, steps=5)
    assert dreamt.device.type == "cpu" and dreamt.shape == (3, 64, 48)
    module = target_module(gpu.model, "4c")
    assert layer_norm(gpu, module, dreamt[None]) > layer_norm(gpu, module, photo[None])
