"""Test-time evaluation: the paper's multi-crop scheme and ensembles (section 7 of the paper).

Crops are boxes in the image after its shorter side is resized (`Crop`); `crop_boxes` lists them
and `extract_crops` cuts them out of a uint8 image tensor with torchvision's functional ops.

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from inception.data import LabelledImages, Skipped, collate_skipping
from inception.metrics import Tally, per_class_top1, summarize
from inception.weights import LoadedModel

log = logging.getLogger(__name__)

CROP_SCHEMES = (1, 10, 144)
PAPER_SCALES = (256, 288, 320, 352)  # shorter side, for 224 x 224 crops
# The paper's Table 3 (top-5 error on the ILSVRC 2014 validation set), for comparison.
PAPER_TABLE3 = [
    {"models": 1, "crops": 1, "cost": 1, "top5_error": 10.07},
    {"models": 1, "crops": 10, "cost": 10, "top5_error": 9.15},
    {"models": 1, "crops": 144, "cost": 144, "top5_error": 7.89},
    {"models": 7, "crops": 1, "cost": 7, "top5_error": 8.09},
    {"models": 7, "crops": 10, "cost": 70, "top5_error": 7.62},
    {"models": 7, "crops": 144, "cost": 1008, "top5_error": 6.67},
]


@dataclass(frozen=True)
class Crop:
    """One test crop: the image's shorter side resized to `scale`, then the box (left, top,
    width, height) in that resized image; a box larger than the crop size (the paper's whole
    square) is resized down to it; `flip` mirrors the result."""

    scale: int
    left: int
    top: int
    width: int
    height: int
    flip: bool = False


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to `shorter`, as torchvision's Resize."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def _centre(span: int, size: int) -> int:
    return round((span - size) / 2.0)  # torchvision's center_crop rounding


def _five(left: int, top: int, side_w: int, side_h: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of the 4 corner crops and the centre crop of a side_w x side_h region."""
    right, bottom = left + side_w - size, top + side_h - size
    return [(left, top), (right, top), (left, bottom), (right, bottom),
            (left + _centre(side_w, size), top + _centre(side_h, size))]


def _half_up(x: float) -> int:
    return int(x + 0.5)


def crop_boxes(width: int, height: int, crops: int, size: int,
               resize: int | None = None) -> list[Crop]:
    """The `crops` (1, 10 or 144) test crops of a `width` x `height` image for a model whose
    input is `size` x `size` and whose 1-crop shorter side is `resize` (default size * 256/224,
    the usual 256 for 224)."""
    if crops not in CROP_SCHEMES:
        raise ValueError(f"--crops must be one of {', '.join(map(str, CROP_SCHEMES))}; got {crops}")
    resize = resize or _half_up(size * 256 / 224)
    if resize < size:
        raise ValueError(f"resize {resize} is smaller than the crop size {size}")
    if crops == 1:
        w, h = resized_size(width, height, resize)
        return [Crop(resize, _centre(w, size), _centre(h, size), size, size)]
    if crops == 10:
        w, h = resized_size(width, height, resize)
        boxes = [Crop(resize, x, y, size, size) for x, y in _five(0, 0, w, h, size)]
        return boxes + [Crop(c.scale, c.left, c.top, size, size, flip=True) for c in boxes]
    out = []
    for paper_scale in PAPER_SCALES:
        scale = _half_up(resize * paper_scale / PAPER_SCALES[0])
        w, h = resized_size(width, height, scale)
        side = min(w, h)
        if w >= h:  # landscape (or square): left, centre, right squares
            squares = [(0, 0), (_centre(w, side), 0), (w - side, 0)]
        else:  # portrait: top, centre, bottom squares
            squares = [(0, 0), (0, _centre(h, side)), (0, h - side)]
        for sx, sy in squares:
            views = [Crop(scale, x, y, size, size) for x, y in _five(sx, sy, side, side, size)]
            views.append(Crop(scale, sx, sy, side, side))  # the whole square, resized
            for view in views:
                out += [view, Crop(view.scale, view.left, view.top, view.width, view.height,
                                   flip=True)]
    return out


def extract_crops(image: torch.Tensor, crops: Sequence[Crop], size: int) -> torch.Tensor:
    """uint8 C x H x W -> uint8 len(crops) x C x size x size; a batch N x C x H x W of one size
    -> N x len(crops) x C x size x size. Each scale is resized once (bilinear, antialiased, as
    `Resize`); boxes are slices of it."""
    height, width = image.shape[-2:]
    resized: dict[int, torch.Tensor] = {}
    out = []
    for c in crops:
        if c.scale not in resized:
            w, h = resized_size(width, height, c.scale)
            resized[c.scale] = (image if (w, h) == (width, height)
                                else TF.resize(image, [h, w], antialias=True))
        view = resized[c.scale][..., c.top:c.top + c.height, c.left:c.left + c.width]
        if c.width != size or c.height != size:
            view = TF.resize(view, [size, size], antialias=True)
        out.append(TF.horizontal_flip(view) if c.flip else view)
    return torch.stack(out, dim=-4)


