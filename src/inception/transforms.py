"""Augmentation: the paper's per-image pipeline (section 6) and a batch-wise one for tensors.

The paper pipeline is torchvision.transforms.v2 with two additions torchvision lacks: a random
interpolation per crop, and AlexNet-style PCA lighting (part of Howard's distortions). Every
pipeline normalises through `inception.preprocessing.standardize` (`Standardize`), the code that
evaluation normalises with; evaluation's own transform is the model's `Preprocessing`.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode, v2

from inception.devices import to_device
from inception.preprocessing import Preprocessing, standardize

# Section 6: "random interpolation methods (bilinear, area, nearest neighbor and cubic, with equal
# probability)". PIL's BOX filter is area averaging.
PAPER_INTERPOLATIONS = (InterpolationMode.BILINEAR, InterpolationMode.BOX,
                        InterpolationMode.NEAREST, InterpolationMode.BICUBIC)

# AlexNet's eigen-decomposition of ImageNet's RGB pixel covariance (pixels in [0, 1]), used for
# the "lighting" part of Howard's distortions.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


class RandomSizedCropRandomInterpolation(v2.RandomResizedCrop):
    """Section 6: "sampling of various sized patches of the image whose size is distributed evenly
    between 8% and 100% of the image area and whose aspect ratio is chosen randomly between 3/4
    and 4/3", resized with "random interpolation methods (bilinear, area, nearest neighbor and
    cubic, with equal probability)".

    The crop box is torchvision's RandomResizedCrop's: area uniform, aspect ratio log-uniform, and a
    box that does not fit is drawn again (so for a square image, areas above 75% are thinned out:
    a 95% box fits only for aspect ratios within [0.95, 1/0.95]).
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 interpolations: tuple[InterpolationMode, ...] = PAPER_INTERPOLATIONS) -> None:
        super().__init__(size, scale=scale, ratio=ratio, antialias=True)
        self.interpolations = interpolations

    def make_params(self, flat_inputs: list) -> dict:
        params = super().make_params(flat_inputs)
        choice = int(torch.randint(len(self.interpolations), (1,)).item())
        params["interpolation"] = self.interpolations[choice]
        return params

    def transform(self, inpt, params: dict):
        params = dict(params)
        interpolation = params.pop("interpolation")
        return self._call_kernel(v2.functional.resized_crop, inpt, **params, size=self.size,
                                 interpolation=interpolation, antialias=True)


class Lighting(torch.nn.Module):
    """AlexNet's PCA colour augmentation ("lighting"), one of Howard's photometric distortions:
    add sum_i alpha_i * eigval_i * eigvec_i to every pixel, alpha_i ~ N(0, std). Expects a float
    RGB image in [0, 1]; one-channel images pass through unchanged."""

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        self.std = std
        self.register_buffer("eigval", torch.tensor(IMAGENET_PCA_EIGVAL))
        self.register_buffer("eigvec", torch.tensor(IMAGENET_PCA_EIGVEC))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.std == 0 or image.shape[-3] != 3:
            return image
        alpha = torch.randn(3) * self.std
        shift = self.eigvec @ (alpha * self.eigval)
        return (image + shift.view(3, 1, 1)).clamp_(0, 1)


