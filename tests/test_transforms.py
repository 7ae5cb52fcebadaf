"""Section 6's image sampling, tested statistically with fixed seeds."""

import math
from collections import Counter

import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode

from inception.transforms import (
    PAPER_INTERPOLATIONS,
    BatchAugment,
    Lighting,
    RandomSizedCropRandomInterpolation,
    Standardize,
    eval_transform,
    folder_train_transform,
    paper_train_transform,
)


def _ks_uniform(samples: list[float], lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov distance between the samples and U[lo, hi]."""
    xs = sorted(samples)
    n = len(xs)
    return max(max((i + 1) / n - (x - lo) / (hi - lo), (x - lo) / (hi - lo) - i / n)
               for i, x in enumerate(xs))


@pytest.fixture(scope="module")
def crops():
    torch.manual_seed(0)
    t = RandomSizedCropRandomInterpolation(224)
    image = Image.new("RGB", (1000, 1000))
    return [t.make_params([image]) for _ in range(4000)]


def test_crop_area_is_uniform_between_8_and_100_percent(crops):
    areas = [p["height"] * p["width"] / 1e6 for p in crops]
    assert min(areas) >= 0.079 and max(areas) <= 1.0
    # Below 75% every box fits a square image, so no redraw thins the distribution there:
    # conditional on it, the area must be uniform on [8%, 75%].
    low = [a for a in areas if a <= 0.75]
    critical = 1.63 / math.sqrt(len(low))  # KS at the 1% level
    assert _ks_uniform(low, 0.08, 0.75) < critical
    # ... and the share of draws landing there is more than its 0.67/0.92 = 73% of the range.
    assert 0.73 < len(low) / len(areas) < 0.85


def test_crop_aspect_ratio_between_3_4_and_4_3(crops):
    ratios = [p["width"] / p["height"] for p in crops if p["height"] * p["width"] <= 0.75e6]
    assert min(ratios) >= 0.75 - 0.01 and max(ratios) <= 4 / 3 + 0.01
    logs = [math.log(r) for r in ratios]  # log-uniform, as torchvision draws it
    assert _ks_uniform(logs, math.log(3 / 4), math.log(4 / 3)) < 1.63 / math.sqrt(len(logs))


def test_interpolations_are_equally_likely(crops):
    counts = Counter(p["interpolation"] for p in crops)
    assert set(counts) == set(PAPER_INTERPOLATIONS)
    assert InterpolationMode.BOX in counts  # "area"
    expected = len(crops) / 4
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 11.34  # chi-square, 3 degrees of freedom, 1% level


def test_paper_transform_output():
    torch.manual_seed(0)
    t = paper_train_transform(64, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    out = t(Image.new("RGB", (100, 80), (128, 64, 32)))
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert out.abs().max() <= 1.0  # mean subtraction of [0, 1] pixels


def _samples(image: Image.Image, n: int = 200, **kwargs) -> torch.Tensor:
    torch.manual_seed(0)
    t = paper_train_transform(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), **kwargs)  # in [0, 1]
    return torch.stack([t(image) for _ in range(n)])


def test_paper_transform_flips_half_the_images():
    """A left-to-right gradient stays ordered under the crop, the colour distortions (monotone
    on a gray image) and the lighting (one shift per channel); a flip reverses it."""
    ramp = torch.linspace(0, 255, 120).round().to(torch.uint8).expand(90, 120)
    out = _samples(Image.fromarray(ramp.numpy()).convert("RGB"))
    flipped = (out[..., 0].mean((1, 2)) > out[..., -1].mean((1, 2))).float().mean().item()
    assert 0.35 < flipped < 0.65


def test_paper_transform_distorts_brightness_and_contrast():
    """Gray 128 everywhere: without the photometric distortions every crop would come out at
    128/255 (up to the lighting's few percent)."""
    gray = Image.new("RGB", (100, 80), (128, 128, 128))
    means = _samples(gray).mean((1, 2, 3))
    assert means.std() > 0.08 and means.min() < 0.4 and means.max() > 0.6
    assert _samples(gray, jitter=0.0).mean((1, 2, 3)).std() < 0.02  # the lighting alone


def test_paper_transform_adds_pca_lighting():
    """On a gray image brightness, contrast and saturation keep R = G = B; only the PCA lighting
    (a different shift per channel, mostly along the first eigenvector) separates them."""
    gray = Image.new("RGB", (100, 80), (128, 128, 128))
    out = _samples(gray)
    red_minus_blue = (out[:, 0] - out[:, 2]).mean((1, 2))
    assert red_minus_blue.abs().max() > 0.005 and red_minus_blue.std() > 0.001
    without = _samples(gray, lighting_std=0.0)
    assert (without[:, 0] - without[:, 2]).abs().max() < 1e-6


def test_lighting_shifts_along_imagenet_pca():
    torch.manual_seed(0)
    image = torch.full((3, 4, 4), 0.5)
    out = Lighting(0.1)(image.clone())
    shift = (out - image)[:, 0, 0]
    assert torch.allclose(out - image, shift.view(3, 1, 1).expand(3, 4, 4))
    assert shift.abs().sum() > 0
    gray = torch.full((1, 4, 4), 0.5)
    assert torch.equal(Lighting(0.1)(gray), gray)


def test_batch_augment_translates_and_flips_each_image_independently():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6).repeat(64, 1, 1, 1)
    out = BatchAugment(translate=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    # Every output is the input shifted by |dx|, |dy| <= 2 (zero fill), possibly mirrored.
    for i in range(len(x)):
        ok = False
        for flip in (False, True):
            src = x[i].flip(-1) if flip else x[i]
            padded = torch.nn.functional.pad(src, (2, 2, 2, 2))
            for dy in range(5):
                for dx in range(5):
                    if torch.equal(padded[:, dy:dy + 6, dx:dx + 6], out[i]):
                        ok = True
        assert ok, i
    assert len({out[i].sum().item() for i in range(0, len(x), 2)}) > 3  # not all the same shift
    again = BatchAugment(translate=2)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_batch_augment_erasing():
    x = torch.full((200, 1, 28, 28), 255, dtype=torch.uint8)
    out = BatchAugment(translate=0, flip=False, erase_p=0.5)(x, torch.Generator().manual_seed(1))
    erased = (out == 0).flatten(1).any(1).float().mean().item()
    assert 0.4 < erased < 0.6
    frac = (out == 0).flatten(1).float().mean(1)
    assert frac.max() <= 0.26


def test_decode_side_keeps_the_smallest_paper_crop_at_full_size():
    from inception.transforms import decode_side

    side = decode_side("paper", 224)
    assert side == 915
    assert side * math.sqrt(0.08 * 3 / 4) >= 224 > (side - 1) * math.sqrt(0.08 * 3 / 4)
    assert decode_side("folder", 224) == 224


def test_the_pipelines_normalise_as_torchvision_did_bit_for_bit():
    """`Standardize` (the code evaluation normalises with) computes what `v2.Normalize` did, so
    the training pipelines feed the model the same bytes as before it replaced it."""
    from torchvision.transforms import v2

    torch.manual_seed(0)
    image = torch.rand(3, 40, 30)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    assert torch.equal(Standardize(mean, std)(image), v2.Normalize(mean, std)(image))
    for make in (paper_train_transform, folder_train_transform):
        assert isinstance(make(32, mean, std).transforms[-1], Standardize)


def test_the_evaluation_transform_is_the_runs_preprocessing():
    from torchvision.transforms import v2

    from inception.preprocessing import Preprocessing

    image = Image.new("RGB", (57, 40), (200, 30, 90))
    p = Preprocessing.centre_crop(32, (0.5,) * 3, (0.25,) * 3)
    assert (p.resize, p.crop) == (37, 32)
    expected = p(v2.PILToTensor()(image))
    assert expected.shape == (3, 32, 32)
    assert torch.equal(eval_transform(32, (0.5,) * 3, (0.25,) * 3)(image), expected)