# -- data -----------------------------------------------------------------------------------------

def _views(images: torch.Tensor, models: Sequence[LoadedModel], crops: int
           ) -> tuple[torch.Tensor, ...]:
    """Normalised crops of one image (C x H x W) or a batch of one size (N x C x H x W), for
    each model: (crops x C x S x S) or (N x crops x C x S x S)."""
    return tuple(model_views(images, m, crops) for m in models)


def model_views(images: torch.Tensor, model: LoadedModel, crops: int) -> torch.Tensor:
    """`model`'s normalised `crops` crops of uint8 images (C x H x W, or N x C x H x W of one
    size), after warping them to its resize x resize when its preprocessing says so (Caffe's)."""
    p = model.preprocessing
    if p.warp:
        images = TF.resize(images, [p.resize, p.resize], antialias=True)
    boxes = crop_boxes(images.shape[-1], images.shape[-2], crops, model.image_size,
                       resize=p.resize)
    return model.normalize(extract_crops(images, boxes, model.image_size))


class _CropViews(Dataset):
    """Each image as its normalised crops for every model of an ensemble."""

    def __init__(self, images: Dataset, models: Sequence[LoadedModel], crops: int) -> None:
        self.images, self.models, self.crops = images, models, crops

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        sample = self.images[i]
        if isinstance(sample, Skipped):
            return sample
        image, label = sample
        return _views(image, self.models, self.crops), label


