"""`inception.predict`: the top classes of images, as `inception predict` prints them.

It takes what a PyTorch user has at hand: image files (one path or many, any format PIL reads),
PIL images, and pixel tensors, uint8 (0-255) or floating-point (checked to be in [0, 1], never
guessed), one image C x H x W or a batch N x C x H x W. Each image is cut into the model's 1, 10
or 144 test crops and normalised by the model's own `Preprocessing` (`views`), and classified as
`inception eval` classifies it (`evaluation.predict_probabilities`, in the precision the model
was trained in unless told otherwise); the softmax is averaged over the crops, as in section 7
of the paper. Float pixels are rounded to uint8 first, as a decoded file is, so `x / 255` gives
exactly the prediction of the uint8 `x`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import torch

from inception import evaluation
from inception.data import ImageError, convert_image, load_image
from inception.preprocessing import CROP_SCHEMES
from inception.weights import LoadedModel, check_pixels

if TYPE_CHECKING:
    from PIL.Image import Image

    ImageInput = str | os.PathLike[str] | Image | torch.Tensor

ACCEPTED = ("a path (str or os.PathLike), a PIL image, a uint8 or float tensor C x H x W, a "
            "batch N x C x H x W, or a list of these")


class PredictError(ValueError):
    """An image that cannot be read: `image` names it (the file's path) and `reason` says why,
    once; the message is "IMAGE: REASON"."""

    def __init__(self, image: str, reason: str) -> None:
        super().__init__(f"{image}: {reason}")
        self.image, self.reason = image, reason


def predict(model: LoadedModel, images: ImageInput | Iterable[ImageInput], topk: int = 5,
            crops: int = 1, precision: str | None = None,
            errors: Literal["raise", "report"] = "raise") -> list[dict[str, Any]]:
    """[{"image": name, "predictions": [{"class": name, "probability": p}, ...]}, ...], the
    `topk` most probable classes of each image, most probable first, in the order given.

    `images`: one path (str or os.PathLike) or PIL image, a tensor of one image (C x H x W) or
    of several (N x C x H x W), or an iterable of paths, PIL images and C x H x W tensors. A
    file's "image" is its path; a PIL image's its `filename` when it has one; anything else's
    "images[i]", its position. Tensors hold uint8 pixels (0-255) or float ones in [0, 1], with
    the model's channels; anything else is a `TypeError` (another type) or `ValueError` (float
    values outside [0, 1], another shape) naming the argument.

    A file that cannot be read raises `PredictError` naming it; with `errors="report"` it gets
    {"image": path, "error": reason} in its place instead and the other images go on.
    `precision` None: the one the model was trained in (`evaluation.trained_precision`).

    >>> inception.predict(inception.load("runs/RUN"), "shirt.jpg", topk=3)
    >>> inception.predict(model, ["shirt.jpg", "bag.png"])
    >>> inception.predict(model, torchvision.io.decode_image("shirt.jpg"))
    """
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer; got {topk!r}")
    if crops not in CROP_SCHEMES:
        raise ValueError(f"crops must be one of {', '.join(map(str, CROP_SCHEMES))}; "
                         f"got {crops!r}")
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report'; got {errors!r}")
    if isinstance(images, torch.Tensor):
        check_pixels(images, "images", model.channels)
        pixels = _as_uint8(images if images.ndim == 4 else images[None])
        step = max(1, 256 // crops)  # at most about 256 crops in memory at a time
        probs = torch.cat([_classify(model, pixels[i:i + step], crops, precision)
                           for i in range(0, len(pixels), step)])
        return [_top(model, f"images[{i}]", p, topk) for i, p in enumerate(probs)]
    results = []
    for name, item in _items(images, model.channels):
        try:
            pixels = _pixels(model, item, name, crops)
        except PredictError as e:
            if errors == "raise":
                raise
            results.append({"image": e.image, "error": e.reason})
            continue
        probs = _classify(model, pixels[None], crops, precision)[0]
        results.append(_top(model, name, probs, topk))
    return results


def _items(images: Any, channels: int) -> list[tuple[str, Any]]:
    """(name, image) for each image of `predict`'s argument, every one checked before any is
    read: a wrong type or tensor is refused before the first image is classified."""
    if _is_single(images):
        images = [images]
    elif isinstance(images, (bytes, bytearray, dict)) or not isinstance(images, Iterable) \
            or type(images).__module__ == "numpy":
        raise TypeError(f"images: expected {ACCEPTED}; got {_kind(images)}"
                        + _numpy_hint(images))
    out = []
    for i, item in enumerate(images):
        where = f"images[{i}]"
        if not _is_single(item):
            raise TypeError(f"{where}: expected a path (str or os.PathLike), a PIL image or a "
                            f"tensor C x H x W; got {_kind(item)}{_numpy_hint(item)}")
        if isinstance(item, torch.Tensor):
            check_pixels(item, where, channels, dims=(3,))
        elif isinstance(item, (str, os.PathLike)):
            where = os.fspath(item)
        elif getattr(item, "filename", ""):
            where = str(item.filename)
        out.append((where, item))
    return out


def _is_single(x: Any) -> bool:
    """One image: a path, a PIL image or a tensor (whose shape `check_pixels` checks)."""
    from PIL import Image

    return isinstance(x, (str, os.PathLike, Image.Image, torch.Tensor))


def _kind(x: Any) -> str:
    module, name = type(x).__module__, type(x).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


def _numpy_hint(x: Any) -> str:
    if type(x).__module__ == "numpy":
        return " (for an H x W x C array: torch.from_numpy(a).permute(2, 0, 1))"
    return ""


def _pixels(model: LoadedModel, item: Any, name: str, crops: int) -> torch.Tensor:
    """uint8 C x H x W pixels of one image, in the model's channels; `PredictError` naming
    `name` for a file (or PIL image) that cannot be read."""
    from torchvision.transforms import v2

    if isinstance(item, torch.Tensor):
        return _as_uint8(item)
    mode = "L" if model.channels == 1 else "RGB"
    if isinstance(item, (str, os.PathLike)):
        try:
            image = load_image(item, mode, model.preprocessing.decode_side(crops))
        except ImageError as e:  # "PATH: reason": the path is the result's name already
            raise PredictError(name, str(e).removeprefix(f"{os.fspath(item)}: ")) from e
    else:
        try:
            image = convert_image(item, mode)
        except (OSError, ValueError) as e:
            raise PredictError(name, f"cannot convert its {item.mode} pixels ({e})") from e
    return v2.PILToTensor()(image)


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Checked pixels (`check_pixels`) as uint8: float ones in [0, 1] scaled and rounded."""
    images = images.detach()
    if images.dtype == torch.uint8:
        return images
    return (images.float() * 255).round_().to(torch.uint8)


def _classify(model: LoadedModel, pixels: torch.Tensor, crops: int,
              precision: str | None) -> torch.Tensor:
    """Class probabilities (N x classes, on the CPU) of uint8 images N x C x H x W of one size,
    averaged over their `crops` test crops."""
    views = model.preprocessing.views(pixels, crops)
    return evaluation.predict_probabilities([model], [views], precision=precision).cpu()


def _top(model: LoadedModel, name: str, probs: torch.Tensor, topk: int) -> dict[str, Any]:
    top = probs.topk(min(topk, len(model.classes)))
    return {"image": name, "predictions": [
        {"class": model.classes[i], "probability": round(p, 6)}
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]}
