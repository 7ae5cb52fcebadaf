"""`inception.train.probes`: the main loss's gradient at conv1 .. 4a, recorded per epoch."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from inception.data import fashion_mnist
from inception.experiments.claims import protocol
from inception.model import GoogLeNet
from inception.train import train
from inception.train.checkpoint import load_checkpoint
from inception.train.probes import PROBE_IMAGES, PROBE_SEED
from inception.weights import load

LOWER = ("layers.conv1.", "layers.conv2.", "layers.3a.", "layers.3b.", "layers.4a.")


@pytest.mark.slow
def test_the_recorded_row_is_a_hand_built_backward_of_the_main_loss_alone(
        tmp_path, small_fashion_mnist_dir):
    cfg = protocol().replace(subset=256, val_images=128, epochs=2, batch_size=128,
                             eval_batch_size=500, watch_gradients=True)
    train(cfg, out=tmp_path / "run", device="cpu", progress=False,
          data_dir=small_fashion_mnist_dir)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    last = {k: float(rows[-1][k]) for k in ("lower_grad_norm", "main_grad_lower",
                                            "main_grad_upper", "main_grad_ratio")}

    # By hand, from the last checkpoint (the weights at the end of epoch 2): the first images
    # of the validation split, the main classifier's loss only, fp32, dropout from PROBE_SEED.
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    model = GoogLeNet(cfg.model)
    model.load_state_dict(state)
    model.train().to(memory_format=torch.channels_last)  # as the run holds it
    val = fashion_mnist(small_fashion_mnist_dir)[0].hold_out(cfg.val_images)[1]
    n = min(PROBE_IMAGES, len(val))
    x = load(tmp_path / "run").normalize(val.images[:n]).contiguous(
        memory_format=torch.channels_last)
    torch.manual_seed(PROBE_SEED)
    F.cross_entropy(model(x), val.labels[:n], label_smoothing=cfg.label_smoothing).backward()

    def norm(params) -> float:
        return math.sqrt(sum(float(p.grad.double().square().sum()) for p in params))

    named = dict(model.named_parameters())
    lower = [p for k, p in named.items() if k.startswith(LOWER)]
    upper = [p for k, p in named.items() if k.startswith("layers.") and not k.startswith(LOWER)]
    assert last["main_grad_lower"] == pytest.approx(norm(lower), rel=1e-4)
    assert last["main_grad_upper"] == pytest.approx(norm(upper), rel=1e-4)
    assert last["main_grad_ratio"] == pytest.approx(norm(lower) / norm(upper), rel=1e-4)
    # The training step's own gradient (aux losses included, another batch) is another figure.
    assert last["lower_grad_norm"] != pytest.approx(last["main_grad_lower"], rel=1e-2)
