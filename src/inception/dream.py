"""DeepDream (`inception dream`): a picture changed by gradient ascent until a layer's response to
it grows, and with it whatever that layer sees in the picture.

Mordvintsev, Olah and Tyka, "Inceptionism: Going Deeper into Neural Networks", Google Research
Blog, June 2015, and their notebook (github.com/google/deepdream, `dream.ipynb`), which ran
Caffe's bvlc_googlenet. This follows the notebook's method (its pyramid here is resized with
antialiasing, where the notebook's `nd.zoom` has none):

- the objective is the L2 norm of the layer's activation (the notebook's `objective_L2`, whose
  gradient is the activation itself: `dst.diff[:] = dst.data`), at `inception_4c/output` by
  default, here layer "4c";
- each step shifts the image by a random roll of up to 32 px (jitter), takes the gradient, rolls
  it back and moves the image by `lr` / mean(|gradient|) x gradient: a normalised step of 1.5
  pixel levels (0-255) on average, the notebook's `step_size` in Caffe's 0-255 input;
- octaves: an image pyramid of 4 levels, each 1.4 times smaller; 10 steps on each level from the
  smallest up, the detail added so far (the image minus its level's base) enlarged and carried to
  the next level;
- pixels are clipped to their valid range after every step (the notebook's `clip`).

The image is changed in pixel space, [0, 1] in the user's colours; the model's normalisation is
applied on the way into it. The rolls are drawn from a `torch.Generator` seeded by `seed`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from inception.data import convert_image, load_image
from inception.preprocessing import standardize
from inception.visualize import SEED, evaluating, layer_output, probe, target_module
from inception.weights import LoadedModel, check_pixels

if TYPE_CHECKING:
    from PIL.Image import Image

# The notebook's `deepdream` and `make_step` defaults.
LAYER, OCTAVES, OCTAVE_SCALE, STEPS, STEP, JITTER = "4c", 4, 1.4, 10, 1.5, 32


def read_pixels(loaded: LoadedModel, image: str | os.PathLike[str] | Image | torch.Tensor
                ) -> torch.Tensor:
    """1 x C x H x W float pixels in [0, 1], in the model's channels, on its device, from an
    image file, a PIL image, or a uint8 or [0, 1] float tensor C x H x W (`check_pixels`)."""
    from torchvision.transforms import v2

    if isinstance(image, torch.Tensor):
        check_pixels(image, "image", loaded.channels, dims=(3,))
        pixels = image.float() / 255 if image.dtype == torch.uint8 else image.detach().float()
    else:
        mode = "L" if loaded.channels == 1 else "RGB"
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image, mode)
        else:
            image = convert_image(image, mode)
        pixels = v2.PILToTensor()(image).float() / 255
    return pixels[None].to(loaded.device)


def pyramid(pixels: torch.Tensor, octaves: int, scale: float) -> list[torch.Tensor]:
    """`pixels` and `octaves` - 1 smaller copies, each `scale` times smaller (bilinear,
    antialiased), largest first."""
    levels = [pixels]
    for _ in range(octaves - 1):
        h, w = levels[-1].shape[-2:]
        size = (max(1, round(h / scale)), max(1, round(w / scale)))
        levels.append(F.interpolate(levels[-1], size=size, mode="bilinear", align_corners=False,
                                    antialias=True))
    return levels


def layer_norm(loaded: LoadedModel, module: nn.Module, pixels: torch.Tensor) -> float:
    """The L2 norm of `module`'s output for `pixels` (N x C x H x W in [0, 1]): what `dream`
    raises."""
    p = loaded.preprocessing
    with torch.no_grad(), evaluating(loaded.model):
        x = standardize(pixels.to(loaded.device), p.mean, p.std)
        return layer_output(loaded.model, module, x).float().norm().item()


def _step(loaded: LoadedModel, module: nn.Module, x: torch.Tensor, lr: float, jitter: int,
          generator: torch.Generator) -> torch.Tensor:
    """One normalised gradient-ascent step on a random roll of `x` (the notebook's
    `make_step`), clipped to [0, 1]."""
    p = loaded.preprocessing
    dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
    rolled = torch.roll(x, (dy, dx), (-2, -1)).requires_grad_()
    activation = layer_output(loaded.model, module, standardize(rolled, p.mean, p.std))
    (grad,) = torch.autograd.grad(activation.float().pow(2).sum() / 2, rolled)
    grad = torch.roll(grad, (-dy, -dx), (-2, -1))
    step = (lr / 255) / grad.abs().mean().clamp(min=torch.finfo(grad.dtype).tiny)
    return (x + step * grad).clamp(0, 1)


def dream(loaded: LoadedModel, image: Any, layer: str = LAYER, octaves: int = OCTAVES,
          octave_scale: float = OCTAVE_SCALE, steps: int = STEPS, lr: float = STEP,
          jitter: int = JITTER, seed: int = SEED, progress: bool = False) -> torch.Tensor:
    """DeepDream of `image` (a path, a PIL image, or a C x H x W uint8 or [0, 1] float tensor)
    at `layer` (a Table 1 row name): the dreamt image, C x H x W float pixels in [0, 1] at the
    image's own size, on the CPU.

    Defaults are the notebook's for bvlc_googlenet: layer 4c, 4 octaves of 1.4, 10 steps each of
    1.5 pixel levels (`lr`, in 0-255 units) on average, rolls of up to 32 px. A `LayerError`
    (a `ValueError`) names the valid layers; a `ValueError` says when the smallest octave is too
    small for the model to reach the layer."""
    from tqdm import tqdm

    module = target_module(loaded.model, layer)
    levels = pyramid(read_pixels(loaded, image), octaves, octave_scale)
    h, w = levels[-1].shape[-2:]
    with evaluating(loaded.model), torch.enable_grad():  # also under a caller's no_grad()
        probe(loaded, module, h, w, f"the smallest of {octaves} octaves, {w} x {h} px",
              f"layer {layer}", "use fewer octaves, a smaller octave scale or a larger image")
        generator = torch.Generator().manual_seed(seed)
        detail = torch.zeros_like(levels[-1])
        with tqdm(total=octaves * steps, desc=f"dream layer {layer}", unit="step", leave=False,
                  dynamic_ncols=True, disable=not progress) as bar:
            for base in reversed(levels):
                detail = F.interpolate(detail, size=base.shape[-2:], mode="bilinear",
                                       align_corners=False)
                x = base + detail
                for _ in range(steps):
                    x = _step(loaded, module, x, lr, jitter, generator)
                    bar.update()
                detail = x - base
    return x[0].cpu()
