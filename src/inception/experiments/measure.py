"""What the experiments measure besides a run's test accuracy.

- `weights_top1`: test top-1 of a run's exported model (the average of the weights) or of its
  raw last iterate (claim 6), both through `inception eval`'s path, in fp32.
- `lower_features` and `linear_probe`: how well a linear classifier on 4a's features separates
  the classes (claim 3's "encourage discrimination in the lower stages").
- `gradient_curve`: the per-epoch gradient at conv1 .. 4a that training recorded
  (`TrainConfig.watch_gradients`; claim 3's "increase the gradient signal"): the main loss's
  alone, relative to the rows above, or the training step's.
- `generalization_gap`: training minus validation figures of a run's model (claims 3 and 5's
  "regularization").
- `training_rates`: training images/s of configurations side by side (claim 1; their
  parameters and multiply-adds are `inception.cost.table1_cost`'s totals).
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from inception.data import TensorSplit, fashion_mnist
from inception.devices import autocast
from inception.evaluation import evaluate
from inception.model import LOWER_STAGES_END, GoogLeNet, googlenet_loss
from inception.timing import median_rates
from inception.train.checkpoint import load_checkpoint
from inception.train.config import TrainConfig
from inception.weights import LoadedModel, load


def raw_weights(run: Path, loaded: LoadedModel) -> LoadedModel:
    """The run's model with the last optimizer iterate's weights (its last checkpoint's
    `model`, aux heads left out) instead of the exported average."""
    state = load_checkpoint(Path(run) / "checkpoints" / "last.pt")["model"]
    model = copy.deepcopy(loaded.model)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux.")})
    return LoadedModel(model, loaded.preprocessing, loaded.classes, loaded.path, loaded.meta)


def weights_top1(run: Path, weights: str, data_dir: str | None = None) -> float:
    """Test top-1 (%) of the run's "final" (exported) or "raw" weights, one centre crop, fp32."""
    loaded = load(run)
    if weights == "raw":
        loaded = raw_weights(run, loaded)
    return evaluate([loaded], "fashion-mnist", crops=1, data_dir=data_dir, precision="fp32").top1


@torch.no_grad()
def lower_features(loaded: LoadedModel, images: torch.Tensor, batch: int = 1000,
                   layer: str = LOWER_STAGES_END) -> torch.Tensor:
    """`layer`'s output (4a by default), averaged over its positions: N x channels, fp32. The
    tap is torchvision's `create_feature_extractor`."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model = loaded.model.eval()
    extractor = create_feature_extractor(model, {f"layers.{layer}": "features"})
    device = loaded.device
    out = [extractor(loaded.normalize(images[i:i + batch].to(device)))["features"]
           .float().mean((2, 3)).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, num_classes: int, weight_decay: float = 1e-4,
                 max_iter: int = 200) -> float:
    """Test top-1 (%) of a multinomial logistic regression fitted to (train_x, train_y).

    Features are standardised with the training features' statistics; the weights start at zero
    and full-batch L-BFGS minimises the cross-entropy plus `weight_decay` x |W|^2 (a convex
    problem: the result does not depend on a seed)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    linear = nn.Linear(xs.shape[1], num_classes, dtype=xs.dtype)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(xs), train_y) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100.0 * (linear(xt).argmax(1) == test_y).double().mean().item()


def training_images(cfg: TrainConfig, data_dir: str | None = None) -> tuple[TensorSplit,
                                                                              TensorSplit]:
    """(the run's training images, the test set) of a Fashion-MNIST run: the split `train`
    trained on, after the validation hold-out and the subset."""
    return run_splits(cfg, data_dir)[::2]


def run_splits(cfg: TrainConfig, data_dir: str | None = None
               ) -> tuple[TensorSplit, TensorSplit | None, TensorSplit]:
    """(training images, validation split or None, test set) of a Fashion-MNIST run, as
    `train` split them."""
    train, test = fashion_mnist(data_dir)
    val = None
    if cfg.val_images:
        train, val = train.hold_out(cfg.val_images)
    return train.subset(cfg.subset), val, test


