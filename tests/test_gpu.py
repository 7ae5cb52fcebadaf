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


@pytest.mark.parametrize("config", [GoogLeNetConfig(image_size=96),
                                    GoogLeNetConfig(image_size=96, norm="bn")])
def test_optimize_for_inference_on_the_gpu(config, exact_fp32):
    torch.manual_seed(0)
    model = googlenet(config).eval().cuda()
    x = torch.randn(4, 3, 96, 96, device="cuda")
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
    model = googlenet(GoogLeNetConfig(image_size=96, width=0.25, aux_logits=False)).eval()
    x = torch.randn(2, 3, 96, 96)
    model(x).square().sum().backward()
    cpu = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.cuda()
    model(x.cuda()).square().sum().backward()
    for a, b in zip(cpu, (p.grad.cpu() for p in model.parameters()), strict=True):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-4)


def test_short_training_run_on_the_gpu(tmp_path, fashion_mnist):
    from inception.cli import main

    out = tmp_path / "run"
    assert main(["train", "--subset", "2048", "--epochs", "2", "--width", "0.25",
                 "--batch-size", "128", "--device", "cuda", "--precision", "bf16",
                 "--sync-every", "5", "--no-progress", "--out", str(out), *DATA_DIR]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["device"].startswith("cuda")
    assert results["test_top1"] > 50  # 10 classes: chance is 10%
    # A second run from a checkpoint in the middle of epoch 2 ends with the same model.
    resumed = tmp_path / "resumed"
    assert main(["train", "--subset", "2048", "--epochs", "2", "--width", "0.25",
                 "--batch-size", "128", "--device", "cuda", "--precision", "bf16",
                 "--no-progress", "--out", str(resumed), "--stop-after", "1", *DATA_DIR]) == 0
    assert main(["train", "--resume", "--out", str(resumed), "--device", "cuda",
                 "--no-progress", *DATA_DIR]) == 0
    again = json.loads((resumed / "results.json").read_text())
    assert abs(again["test_top1"] - results["test_top1"]) < 1.0


def test_eval_and_predict_on_the_gpu_match_the_cpu(fashion_run, tmp_path, capsys):
    from inception.cli import main

    for device in ("cpu", "cuda"):
        assert main(["eval", str(fashion_run), "--crops", "10", "--subset", "500", "--device",
                     device, "--json", "--out", str(tmp_path / device), *DATA_DIR]) == 0
    cpu, gpu = (json.loads((tmp_path / d / "eval-10crop.json").read_text())
                for d in ("cpu", "cuda"))
    assert abs(cpu["top1"] - gpu["top1"]) <= 0.4  # two images of 500, at most
    capsys.readouterr()