def view_batches(images: Dataset, models: Sequence[LoadedModel], crops: int, batch_size: int,
                 workers: int = 0, device: torch.device | None = None
                 ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """(views per model, labels) batches. Images held in memory at one size are cropped a whole
    batch at a time, on `device` (default: the CPU); image folders image by image in DataLoader
    workers, on the CPU."""
    if isinstance(images, LabelledImages) and images.images is not None:
        for i in range(0, len(images), batch_size):
            batch = images.images[i:i + batch_size].to(device or "cpu", non_blocking=True)
            yield _views(batch, models, crops), images.labels[i:i + batch_size]
        return
    loader = DataLoader(_CropViews(images, models, crops), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate_skipping)
    for batch, skipped in loader:
        for s in skipped:
            log.warning("skipping %s", s.reason)
        if batch is not None:
            yield batch


def largest_scale(models: Sequence[LoadedModel], crops: int = 144) -> int:
    """The largest shorter side that `crops` crops of any of `models` are cut from: images may
    be decoded that small (`data.load_image`'s `min_side`) and lose nothing."""
    top = PAPER_SCALES[-1] / PAPER_SCALES[0] if crops == 144 else 1.0
    return max(_half_up(m.preprocessing.resize * top) for m in models)


def model_data(model: LoadedModel, data: str | None, flag: str) -> str:
    """`data`, or else the data set `model` was trained on (`model.json`'s "data"; Fashion-MNIST
    for the oldest files). Imported weights name none (`null`): `flag` must then be given."""
    from inception.data import DataError

    data = data or model.meta.get("data", "fashion-mnist")
    if data is None:
        raise DataError(f"MODEL {model.path} was not trained here and has no data set of its "
                        f"own; give {flag}, an image folder with val/CLASS/ subfolders")
    return data


def eval_images(data: str, models: Sequence[LoadedModel], subset: int | None = None,
                data_dir: str | None = None) -> tuple[Dataset, str]:
    """(uint8 images with labels, split name) to evaluate `models` on: Fashion-MNIST's test set or
    an image folder's `val/`, checked against the models' classes."""
    from torchvision.transforms import v2

    from inception import data as data_lib

    classes = models[0].classes
    channels = models[0].channels
    if data == "fashion-mnist":
        if list(classes) != list(data_lib.FASHION_MNIST_CLASSES):
            raise data_lib.DataError("DATA fashion-mnist: the model's classes are not "
                                     "Fashion-MNIST's; give the image folder it was trained on")
        _, test = data_lib.fashion_mnist(data_dir)
        test = test.subset(subset)
        images = test.images if channels == 1 else test.images.expand(-1, channels, -1, -1)
        return LabelledImages(images, test.labels), "test"
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
    folder = data_lib.ImageFolderDataset(val_dir, folder_classes, v2.PILToTensor(), channels,
                                         min_side=largest_scale(models), labels=labels)
    if subset is not None:
        folder = torch.utils.data.Subset(folder, range(min(subset, len(folder))))
    return LabelledImages(folder=folder), "val"


# -- evaluation -----------------------------------------------------------------------------------

@torch.no_grad()
def predict_probabilities(models: Sequence[LoadedModel], views: Sequence[torch.Tensor],
                          chunk: int = 256, precision: str = "fp32") -> torch.Tensor:
    """Softmax averaged over crops and models, on the CPU. `views[k]` is N x crops x C x S x S
    for model k, on any device; the network (its `optimize_for_inference` form in `precision`,
    on the model's device) sees at most `chunk` crops at a time."""
    total = None
    for m, v in zip(models, views, strict=True):
        n, k = v.shape[:2]
        net = m.runner(precision)
        logits = torch.cat([net(c.to(m.device, non_blocking=True))
                            for c in v.flatten(0, 1).split(chunk)])
        probs = logits.float().softmax(dim=1).view(n, k, -1).mean(dim=1).cpu()
        total = probs if total is None else total + probs
    return total / len(models)


def evaluate(models: Sequence[LoadedModel], data: str, crops: int = 1, subset: int | None = None,
             batch_size: int | None = None, workers: int = 0, data_dir: str | None = None,
             progress: bool = False, precision: str = "fp32") -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy, confusion matrix and cost of `models` with `crops`."""
    if not models:
        raise ValueError("no models to evaluate")
    classes = models[0].classes
    for m in models[1:]:
        if m.classes != classes or m.channels != models[0].channels:
            raise ValueError(f"--ensemble {m.path}: its classes or channels differ from "
                             f"{models[0].path}'s; an ensemble needs models of one task")
    images, split = eval_images(data, models, subset, data_dir)
    batch_size = batch_size or max(1, 1000 // crops)
    tally = Tally(len(classes))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), unit="img", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    for views, labels in view_batches(images, models, crops, batch_size, workers,
                                      models[0].device):
        probs = predict_probabilities(models, views, precision=precision)
        nll = -probs.gather(1, labels[:, None]).clamp_min(1e-12).log().sum()
        tally.add(probs, labels, nll)
        if bar is not None:
            bar.update(len(labels))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    n = tally.images
    summary = summarize(*tally.totals())
    top1, top5, confusion = summary["top1"], summary["top5"], summary["confusion"]
    return {
        "split": split, "images": n, "models": len(models), "crops": crops,
        "cost": len(models) * crops,
        "top1": round(top1, 4), "top5": round(top5, 4),
        "top1_error": round(100.0 - top1, 4), "top5_error": round(100.0 - top5, 4),
        "loss": round(summary["loss"], 6),
        "per_class_top1": {c: round(p, 2) for c, p, n in zip(
            classes, per_class_top1(confusion), confusion.sum(1).tolist(), strict=True) if n},
        "confusion": confusion.tolist(),
        "images_per_s": round(n / seconds, 1), "precision": precision,
        "model_paths": [str(m.path) for m in models],
    }


def format_result(result: dict[str, Any]) -> str:
    """A Table 3 style line plus per-class accuracy."""
    lines = [
        "| models | crops | cost | top-1 (%) | top-5 (%) | top-5 error (%) | images | img/s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['models']} | {result['crops']} | {result['cost']} | {result['top1']:.2f} | "
        f"{result['top5']:.2f} | {result['top5_error']:.2f} | {result['images']} | "
        f"{result['images_per_s']:.1f} |",
        "",
        "per-class top-1 (%): " + ", ".join(f"{c} {p:.1f}"
                                            for c, p in result["per_class_top1"].items()),
    ]
    return "\n".join(lines)


def save_confusion(path: Path, result: dict[str, Any]) -> Path:
    """The confusion matrix PNG of the classes the data has (`per_class_top1`'s). When the model
    has more classes than that (ImageNet weights on a few of its classes), predictions of the
    others are counted in a last column, "other", so that every row still sums to its images."""
    from inception.plots import plot_confusion

    confusion = torch.tensor(result["confusion"])
    present = confusion.sum(1) > 0
    rows = confusion[present]
    shown = rows[:, present]
    names = list(result["per_class_top1"])
    columns = names
    if not present.all():
        shown = torch.cat([shown, (rows.sum(1) - shown.sum(1))[:, None]], dim=1)
        columns = [*names, "other"]
    plot_confusion(path, shown, names, f"confusion matrix ({result['split']}, "
                   f"{result['models']} model(s) x {result['crops']} crop(s))", columns)
    return path