@torch.no_grad()
def split_figures(loaded: LoadedModel, split: TensorSplit, batch: int = 1000
                  ) -> tuple[float, float]:
    """(mean cross-entropy, top-1 %) of a model on a split's uint8 images: one centre view
    each, cut and normalised by the model's preprocessing, fp32, no label smoothing."""
    model, device = loaded.model.eval(), loaded.device
    loss, correct = 0.0, 0
    for i in range(0, len(split), batch):
        x = loaded.preprocessing.views(split.images[i:i + batch].to(device), 1)[:, 0]
        y = split.labels[i:i + batch].to(device)
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    return loss / len(split), 100.0 * correct / len(split)


GAP_IMAGES = 2_000  # the fixed training subset the gap is measured on: the run's first images


def generalization_gap(run: Path, cfg: TrainConfig, data_dir: str | None = None
                       ) -> dict[str, float]:
    """How much better the run's exported model does on images it trained on than on held-out
    ones: its loss and top-1 on the first `GAP_IMAGES` of its training images (unaugmented) and
    on the validation split; `loss_gap` = validation − training loss, `top1_gap` = training −
    validation top-1 (points). Both grow as a network overfits (section 5's "regularization")."""
    train, val, _ = run_splits(cfg, data_dir)
    if val is None:
        raise ValueError(f"{run}: the run held out no validation split (val_images 0)")
    loaded = load(run)
    n = min(GAP_IMAGES, len(train), len(val))
    train_loss, train_top1 = split_figures(loaded, train.subset(n))
    val_loss, val_top1 = split_figures(loaded, val.subset(n))
    return {"train_loss": train_loss, "val_loss": val_loss, "train_top1": train_top1,
            "val_top1": val_top1, "loss_gap": val_loss - train_loss,
            "top1_gap": train_top1 - val_top1}


def probe_top1(run: Path, cfg: TrainConfig, data_dir: str | None = None) -> float:
    """The linear probe's test top-1 (%) on the 4a features of the run's exported model,
    fitted on the run's own training images."""
    loaded = load(run)
    train, test = training_images(cfg, data_dir)
    return linear_probe(lower_features(loaded, train.images), train.labels,
                        lower_features(loaded, test.images), test.labels, len(loaded.classes))


def gradient_curve(run: Path, column: str = "main_grad_ratio") -> list[float]:
    """A per-epoch gradient column of the run's metrics.csv: by default the main loss's
    gradient at conv1 .. 4a relative to the rows above (`inception.train.probes`), or
    `lower_grad_norm`, the training step's own gradient there (aux losses included)."""
    with open(Path(run) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0]:
        raise ValueError(f"{run}/metrics.csv has no {column} column; the run was trained "
                         "without watch_gradients")
    return [float(r[column]) for r in rows]


def training_rates(configs: Mapping[str, TrainConfig], repeats: int = 7,
                   seed: int = 0) -> dict[str, float]:
    """Training images/s of each configuration's SGD step (forward with its aux heads, the
    weighted loss, backward, update) at its batch size, precision and memory format, on the
    CPU, alternated round by round and the median taken (`inception.timing.median_rates`)."""
    torch.manual_seed(seed)
    paths, batch = {}, None
    for name, cfg in configs.items():
        batch = cfg.batch_size
        paths[name] = _step(cfg)
    return median_rates(paths, batch, repeats)


def _step(cfg: TrainConfig):
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = GoogLeNet(cfg.model).train().to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=cfg.momentum)
    size = cfg.model.image_size
    x = torch.randn(cfg.batch_size, cfg.model.in_chans, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, cfg.model.num_classes, (cfg.batch_size,))
    cpu = torch.device("cpu")

    def call() -> None:
        with autocast(cpu, cfg.precision == "bf16"):
            if model.aux:
                loss = googlenet_loss(model.forward_aux(x), y, cfg.model.aux_weight)
            else:
                loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return call
