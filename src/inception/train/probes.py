"""Measurements taken during a run that leave the run unchanged: section 5's gradient signal.

Section 5 expects the auxiliary classifiers to "increase the gradient signal that gets propagated
back". The training step's own gradient (`Trainer`'s `lower_grad_norm`) includes the aux losses,
which add gradient at conv1 .. 4a by construction; `main_loss_gradients` measures the gradient
of the main classifier's loss alone, at the end of every epoch (the same steps in every arm of an
experiment), on a fixed batch, on a copy of the model: the run's weights, statistics and random
streams are not touched.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from inception.evaluation import view_batches
from inception.model import GoogLeNet, gradient_norm
from inception.preprocessing import Preprocessing

PROBE_IMAGES = 256  # the fixed batch: the first images of the split, unaugmented
PROBE_SEED = 0  # the dropout masks of the probe's forward pass, the same at every probe


def probe_batch(images, preprocessing: Preprocessing, device: torch.device,
                size: int = PROBE_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size` images of a split (an `EvalSplit`'s `images`), one centre view each,
    preprocessed as `inception eval` does, with their labels."""
    views, labels = next(view_batches(images, [preprocessing], 1, size, device=device))
    return views[0][:, 0], labels.to(device)


def main_loss_gradients(model: GoogLeNet, x: torch.Tensor, y: torch.Tensor,
                        label_smoothing: float = 0.0) -> dict[str, float]:
    """The L2 norm of the main loss's gradient (cross-entropy of the final classifier only, in
    fp32) at the lower stages (conv1 .. 4a, `GoogLeNet.lower_stage_parameters`) and at the rows
    above them (the aux heads excluded), and their ratio, for the batch (x, y).

    Computed on a copy in training mode (BatchNorm normalises by the batch, as in a training
    step), with dropout drawn from `PROBE_SEED`; the model and torch's random state are left as
    they were."""
    probe = copy.deepcopy(model).float().train()
    probe.zero_grad(set_to_none=True)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(PROBE_SEED)
        F.cross_entropy(probe(x.float()), y, label_smoothing=label_smoothing).backward()
    lower = probe.lower_stage_parameters()
    ids = {id(p) for p in lower}
    upper = [p for p in probe.layers.parameters() if id(p) not in ids]
    lower_norm, upper_norm = gradient_norm(lower).item(), gradient_norm(upper).item()
    return {"main_grad_lower": round(lower_norm, 6), "main_grad_upper": round(upper_norm, 6),
            "main_grad_ratio": round(lower_norm / max(upper_norm, 1e-30), 6)}


def probe_gradients(model: GoogLeNet, images, preprocessing: Preprocessing,
                    label_smoothing: float = 0.0) -> dict[str, float]:
    """`main_loss_gradients` on the probe batch of `images` (`probe_batch`), on the model's
    device."""
    device = next(model.parameters()).device
    return main_loss_gradients(model, *probe_batch(images, preprocessing, device),
                               label_smoothing)
