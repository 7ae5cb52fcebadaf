"""The CUDA path: skipped cleanly on machines without a GPU (this project's CI machine has none)."""

import json

import pytest
import torch

from inception import GoogLeNetConfig, googlenet
from inception.inference import optimize_for_inference
from inception.transforms import BatchAugment

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_batch_augment_on_the_gpu_equals_the_cpu():
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    augment = BatchAugment(2, flip=True, erase_p=0.5)
    cpu = augment(x, torch.Generator().manual_seed(3))
    gpu = augment(x.cuda(), torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("config", [GoogLeNetConfig(image_size=96),
                                    GoogLeNetConfig(image_size=96, norm="bn")])
def test_optimize_for_inference_on_the_gpu(config, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32 here
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = googlenet(config).eval().cuda()
    x = torch.randn(4, 3, 96, 96, device="cuda")
    with torch.no_grad():
        ref = model(x)
        fp32 = optimize_for_inference(model)(x)
        bf16 = optimize_for_inference(model, dtype=torch.bfloat16)(x)
        graph = optimize_for_inference(model, export=True)(x)
    scale = ref.abs().max()
    assert (fp32 - ref).abs().max() <= 1e-4 * scale
    assert (graph - ref).abs().max() <= 1e-4 * scale
    assert (bf16 - ref).abs().max() <= 0.05 * scale


def test_lrn_gradients_on_the_gpu_equal_the_cpu():
    torch.manual_seed(0)
    model = googlenet(GoogLeNetConfig(image_size=96, width=0.25)).eval()  # no dropout
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
                 "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_top1"] > 50  # 10 classes: chance is 10%
