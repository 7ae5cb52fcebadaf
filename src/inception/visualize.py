"""Feature visualization by activation maximisation (`inception visualize`): for each chosen channel
of a layer, or of one branch of an Inception module, an image that makes that channel fire.

Written here because no maintained library offers it for PyTorch: Captum 0.9.0 ships `attr`,
`concept`, `influence`, `metrics` and `robust` (its feature-visualization module, `captum.optim`,
was never released), and lucent, the PyTorch port of lucid, is unmaintained.

The method is the one of Olah, Mordvintsev and Schubert, "Feature Visualization", Distill 2017
(https://distill.pub/2017/feature-visualization/), with lucid's settings (`lucid.optvis`):

- a decorrelated parametrisation. The image is its Fourier spectrum, each frequency scaled by
  1/frequency, so that gradient steps move every spatial scale alike instead of piling up high
  frequencies (lucid's `fft_image`, initial spread 0.01, image divided by 4). For RGB models the
  three channels are mixed by the square root of ImageNet's colour correlation matrix, lucid's
  `color_correlation_svd_sqrt` (`lucid/optvis/param/color.py`), so that steps move decorrelated
  colours; a sigmoid maps the result into [0, 1] pixels. Other models get the Fourier part alone;
- transformation robustness: every step looks at the image padded, jittered, scaled, rotated and
  jittered again (lucid's `standard_transforms`), so that what is found survives small moves
  instead of being adversarial noise;
- Adam (learning rate 0.05) maximising the channel's mean activation over positions, taken
  before the channel's last ReLU where it has one, as lucid's tutorial does
  (`mixed4a_pre_relu:476`): a channel that the grey start leaves at zero still gets a gradient.

Images are optimised in pixel space, [0, 1] in the user's colours (an import from Caffe takes
RGB, `inception.caffe`), and the model's mean/std normalisation is applied only on the way into
the model, so what comes back is what to display. Every random draw comes from a
`torch.Generator` seeded by `seed`: on the CPU the same call gives the same bits.

The layer helpers (`target_module`, `layer_output`, `probe`) serve `inception.dream` too.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from inception.files import replace_atomically
from inception.modules import BRANCHES, ConvReLU, Inception
from inception.preprocessing import standardize
from inception.weights import LoadedModel

if TYPE_CHECKING:
    from tqdm import tqdm

# lucid's `color_correlation_svd_sqrt`: the square root of ImageNet's RGB colour correlation.
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
STEPS, LR, SEED = 512, 0.05, 0  # lucid's render_vis: 512 steps of Adam(0.05)
SPECTRUM_SD, FFT_DIVISOR = 0.01, 4.0  # lucid's fft_image
GROUP = 16  # channels optimised together (one batch); more channels run group after group
# lucid's standard_transforms, for its 128 px renders (smaller images get proportionally less).
PAD, JITTER, LATE_JITTER, REFERENCE_SIDE = 12, 8, 4, 128
SCALES = tuple(1 + (i - 5) / 50 for i in range(11))  # 0.9 .. 1.1
ANGLES = (*range(-10, 11), 0, 0, 0, 0, 0)  # degrees; no rotation a little more often
SHOWN_SIDE = 128  # grid tiles smaller than this are enlarged (nearest neighbour) to be seen


class LayerError(ValueError):
    """A layer, branch or channel the model does not have; the message lists the valid ones."""


def target_module(model: nn.Module, layer: str, branch: str | None = None) -> nn.Module:
    """The module whose output is `layer` (a Table 1 row name of `model.layers`, "conv1" ..
    "linear") or, with `branch` ("1x1", "3x3", "5x5", "pool"), that branch of the Inception
    module `layer`. `LayerError` names the valid choices."""
    if layer not in model.layers:
        raise LayerError(f"layer {layer!r}: not a layer of this model; the layers are "
                         f"{', '.join(model.layers)}")
    module = model.layers[layer]
    if branch is None:
        return module
    if branch not in BRANCHES:
        raise LayerError(f"branch {branch!r}: not a branch; the branches are "
                         f"{', '.join(BRANCHES)}")
    if not isinstance(module, Inception):
        modules = [name for name, m in model.layers.items() if isinstance(m, Inception)]
        raise LayerError(f"branch {branch}: layer {layer} is not an Inception module; the "
                         f"Inception modules are {', '.join(modules)}")
    found = getattr(module, BRANCHES[branch])
    if found is None:
        have = [b for b, attr in BRANCHES.items() if getattr(module, attr) is not None]
        raise LayerError(f"branch {branch}: layer {layer} has no pool branch (pool_branch="
                         f"False); its branches are {', '.join(have)}")
    return found


class _Reached(Exception):
    """Raised by `layer_output`'s hook: the rest of the forward pass is not needed."""


