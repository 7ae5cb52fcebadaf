"""Test-time evaluation: the paper's multi-crop scheme and ensembles (section 7 of the paper).

Crops are boxes in the image after its shorter side is resized (`Crop`); `crop_boxes` lists them
and `extract_crops` cuts them out of a uint8 image tensor with torchvision's functional ops
(both in `inception.preprocessing`, whose `Preprocessing.views` cuts and normalises a model's).

- 1 crop: the model's own preprocessing (`model.json`): shorter side to `resize`, centre `crop`.
- 10 crops: shorter side to the model's `resize` (`crop_boxes`' default, for a bare size: size *
  256/224), the four corner
  and the centre size x size crops, each also mirrored (torchvision's `ten_crop` geometry).
- 144 crops, the paper's: "resize the image to 4 scales where the shorter dimension (height or
  width) is 256, 288, 320 and 352 respectively, take the left, center and right square of these
  resized images (in the case of portrait images, we take the top, center and bottom squares). For
  each square, we then take the 4 corners and the center 224x224 crop as well as the square
  resized to 224x224, and their mirrored versions. This results in 4x3x6x2 = 144 crops per image."

The scales are relative to the model's own 1-crop resize R (its `model.json`): the shorter side
goes to R * {256, 288, 320, 352} / 256 and the crops are S x S, S the model's input size. A 224 px
model with the usual R = 256 gets exactly the paper's scheme; any model gets it scaled by R/256.
For the Fashion-MNIST models (S = R = 28, trained on whole 28 px images) the scales are 28, 32, 35
and 39, and 10-crop degenerates to the image and its mirror, five times each: a 28 px image has no
corners to crop (`BENCHMARKS.md` measures what each scheme does there).

"The softmax probabilities are averaged over multiple crops and over all the individual
classifiers to obtain the final prediction" (max-pooling over crops was found worse).

This is the one evaluation path: training's per-epoch validation (`inception.train.engine`)
runs `view_batches` and `tally_batches` as `evaluate` does, so a run's recorded accuracy is what
`inception eval RUN --crops 1` measures on the same images. Each model runs as trained: in eval
mode, under bf16 autocast when it was trained in bf16 (`trained_precision`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from inception.data import LabelledImages, Skipped, collate_skipping
from inception.devices import autocast
from inception.files import check_replace, write_json
from inception.metrics import EvalResult, Tally
from inception.preprocessing import (
    CROP_SCHEMES,
    PAPER_SCALES,
    Crop,
    Preprocessing,
    crop_boxes,
    extract_crops,
    resized_size,
)
from inception.provenance import provenance
from inception.weights import META_FILE, LoadedModel

__all__ = [
    "CROP_SCHEMES", "PAPER_SCALES", "PAPER_TABLE3", "Crop", "EvalResult", "crop_boxes",
    "eval_images", "evaluate", "extract_crops", "format_result", "largest_scale",
    "log_probabilities", "model_data", "model_logits", "model_views", "predict_probabilities",
    "resized_size", "result_name", "result_scope", "save_confusion", "save_result",
    "tally_batches", "trained_precision", "view_batches",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
# The paper's Table 3 (top-5 error on the ILSVRC 2014 validation set), for comparison.
PAPER_TABLE3 = [
    {"models": 1, "crops": 1, "cost": 1, "top5_error": 10.07},
    {"models": 1, "crops": 10, "cost": 10, "top5_error": 9.15},
    {"models": 1, "crops": 144, "cost": 144, "top5_error": 7.89},
    {"models": 7, "crops": 1, "cost": 7, "top5_error": 8.09},
    {"models": 7, "crops": 10, "cost": 70, "top5_error": 7.62},
    {"models": 7, "crops": 144, "cost": 1008, "top5_error": 6.67},
]


# -- data -----------------------------------------------------------------------------------------

def model_views(images: torch.Tensor, model: LoadedModel, crops: int) -> torch.Tensor:
    """`model`'s normalised `crops` crops of uint8 images (C x H x W, or N x C x H x W of one
    size): `model.preprocessing.views`."""
    return model.preprocessing.views(images, crops)


class _CropViews(Dataset):
    """Each image as its normalised crops for every preprocessing of an ensemble."""

    def __init__(self, images: Dataset, preprocessings: Sequence[Preprocessing],
                 crops: int) -> None:
        self.images, self.preprocessings, self.crops = images, preprocessings, crops

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        sample = self.images[i]
        if isinstance(sample, Skipped):
            return sample
        image, label = sample
        return tuple(p.views(image, self.crops) for p in self.preprocessings), label


def view_batches(images: Dataset, preprocessings: Sequence[Preprocessing], crops: int,
                 batch_size: int, workers: int = 0, device: torch.device | None = None,
                 skipped: dict[str, str] | None = None, pin: bool = False
                 ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """(views per preprocessing, labels) batches, each view N x crops x C x S x S. Images held
    in memory at one size are cropped a whole batch at a time, on `device` (default: the CPU;
    images already there are not copied); image folders image by image in `workers`
    DataLoader workers, on the CPU. An undecodable file is left out of its batch and logged;
    with `skipped` ({path: reason}), only the first time it is met, and recorded there."""
    if isinstance(images, LabelledImages) and images.images is not None:
        for i in range(0, len(images), batch_size):
            batch = images.images[i:i + batch_size].to(device or "cpu", non_blocking=True)
            yield (tuple(p.views(batch, crops) for p in preprocessings),
                   images.labels[i:i + batch_size])
        return
    loader = DataLoader(_CropViews(images, preprocessings, crops), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate_skipping, pin_memory=pin)
    for batch, bad in loader:
        for s in bad:
            if skipped is None or s.path not in skipped:
                log.warning("skipping %s", s.reason)
            if skipped is not None:
                skipped[s.path] = s.reason
        if batch is not None:
            yield batch


def largest_scale(models: Sequence[LoadedModel], crops: int = 144) -> int:
    """The largest shorter side that `crops` crops of any of `models` are cut from: images may
    be decoded that small (`data.load_image`'s `min_side`) and lose nothing."""
    return max(m.preprocessing.decode_side(crops) for m in models)


def model_data(model: LoadedModel, data: str | None, flag: str) -> str:
    """`data`, or else the data set `model` was trained on (`model.json`'s "data"; Fashion-MNIST
    for the oldest files), found from any working directory (`data.resolve_recorded_path`).
    Imported weights name none (`null`): `flag` must then be given."""
    from inception.data import DataError, resolve_recorded_path

    recorded = data or model.meta.get("data", "fashion-mnist")
    if recorded is None:
        raise DataError(f"MODEL {model.path} was not trained here and has no data set of its "
                        f"own; give {flag}, an image folder with val/CLASS/ subfolders")
    if data or model.path is None:
        return recorded
    meta = Path(model.path).with_name(META_FILE)
    return resolve_recorded_path(recorded, meta.parent, str(meta),
                                 f"give {flag}, the image folder the model was trained on")


def eval_images(data: str, models: Sequence[LoadedModel], subset: int | None = None,
                data_dir: str | None = None, crops: int = 144) -> tuple[LabelledImages, str]:
    """(uint8 images with labels, split name) to evaluate `models` on: Fashion-MNIST's test set or
    an image folder's `val/`, checked against the models' classes. Folder images are decoded
    no smaller than `crops` crops need (`largest_scale`)."""
    from inception import data as data_lib

    classes = models[0].classes
    channels = models[0].channels
    if data == "fashion-mnist":
        if list(classes) != list(data_lib.FASHION_MNIST_CLASSES):
            raise data_lib.DataError("DATA fashion-mnist: the model's classes are not "
                                     "Fashion-MNIST's; give the image folder it was trained on")
        _, test = data_lib.fashion_mnist(data_dir)
        return LabelledImages.from_split(test.subset(subset), channels), "test"
    names = models[0].meta.get("class_folders")
    if names:  # imported weights (ImageNet's WordNet IDs): val/ may hold any of their classes
        val_dir = Path(data) / "val"
        folder_classes = data_lib.folder_classes(val_dir)
        unknown = [c for c in folder_classes if c not in names]
        if unknown:
            raise data_lib.DataError(f"DATA {data}: val/{unknown[0]} is not one of the model's "
                                     f"{len(names)} class folders (named like {names[0]})")
        labels = [names.index(c) for c in folder_classes]
    else:
        _, val_dir, folder_classes = data_lib.image_folder_splits(data)
        if folder_classes != list(classes):
            raise data_lib.DataError(f"DATA {data}: its classes {folder_classes} are not the "
                                     f"model's {list(classes)}")
        labels = None
    folder = LabelledImages.from_folder(val_dir, folder_classes, channels,
                                        largest_scale(models, crops), labels)
    return folder.subset(subset), "val"


# -- evaluation -----------------------------------------------------------------------------------

def trained_precision(model: LoadedModel) -> str:
    """The precision `model` was trained in: `model.json`'s "precision", else (run directories
    written before it was recorded there) the run's `config.json` beside the weights, else
    "fp32" (imported weights, models built in code)."""
    recorded = model.meta.get("precision")
    if recorded in PRECISIONS:
        return recorded
    if model.path is not None:
        try:
            config = json.loads((Path(model.path).parent / "config.json").read_text())
            recorded = config["train"]["precision"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
    return recorded if recorded in PRECISIONS else "fp32"


def _joined(precisions: Sequence[str]) -> str:
    """An evaluation's precision: the models' one, or each model's, comma-separated."""
    return precisions[0] if len(set(precisions)) == 1 else ",".join(precisions)


def model_precisions(models: Sequence[LoadedModel], precision: str | None) -> list[str]:
    """`precision` (default: the trained one) for a PyTorch model; an exported one's own, as
    "RUNTIME PRECISION" ("openvino int8")."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision}")
    if precision is not None and (exported := [m for m in models if "runtime" in m.meta]):
        raise ValueError(f"--precision: {exported[0].path} runs in the precision it was "
                         f"exported in ({exported[0].meta['precision']}); leave --precision out")
    return [f"{m.meta['runtime']} {m.meta['precision']}" if "runtime" in m.meta
            else precision or trained_precision(m) for m in models]


@torch.no_grad()
def model_logits(net: nn.Module, x: torch.Tensor, precision: str = "fp32", chunk: int = 256,
                 channels_last: bool = True) -> torch.Tensor:
    """float32 logits of `net` (in eval mode) for normalised images N x C x S x S, `chunk` at
    a time on the net's device, under bf16 autocast for precision "bf16" (as training runs its
    forward), channels-last for a channels-last net."""
    device = next(net.parameters()).device
    out = []
    for c in x.split(chunk):
        c = c.to(device, non_blocking=True)
        if channels_last:
            c = c.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision == "bf16"):
            out.append(net(c).float())
    return torch.cat(out)


@torch.no_grad()
def log_probabilities(nets: Sequence[nn.Module], views: Sequence[torch.Tensor],
                      precisions: Sequence[str], chunk: int = 256,
                      channels_last: bool = True) -> torch.Tensor:
    """log of the softmax averaged over crops and nets, N x classes, on the nets' device.
    `views[k]` is N x crops x C x S x S for net k. With one net and one crop this is the
    log-softmax of its logits, so the loss is exactly training's cross-entropy."""
    parts = []
    for net, v, precision in zip(nets, views, precisions, strict=True):
        n, k = v.shape[:2]
        logits = model_logits(net, v.flatten(0, 1), precision, chunk, channels_last)
        parts.append(logits.log_softmax(dim=1).view(n, k, -1))
    every = torch.cat(parts, dim=1)  # N x (nets x crops) x classes
    if every.shape[1] == 1:
        return every[:, 0]
    return every.logsumexp(dim=1) - math.log(every.shape[1])


def predict_probabilities(models: Sequence[LoadedModel], views: Sequence[torch.Tensor],
                          chunk: int = 256, precision: str | None = None) -> torch.Tensor:
    """Softmax averaged over crops and models, on the models' device. `views[k]` is N x crops x
    C x S x S for model k; each model runs in `precision`, by default the one it was trained
    in (`trained_precision`), at most `chunk` crops at a time."""
    return log_probabilities([m.model for m in models], views, model_precisions(models, precision),
                             chunk).exp()


@torch.no_grad()
def tally_batches(nets: Sequence[nn.Module], precisions: Sequence[str],
                  batches: Iterable[tuple[Sequence[torch.Tensor], torch.Tensor]],
                  num_classes: int, device: torch.device, channels_last: bool = True,
                  progress: Any = None) -> Tally:
    """The loss, top-5 and confusion sums of `nets` (an ensemble: softmax averaged) over
    (views per net, labels) batches (`view_batches`), kept on `device`: nothing is read from it
    until the caller does."""
    tally = Tally(num_classes, device)
    for views, labels in batches:
        log_probs = log_probabilities(nets, views, precisions, channels_last=channels_last)
        labels = labels.to(log_probs.device, non_blocking=True)
        tally.add(log_probs, labels, F.nll_loss(log_probs, labels, reduction="sum"))
        if progress is not None:
            progress.update(len(labels))
    return tally


def evaluate(models: Sequence[LoadedModel], data: str, crops: int = 1, subset: int | None = None,
             batch_size: int | None = None, workers: int = 0, data_dir: str | None = None,
             progress: bool = False, precision: str | None = None) -> EvalResult:
    """Top-1/top-5, per-class accuracy, confusion matrix and cost of `models` with `crops`, in
    `precision` (None: each model in the precision it was trained in, `trained_precision`)."""
    if not models:
        raise ValueError("no models to evaluate")
    if crops not in CROP_SCHEMES:
        raise ValueError(f"--crops must be one of {', '.join(map(str, CROP_SCHEMES))}; got {crops}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int)
                               or subset < 1):
        raise ValueError(f"subset must be None (every image) or an integer of at least 1; got "
                         f"{subset!r}")
    classes = models[0].classes
    for m in models[1:]:
        if m.classes != classes or m.channels != models[0].channels:
            raise ValueError(f"--ensemble {m.path}: its classes or channels differ from "
                             f"{models[0].path}'s; an ensemble needs models of one task")
    precisions = model_precisions(models, precision)
    images, split = eval_images(data, models, subset, data_dir, crops)
    if subset is not None and len(images) < subset:
        log.warning("--subset %d: the %s split has %d images; evaluating all of them", subset,
                    split, len(images))
    batch_size = batch_size or max(1, 1000 // crops)
    device = models[0].device
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), unit="img", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    batches = view_batches(images, [m.preprocessing for m in models], crops, batch_size,
                           workers, device)
    tally = tally_batches([m.model for m in models], precisions, batches, len(classes), device,
                          progress=bar)
    totals = tally.totals()
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return EvalResult.from_totals(
        split, totals, classes, models=len(models), crops=crops,
        precision=_joined(precisions),
        images_per_s=totals[3] / seconds,
        model_paths=tuple(os.path.abspath(m.path) for m in models))


def format_result(result: EvalResult) -> str:
    """A Table 3 style line plus per-class accuracy."""
    lines = [
        "| split | models | crops | cost | top-1 (%) | top-5 (%) | top-5 error (%) | images | "
        "img/s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result.split} | {result.models} | {result.crops} | {result.cost} | "
        f"{result.top1:.2f} | {result.top5:.2f} | {result.top5_error:.2f} | {result.images} | "
        f"{result.images_per_s or 0:.1f} |",
        "",
        "per-class top-1 (%): " + ", ".join(f"{c} {p:.1f}"
                                            for c, p in result.per_class_top1.items()),
    ]
    return "\n".join(lines)


def save_confusion(path: Path, result: EvalResult) -> Path:
    """The confusion matrix PNG of the classes the data has (`per_class_top1`'s). When the model
    has more classes than that (ImageNet weights on a few of its classes), predictions of the
    others are counted in a last column, "other", so that every row still sums to its images."""
    from inception.plots import plot_confusion

    confusion = result.confusion
    present = confusion.sum(1) > 0
    rows = confusion[present]
    shown = rows[:, present]
    names = [c for c, p in zip(result.classes, present.tolist(), strict=True) if p]
    columns = names
    if not present.all():
        shown = torch.cat([shown, (rows.sum(1) - shown.sum(1))[:, None]], dim=1)
        columns = [*names, "other"]
    plot_confusion(path, shown, names, f"confusion matrix ({result.split}, "
                   f"{result.models} model(s) x {result.crops} crop(s))", columns)
    return path


def result_scope(models: Sequence[LoadedModel], data: str, crops: int = 1,
                 subset: int | None = None, precision: str | None = None) -> dict[str, Any]:
    """What an evaluation covers, as its JSON records it: `data` ("fashion-mnist" or a folder's
    absolute path), `subset` (None: all), `crops`, `precision` and the models' `model_paths`.
    A results file is replaced only by an evaluation of the same scope (`files.check_replace`:
    as far as the file records it)."""
    from inception.data import recorded_path

    return {"data": recorded_path(data), "subset": subset, "crops": crops,
            "precision": _joined(model_precisions(models, precision)),
            "model_paths": [os.path.abspath(m.path) for m in models]}


def result_name(models: Sequence[LoadedModel], scope: dict[str, Any],
                own_data: str | None = None) -> str:
    """The results file of `scope`: eval-{crops}crop, then what differs from the models' full
    evaluation on their own data (`own_data`, if `model_data` found it already) in their own
    precision: -{N}models, -on-{DATA}, -subset{N}, -{PRECISION}; ".json"."""
    from inception.data import DataError, recorded_path

    try:
        own = recorded_path(own_data or model_data(models[0], None, "DATA"))
    except DataError:  # imported weights name no data set: none is "other"
        own = None
    other = own is not None and scope["data"] != own
    trained = _joined([trained_precision(m) for m in models])
    parts = [f"{scope['crops']}crop", f"{len(models)}models" if len(models) > 1 else "",
             "on-" + re.sub(r"[^A-Za-z0-9._-]+", "_", Path(scope["data"]).name) if other else "",
             "" if scope["subset"] is None else f"subset{scope['subset']}",
             "" if scope["precision"] == trained
             else re.sub(r"[ ,]", "-", scope["precision"])]
    return "-".join(["eval", *filter(None, parts)]) + ".json"


def save_result(result: EvalResult, path: str | Path, scope: dict[str, Any] | None = None,
                force: bool = False, device: torch.device | None = None) -> dict[str, Any]:
    """Write `result` as JSON to `path` and its confusion matrix beside it (the same name,
    .png), creating the folder; returns the JSON written (`to_json()`, `scope`: what the
    evaluation covers, `result_scope`, "confusion_png", and "provenance": what made it,
    `inception.provenance`, `device` the one the models ran on). An existing file holding a
    different evaluation (`result_scope`, or a file of an older version: its images) is kept,
    `files.ReplaceError`, unless `force`. Raises OSError when either cannot be written."""
    path = Path(path)
    scope = scope or {"crops": result.crops, "precision": result.precision,
                      "model_paths": list(result.model_paths)}
    if not force:
        check_replace(path, {**scope, "images": result.images})
    path.parent.mkdir(parents=True, exist_ok=True)
    png = save_confusion(path.with_suffix(".png"), result)
    written = {**result.to_json(), **scope, "confusion_png": str(png),
               "provenance": provenance(device)}
    write_json(path, written)
    return written
