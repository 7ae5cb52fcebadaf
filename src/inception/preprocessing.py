"""What a trained model expects of its input: one typed record, stored in `model.json`.

Training writes it (`inception.train.loaders`), `inception.load` reads it back, and evaluation,
prediction and export feed the model with it, so none of them needs a preprocessing flag. The
paper's own is "mean subtraction" on RGB: `std` is then 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

# ImageNet's per-channel mean and std for [0, 1] RGB input (torchvision's normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


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
        images' device."""
        mean = torch.tensor(self.mean, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(-1, 1, 1)
        return (images.float() / 255 - mean) / std