class Standardize(torch.nn.Module):
    """(x - mean) / std per channel of a float image (`preprocessing.standardize`): the
    training pipelines' last step."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return standardize(image, self.mean, self.std)


def paper_train_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                          lighting_std: float = 0.1, jitter: float = 0.5) -> v2.Compose:
    """Section 6's image sampling for training, on PIL images.

    - random-sized crop (8%-100% area, aspect 3/4-4/3) with a random interpolation;
    - Howard's photometric distortions: brightness, contrast and saturation, each by a factor in
      [1 - jitter, 1 + jitter] in random order (Howard draws from [0.5, 1.5]), and PCA lighting;
    - horizontal flips;
    - "mean subtraction" (with `std` all 1) or normalization.
    """
    return v2.Compose([
        RandomSizedCropRandomInterpolation(image_size),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        Lighting(lighting_std),
        Standardize(mean, std),
    ])


def decode_side(augment: str, image_size: int, scale: float = 0.08,
                ratio: float = 3 / 4) -> int:
    """The shorter side a training image may be decoded at (`data.load_image`'s `min_side`)
    without changing what the pipeline can produce at full resolution.

    "paper": the smallest random-sized crop (area `scale`, aspect `ratio`) of an image whose
    shorter side is L has sides of at least L * sqrt(scale * ratio), which must stay at least
    `image_size` (so about 4.1 x the crop for the paper's 8% and 3/4); "folder": the resize."""
    if augment == "paper":
        return math.ceil(image_size / math.sqrt(scale * ratio))
    return image_size


def eval_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                   crop_fraction: float = 0.875) -> v2.Compose:
    """A PIL image -> the 1-crop evaluation input of a model trained on image folders at
    `image_size`: the `Preprocessing` such a run records (shorter side resized to
    round(image_size / crop_fraction), centre crop, normalised), after `PILToTensor`."""
    return v2.Compose([v2.PILToTensor(),
                       Preprocessing.centre_crop(image_size, mean, std, crop_fraction)])


def folder_train_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                           ) -> v2.Compose:
    """A light per-image pipeline for the fast recipes on image folders: resize, random crop with
    a little translation, flip."""
    return v2.Compose([
        v2.Resize(image_size, antialias=True),
        v2.RandomCrop(image_size, padding=max(1, image_size // 14), pad_if_needed=True),
        v2.RandomHorizontalFlip(),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        Standardize(mean, std),
    ])


class BatchAugment:
    """Batch-wise augmentation of a uint8 N x C x H x W tensor, all samples at once (airbench's
    approach): a random translation by up to `translate` pixels (zero padding), a horizontal flip
    with probability 1/2, and optionally random erasing of one box per image.

    The tensor may live on any device (on a GPU the augmentation runs there); the random numbers
    are drawn from `generator` on the CPU, so the result does not depend on the device."""

    def __init__(self, translate: int = 2, flip: bool = True, erase_p: float = 0.0,
                 erase_area: tuple[float, float] = (0.02, 0.25)) -> None:
        self.translate, self.flip = translate, flip
        self.erase_p, self.erase_area = erase_p, erase_area

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        if self.translate:
            p = self.translate
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = to_device(torch.randint(0, 2 * p + 1, (n,), generator=generator), dev)
            dx = to_device(torch.randint(0, 2 * p + 1, (n,), generator=generator), dev)
            rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # N x 1 x H x 1
            cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # N x 1 x 1 x W
            x = padded.gather(2, rows.expand(n, x.shape[1], h, w + 2 * p)).gather(
                3, cols.expand(n, x.shape[1], h, w))
        if self.flip:
            flip = to_device(torch.rand(n, generator=generator) < 0.5, dev)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.erase_p > 0:
            area = torch.empty(n).uniform_(*self.erase_area, generator=generator) * h * w
            log_r = torch.empty(n).uniform_(-1.2, 1.2, generator=generator)  # ratio 0.3-3.3
            eh = (area * log_r.exp()).sqrt().round().clamp(1, h).long()
            ew = (area / log_r.exp()).sqrt().round().clamp(1, w).long()
            y0 = (torch.rand(n, generator=generator) * (h - eh + 1)).long()
            x0 = (torch.rand(n, generator=generator) * (w - ew + 1)).long()
            apply = torch.rand(n, generator=generator) < self.erase_p
            eh, ew, y0, x0, apply = (to_device(t, dev) for t in (eh, ew, y0, x0, apply))
            ys, xs = torch.arange(h, device=dev)[None, :], torch.arange(w, device=dev)[None, :]
            inside = (((ys >= y0[:, None]) & (ys < (y0 + eh)[:, None]))[:, :, None]
                      & ((xs >= x0[:, None]) & (xs < (x0 + ew)[:, None]))[:, None, :])
            mask = (inside & apply[:, None, None])[:, None]
            x = x.masked_fill(mask, 0)
        return x
