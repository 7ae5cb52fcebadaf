"""What a trained model expects of its input: one typed record, stored in `model.json`, and the
one executable evaluation transform.

Training writes the record (`inception.train.loaders`), `inception.load` reads it back, and every
evaluation feeds the model through it: training's per-epoch validation, `inception eval`,
`predict` and `export`'s checks and calibration all call `Preprocessing.views` (or its 1-crop
form, calling the record itself), so a run's recorded accuracy is the accuracy `inception eval`
measures. None of them needs a preprocessing flag. The paper's own is "mean subtraction" on RGB:
`std` is then 1.

The test crops are boxes in the image after its shorter side is resized (`Crop`): `crop_boxes`
lists them for 1, 10 or 144 crops (`inception.evaluation` describes the schemes) and
`extract_crops` cuts them out of a uint8 image tensor with torchvision's functional ops.
Normalisation (`to_unit`, then `standardize`) is written once, here: the training pipelines call
it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

# ImageNet's per-channel mean and std for [0, 1] RGB input (torchvision's normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CROP_SCHEMES = (1, 10, 144)
PAPER_SCALES = (256, 288, 320, 352)  # shorter side, for 224 x 224 crops


class PreprocessingError(ValueError):
    """A preprocessing record that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Preprocessing:
    """Shorter side resized to `resize`, a centre `crop` x `crop` square (the model's input size
    `image_size`), values scaled to [0, 1], then `(x - mean) / std` per channel.

    `warp=True` resizes the whole image to `resize` x `resize` instead, ignoring its aspect ratio,
    before the crops: Caffe's ImageNet pipeline (`convert_imageset` with 256 x 256, and
    `caffe.Classifier`), which imported Caffe weights were trained and evaluated with."""

    image_size: int
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    interpolation: str = "bilinear"
    warp: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        for name in ("crop", "resize", "image_size", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PreprocessingError(f"{name} must be a positive integer; got {value!r}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise PreprocessingError(f"mean {list(self.mean)} and std {list(self.std)} must be "
                                     "finite")
        if not isinstance(self.warp, bool):
            raise PreprocessingError(f"warp must be true or false; got {self.warp!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessingError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                                     f"got {self.interpolation!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise PreprocessingError(f"mean {list(self.mean)} and std {list(self.std)} need one "
                                     f"value per channel ({self.channels})")
        if self.resize < self.crop:
            raise PreprocessingError(f"resize {self.resize} is smaller than the crop {self.crop}")
        if min(self.std) <= 0:
            raise PreprocessingError(f"std {list(self.std)} must be positive")

    @classmethod
    def centre_crop(cls, image_size: int, mean: Sequence[float], std: Sequence[float],
                    crop_fraction: float = 0.875) -> Preprocessing:
        """The record of a run on an image folder: shorter side resized to
        round(image_size / crop_fraction) (256 for 224), then the centre image_size crop."""
        return cls(image_size=image_size, resize=round(image_size / crop_fraction),
                   crop=image_size, mean=tuple(mean), std=tuple(std), channels=len(mean))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `model.json` (and of exported files' metadata). `warp` is written only
        when set, so that other models' records stay what they always were."""
        d = {**asdict(self), "mean": list(self.mean), "std": list(self.std)}
        if not self.warp:
            del d["warp"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """From `model.json`'s "preprocessing" table. Only `resize`, `crop`, `mean` and `std` are
        required, as in the oldest run directories; `image_size` defaults to the crop and
        `channels` to the length of `mean`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessingError(f"unknown preprocessing key(s): {', '.join(unknown)}")
        missing = sorted({"resize", "crop", "mean", "std"} - set(data))
        if missing:
            raise PreprocessingError(f"preprocessing lacks {', '.join(missing)}")
        try:
            return cls(**{"image_size": data["crop"], "channels": len(data["mean"]), **data})
        except PreprocessingError:
            raise
        except (TypeError, ValueError) as e:
            raise PreprocessingError(f"preprocessing {data}: {e}") from e

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W (or C x H x W) -> the float input the model was trained on, on the
        images' device: `to_unit`, then `standardize` with this record's mean and std."""
        return standardize(to_unit(images), self.mean, self.std)

    def views(self, images: torch.Tensor, crops: int = 1) -> torch.Tensor:
        """The model's normalised `crops` (1, 10 or 144) test crops of uint8 images: C x H x W ->
        crops x C x S x S, or a batch of one size N x C x H x W -> N x crops x C x S x S (S the
        crop). With `warp`, the images are first resized to resize x resize (Caffe's)."""
        if self.warp:
            images = TF.resize(images, [self.resize, self.resize], antialias=True)
        boxes = crop_boxes(images.shape[-1], images.shape[-2], crops, self.crop,
                           resize=self.resize)
        return self.normalize(extract_crops(images, boxes, self.crop))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The 1-crop evaluation transform: uint8 C x H x W -> C x S x S (or N x C x H x W of one
        size -> N x C x S x S), shorter side resized to `resize`, centre crop, normalised."""
        return self.views(images, 1).squeeze(-4)

    def decode_side(self, crops: int = 1) -> int:
        """The largest shorter side that `crops` crops are cut from: images may be decoded that
        small (`data.load_image`'s `min_side`) and lose nothing."""
        top = PAPER_SCALES[-1] / PAPER_SCALES[0] if crops == 144 else 1.0
        return _half_up(self.resize * top)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (x / 255)."""
    return images.float() / 255


def standardize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel of float images (C x H x W or N x C x H x W), on their
    device: the normalisation of every pipeline, training's and evaluation's (the same
    arithmetic as torchvision's `Normalize`). `mean` and `std` may be tensors already on that
    device (a GPU loop then copies nothing from the host for each batch)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


# -- test crops -----------------------------------------------------------------------------------

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