def final_relus(module: nn.Module) -> list[nn.ReLU] | None:
    """The ReLUs that produce `module`'s output, channel block by channel block: one for a
    convolution layer or branch, one per branch for an Inception module. None where the output
    does not come straight out of ReLUs (a pool, an LRN, the naive module's pool branch)."""
    if isinstance(module, ConvReLU):
        return [module.relu]
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], ConvReLU):
        return [module[-1].relu]
    if isinstance(module, Inception):
        found = [final_relus(b) for b in module.branches()]
        if all(found):
            return [relu for f in found for relu in f]
    return None


def layer_output(model: nn.Module, module: nn.Module, x: torch.Tensor,
                 before_relu: bool = False) -> torch.Tensor:
    """`module`'s output when `model` runs on `x`, the layers after it skipped (a forward hook
    that stops the pass), with its autograd graph back to `x`. `before_relu`: the same channels
    before their last ReLU, where the output comes straight out of ReLUs (`final_relus`)."""
    relus = final_relus(module) if before_relu else None
    captured: list[torch.Tensor] = []

    def keep(_relu: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        captured.append(args[0])
        return (args[0].clone(),)  # the in-place ReLU then leaves the kept tensor as it was

    def stop(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if not relus:
            captured.append(output)
        raise _Reached

    handles = [relu.register_forward_pre_hook(keep) for relu in relus or ()]
    handles.append(module.register_forward_hook(stop))
    try:
        model(x)
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(captured, 1) if len(captured) > 1 else captured[0]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside the block (dropout off, BatchNorm's running statistics, the
    Inception modules' branches run one by one so that hooks on them fire), its mode restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def probe(loaded: LoadedModel, module: nn.Module, height: int, width: int, what: str,
          where: str, remedy: str) -> int:
    """The channels of `module`'s output for a `height` x `width` input; a `ValueError` in one
    line ("WHAT: too small ... to reach WHERE ...; REMEDY") when the input is too small for the
    forward pass to reach it."""
    x = torch.zeros(1, loaded.channels, height, width, device=loaded.device)
    try:
        with torch.no_grad():
            return layer_output(loaded.model, module, x).shape[1]
    except RuntimeError as e:
        raise ValueError(f"{what}: too small for the model to reach {where} "
                         f"({str(e).splitlines()[0]}); {remedy}") from e


def parse_channels(spec: str | Sequence[int] | None, count: int, where: str) -> list[int]:
    """Channel numbers from "0-15", "7" or "0,3,9-11" (or a sequence of ints), each checked to
    be below `count`; None: the first 16 (all of a smaller layer). `LayerError` otherwise."""
    valid = f"{where} has channels 0-{count - 1}"
    if spec is None:
        return list(range(min(GROUP, count)))
    channels: list[int] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m or int(m[2] or m[1]) < int(m[1]):
                raise LayerError(f"channels {spec!r}: not a list such as 0-15 or 0,3,7; {valid}")
            last = int(m[2] or m[1])
            if last >= count:
                raise LayerError(f"channel {last}: out of range; {valid}")
            channels += range(int(m[1]), last + 1)
    else:
        channels = [int(c) for c in spec]
    bad = [c for c in channels if not 0 <= c < count]
    if bad or not channels:
        raise LayerError(f"channel {bad[0]}: out of range; {valid}" if bad else
                         f"no channels given; {valid}")
    return channels


class FourierImage:
    """`n` images of `channels` x `size` x `size`, parametrised by their scaled spectrum (and
    for 3 channels lucid's colour decorrelation): `pixels()` gives them in [0, 1]."""

    def __init__(self, n: int, channels: int, size: int, generator: torch.Generator,
                 device: torch.device) -> None:
        fy = torch.fft.fftfreq(size, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(size, dtype=torch.float64)[None, :]
        frequency = (fx * fx + fy * fy).sqrt().clamp(min=1.0 / size)
        self.scale = (1.0 / frequency).float().to(device)
        self.size = size
        init = torch.randn((n, channels, size, size // 2 + 1, 2), generator=generator)
        self.spectrum = (init * SPECTRUM_SD).to(device).requires_grad_()
        self.colors = None
        if channels == 3:
            m = torch.tensor(COLOR_CORRELATION_SVD_SQRT)
            self.colors = (m / m.norm(dim=0).max()).to(device)

    def pixels(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / FFT_DIVISOR
        if self.colors is not None:
            image = torch.einsum("dc,nchw->ndhw", self.colors, image)
        return torch.sigmoid(image)


def _pick(options: Sequence, generator: torch.Generator) -> object:
    return options[int(torch.randint(len(options), (), generator=generator))]


def _jitter(x: torch.Tensor, d: int, generator: torch.Generator) -> torch.Tensor:
    """A random crop `d` px smaller on each axis (lucid's `jitter`)."""
    dy, dx = (int(v) for v in torch.randint(d + 1, (2,), generator=generator))
    return x[..., dy:x.shape[-2] - d + dy, dx:x.shape[-1] - d + dx]


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """`x` rotated about its centre, bilinear, edges extended (differentiable)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                         dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _shifts(size: int) -> tuple[int, ...]:
    """lucid's pad and jitters for 128 px images, for `size` px: proportionally fewer below
    128 px, at least 1."""
    fraction = min(1.0, size / REFERENCE_SIDE)
    return tuple(max(1, round(p * fraction)) for p in (PAD, JITTER, LATE_JITTER))


def smallest_view(size: int) -> int:
    """The side of the smallest view `robust_view` can make of a `size` px image."""
    pad, jitter, late = _shifts(size)
    return math.floor((size + 2 * pad - jitter) * min(SCALES)) - late


def robust_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of the images `x` (lucid's `standard_transforms`): pad 12 px of grey,
    jitter 8, scale by 0.9-1.1, rotate by -10..10 degrees, jitter 4 (pixel counts for 128 px
    images, `_shifts`)."""
    pad, jitter, late = _shifts(x.shape[-1])
    x = _jitter(F.pad(x, [pad] * 4, value=0.5), jitter, generator)
    x = F.interpolate(x, scale_factor=_pick(SCALES, generator), mode="bilinear",
                      align_corners=False)
    return _jitter(_rotate(x, _pick(ANGLES, generator)), late, generator)


def channel_means(activation: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Image i's mean activation of channel `channels[i]`, over positions (N x C x H x W, or
    N x C for the classifier's logits)."""
    n = activation.shape[0]
    picked = activation[torch.arange(n, device=activation.device), channels]
    return picked.reshape(n, -1).mean(1)


def _optimise(loaded: LoadedModel, module: nn.Module, channels: list[int], steps: int,
              size: int, seed: int, lr: float, before_relu: bool, bar: tqdm) -> torch.Tensor:
    """One group of channels' images, optimised together (each its own channel), on the model's
    device; the random draws come from a CPU generator seeded by `seed`."""
    device, p = loaded.device, loaded.preprocessing
    generator = torch.Generator().manual_seed(seed)
    image = FourierImage(len(channels), loaded.channels, size, generator, device)
    optimizer = torch.optim.Adam([image.spectrum], lr=lr, maximize=True)
    index = torch.tensor(channels, device=device)
    for _ in range(steps):
        view = standardize(robust_view(image.pixels(), generator), p.mean, p.std)
        activation = layer_output(loaded.model, module, view, before_relu)
        objective = channel_means(activation, index).sum()
        (image.spectrum.grad,) = torch.autograd.grad(objective, image.spectrum)
        optimizer.step()
        bar.update()
    with torch.no_grad():
        return image.pixels().cpu()


def visualize(loaded: LoadedModel, layer: str, channels: str | Sequence[int] | None = None,
              branch: str | None = None, steps: int = STEPS, size: int | None = None,
              seed: int = SEED, lr: float = LR, before_relu: bool = True,
              progress: bool = False) -> torch.Tensor:
    """Feature visualizations of `channels` ("0-15", "0,3,7", a list; default the first 16) of
    `layer` (a Table 1 row name: "conv1", "3a" .. "5b", "linear" for the classes' logits), or of
    its `branch` ("1x1", "3x3", "5x5", "pool"): N x C x `size` x `size` float pixels in [0, 1]
    in the user's colours (RGB or grey, the model's normalisation undone), one image per
    channel in the order given, on the CPU.

    `size` defaults to the model's input size; `steps` of Adam at `lr` (lucid's 512 and 0.05);
    channels run 16 at a time, each group from `seed`, so an image depends on the seed and its
    place in its group. `before_relu`: maximise the channel before its last ReLU where it has
    one (`final_relus`), as lucid's tutorial does (its `..._pre_relu` tensors):
    a channel that the grey starting image leaves at zero everywhere still gets a gradient, and
    where it is positive the two are the same. Raises `LayerError` for a layer, branch or
    channel the model lacks."""
    from tqdm import tqdm

    model = loaded.model
    module = target_module(model, layer, branch)
    size = size or loaded.image_size
    where = f"layer {layer}" + (f" branch {branch}" if branch else "")
    with evaluating(model), torch.enable_grad():  # also under a caller's no_grad()
        side = min(size, smallest_view(size))
        count = probe(loaded, module, side, side, f"size {size} (views down to {side} px)",
                      where, "use a larger size")
        chosen = parse_channels(channels, count, where)
        groups = [chosen[i:i + GROUP] for i in range(0, len(chosen), GROUP)]
        with tqdm(total=steps * len(groups), desc=f"visualize {where}", unit="step",
                  leave=False, dynamic_ncols=True, disable=not progress) as bar:
            return torch.cat([_optimise(loaded, module, group, steps, size, seed, lr,
                                        before_relu, bar) for group in groups])


def grid(images: torch.Tensor, per_row: int | None = None) -> torch.Tensor:
    """N x C x H x W images as one C x H' x W' grid, row by row (about square, white lines
    between), tiles under 128 px enlarged by a whole factor (nearest neighbour)."""
    from torchvision.utils import make_grid

    factor = max(1, SHOWN_SIDE // max(images.shape[-2:]))
    if factor > 1:
        images = F.interpolate(images, scale_factor=factor, mode="nearest")
    per_row = per_row or math.ceil(math.sqrt(images.shape[0]))
    return make_grid(images, nrow=per_row, padding=2, pad_value=1.0)


def write_png(image: torch.Tensor, path: str | Path) -> Path:
    """A C x H x W image of [0, 1] pixels (1 or 3 channels) as a PNG at `path`, written
    atomically (`files.replace_atomically`)."""
    from torchvision.utils import save_image

    path = Path(path)
    replace_atomically(path, lambda f: save_image(image, f, format="png"), "wb")
    return path
