"""`inception.explain`: where in an image a classifier of GoogLeNet finds each of its top classes,
as `inception predict --explain DIR` draws it.

Two methods, chosen by what the head allows:

- the class activation map (CAM) of Zhou et al., *Learning Deep Features for Discriminative
  Localization* (CVPR 2016, arXiv:1512.04150), for the main classifier on the paper's global
  average pool. There the logits are `W · mean_hw(F) + b` with F the N x C x h x w output of 5b,
  so `CAM_c(h, w) = W_c · F(:, h, w)` is an exact decomposition of the logit: its mean over the
  positions is `logit_c - b_c`, to float rounding. Nothing is estimated.
- Grad-CAM, Selvaraju et al., *Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization* (ICCV 2017, arXiv:1610.02391), through Captum's
  `captum.attr.LayerGradCam`, wherever the CAM is not defined: the `head="fc"` variant (a fully
  connected layer over 5b's positions), the auxiliary heads on 4a and 4d, and any other layer.
  Each channel of the layer is weighted by the mean gradient of the class's logit over its
  positions, and the sum is passed through a ReLU, as in the paper. On the average-pool head at
  5b it is ReLU(CAM) / (h w), which the tests check.

The maps are of the crop the model classifies: the image resized and centre-cropped by the
model's own `Preprocessing` (Caffe's warp included), so one crop, whatever `--crops` says. The
crop is returned in the user's pixels (uint8, the model's channels: RGB for an imported Caffe
model, whose BGR order is folded into conv1), and each map is upsampled to it (bilinear).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from inception.files import replace_atomically
from inception.model import GoogLeNet
from inception.plots import _pyplot
from inception.predict import _as_uint8, _items, _pixels
from inception.preprocessing import Preprocessing, crop_boxes, extract_crops
from inception.weights import LoadedModel, check_pixels

if TYPE_CHECKING:
    from inception.predict import ImageInput

# The last Inception module: the layer whose average the main classifier reads.
CAM_LAYER = "5b"
METHODS = ("auto", "cam", "grad-cam")
# The most classes a PNG of `inception predict --explain` shows, one panel each.
MAX_PANELS = 10
# Images in one Grad-CAM pass: one per class explained, so a large `topk` goes in chunks.
GRAD_CAM_BATCH = 16
PAPERS = {"cam": "Zhou et al. 2016", "grad-cam": "Selvaraju et al. 2017"}


class ExplainError(ValueError):
    """A head, layer or method that the model does not have: `argument` and `value` name it and
    `reason` says what there is instead; the message is "ARGUMENT 'VALUE': REASON", one line."""

    def __init__(self, argument: str, value: str, reason: str) -> None:
        super().__init__(f"{argument} {value!r}: {reason}")
        self.argument, self.value, self.reason = argument, value, reason


@dataclass
class Explanation:
    """One image's explanation. `pixels` is the crop the model classified (uint8 C x S x S, the
    user's colours); for each of the top classes, most probable first, `classes`, `indices`,
    `scores` (the head's softmax probabilities on this crop) and `logits`; `cams` the maps at the
    layer's resolution (k x h x w: for the CAM in logit units, for Grad-CAM after its ReLU) and
    `maps` the same upsampled to the crop (k x S x S)."""

    image: str
    pixels: torch.Tensor
    classes: list[str]
    indices: list[int]
    scores: list[float]
    logits: list[float]
    cams: torch.Tensor
    maps: torch.Tensor
    method: str
    head: str
    layer: str


def heads(model: GoogLeNet) -> list[str]:
    """The classifiers of `model` that can be explained: "main" and "aux-4a", "aux-4d" when the
    model has its auxiliary heads."""
    return ["main", *(f"aux-{tap}" for tap in model.aux)]


def layers(model: GoogLeNet, head: str = "main") -> list[str]:
    """The Table 1 rows whose output `head` depends on, conv1 first: the layers a map can be
    computed on (up to 5b for the main head, up to the tap for an aux head)."""
    if head not in heads(model):
        raise ExplainError("head", head, f"choose one of {', '.join(heads(model))}")
    names = list(model.layers)
    last = CAM_LAYER if head == "main" else head.removeprefix("aux-")
    return names[:names.index(last) + 1]


def check_target(model: GoogLeNet, head: str = "main", layer: str | None = None,
                 method: str = "auto") -> tuple[str, str]:
    """(layer, method) for explaining `head` of `model`: the layer defaults to 5b for the main
    head and to the tap (4a or 4d) for an aux head; method "auto" is the exact CAM where it is
    defined (main head, average pool, 5b) and Grad-CAM elsewhere. A name the model does not have
    is an `ExplainError` listing the ones it has."""
    names = layers(model, head)
    layer = layer or names[-1]
    if layer not in names:
        raise ExplainError("layer", layer, f"the {head} head reads only {', '.join(names)}")
    if method not in METHODS:
        raise ExplainError("method", method, f"choose one of {', '.join(METHODS)}")
    cam_defined = head == "main" and model.config.head == "avgpool" and layer == CAM_LAYER
    if method == "cam" and not cam_defined:
        raise ExplainError("method", method, f"the CAM needs the main head on an average pool "
                                             f"and layer {CAM_LAYER}; use grad-cam or auto")
    if method == "auto":
        method = "cam" if cam_defined else "grad-cam"
    return layer, method


def class_activation_maps(model: GoogLeNet, x: torch.Tensor) -> tuple[torch.Tensor,
                                                                     torch.Tensor]:
    """(CAMs N x classes x h x w, logits N x classes) of a normalised batch `x`, in eval mode:
    `CAM_c = W_c · F` over 5b's channels at every position (Zhou et al. 2016), so that each
    map's mean over the positions is the logit minus the classifier's bias."""
    if model.config.head != "avgpool":
        raise ExplainError("model.config.head", model.config.head, "the CAM needs the "
                           "average-pool head; Grad-CAM explains the others")
    with _eval(model), torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        cams = torch.einsum("kc,nchw->nkhw", model.layers["linear"].weight, features)
    return cams, logits


def grad_cam(model: GoogLeNet, x: torch.Tensor, targets: torch.Tensor, head: str = "main",
             layer: str = CAM_LAYER) -> torch.Tensor:
    """Grad-CAM maps (N x h x w, after the paper's ReLU) of class `targets[i]` for image
    `x[i]` of a normalised batch, on `layer`'s output, for the classifier `head`: Captum's
    `LayerGradCam` (Selvaraju et al. 2017)."""
    from captum.attr import LayerGradCam

    layer, _ = check_target(model, head, layer, "grad-cam")
    with _eval(model), torch.enable_grad():
        attribution = LayerGradCam(_forward(model, head), model.layers[layer]).attribute(
            x.detach().clone().requires_grad_(True), target=targets.tolist(),
            relu_attributions=True)
    return attribution.detach()[:, 0]


def explain(model: LoadedModel, images: ImageInput | Iterable[ImageInput], topk: int = 3,
            head: str = "main", layer: str | None = None,
            method: str = "auto") -> list[Explanation]:
    """For each image, the `topk` most probable classes of classifier `head` ("main", "aux-4a",
    "aux-4d") with their scores and maps (`Explanation`), in the order given.

    `images` are what `inception.predict` takes (paths, PIL images, uint8 or [0, 1] float
    tensors); a file that cannot be read raises `PredictError` naming it. `layer` (a Table 1
    row) and `method` ("cam", "grad-cam", "auto": the CAM where it is exact) as `check_target`
    checks them: a bad name is an `ExplainError` listing the valid ones.

    >>> [e] = inception.explain(inception.load("runs/RUN"), "shirt.jpg", topk=3)
    >>> e.classes, e.scores, e.maps.shape   # maps: 3 x S x S over e.pixels, the crop
    """
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer; got {topk!r}")
    net = model.model
    layer, method = check_target(net, head, layer, method)
    k = min(topk, len(model.classes))
    out = []
    for name, pixels in _inputs(model, images):
        crop = centre_crop(model.preprocessing, pixels)
        x = model.preprocessing.normalize(crop[None]).to(model.device)
        if method == "cam":
            cams, logits = class_activation_maps(net, x)
        else:
            with _eval(net), torch.no_grad():
                logits = _forward(net, head)(x)
        probs, order = logits[0].float().softmax(0).topk(k)
        logits = logits[0, order]
        if method == "cam":
            cams = cams[0, order]
        else:
            cams = torch.cat([grad_cam(net, x.expand(len(t), -1, -1, -1), t, head, layer)
                              for t in order.split(GRAD_CAM_BATCH)])
        maps = F.interpolate(cams[None].float(), size=tuple(crop.shape[-2:]), mode="bilinear",
                             align_corners=False)[0]
        out.append(Explanation(name, crop.cpu(), [model.classes[i] for i in order.tolist()],
                               order.tolist(), probs.tolist(), logits.tolist(), cams.cpu(),
                               maps.cpu(), method, head, layer))
    return out


def centre_crop(preprocessing: Preprocessing, pixels: torch.Tensor) -> torch.Tensor:
    """The 1-crop view of uint8 C x H x W pixels, still uint8: what `Preprocessing.views`
    normalises (Caffe's warp first when the record has it)."""
    p = preprocessing
    if p.warp:
        pixels = TF.resize(pixels, [p.resize, p.resize], antialias=True)
    boxes = crop_boxes(pixels.shape[-1], pixels.shape[-2], 1, p.crop, resize=p.resize)
    return extract_crops(pixels, boxes, p.crop)[0]


def save_explanations(explanations: Iterable[Explanation], folder: str | Path) -> list[Path]:
    """One PNG per explanation in `folder` (made if missing): the crop, then each top class's
    map over it with the class and its score; named after the image (its file's stem and
    "-explain", made unique, so that an image in `folder` itself is never replaced), written
    atomically. Returns the paths, in order.

    Each map is drawn from 0 to its own maximum (negative CAM values, evidence against the class,
    are drawn as 0, as Grad-CAM's ReLU does), so colours compare positions, not classes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    taken: set[str] = set()
    for e in explanations:
        stem = re.sub(r"[^\w.-]+", "-", Path(e.image).stem).strip("-.") or "image"
        name, n = f"{stem}-explain.png", 1
        while name in taken:
            n += 1
            name = f"{stem}-explain-{n}.png"
        taken.add(name)
        blob = _figure(e)
        replace_atomically(folder / name, lambda f, blob=blob: f.write(blob), "wb")
        paths.append(folder / name)
    return paths


def explain_predictions(model: LoadedModel, results: list[dict[str, Any]], folder: str | Path,
                        head: str = "main", layer: str | None = None) -> None:
    """`inception predict --explain`: the PNGs (`save_explanations`) of the images of
    `inception.predict`'s `results` that were read, for as many classes as each lists (at most
    `MAX_PANELS`); each such result gains "explanation", its PNG's path."""
    readable = [r for r in results if "error" not in r]
    if not readable:
        return
    topk = min(len(readable[0]["predictions"]), MAX_PANELS)
    found = explain(model, [r["image"] for r in readable], topk, head, layer)
    for r, path in zip(readable, save_explanations(found, folder), strict=True):
        r["explanation"] = str(path)


def _figure(e: Explanation) -> bytes:
    """The PNG of one explanation: the crop, then one panel per class with its map overlaid."""
    plt = _pyplot()
    k = len(e.classes)
    fig, axes = plt.subplots(1, k + 1, figsize=(2.6 * (k + 1), 3.1), squeeze=False)
    image = e.pixels.permute(1, 2, 0).numpy()
    gray = image.shape[-1] == 1
    shown = image[..., 0] if gray else image
    for i, ax in enumerate(axes[0]):
        ax.imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255)
        ax.set_axis_off()
        if i == 0:
            ax.set_title("input crop", fontsize=9)
            continue
        heat = e.maps[i - 1].clamp(min=0)
        heat = heat / heat.max() if heat.max() > 0 else heat
        ax.imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{e.classes[i - 1]}\n{e.scores[i - 1] * 100:.1f}%", fontsize=9)
    fig.suptitle(f"{Path(e.image).name}: {e.method} ({PAPERS[e.method]}), {e.head} head, "
                 f"layer {e.layer}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _inputs(model: LoadedModel, images: ImageInput | Iterable[ImageInput]
            ) -> list[tuple[str, torch.Tensor]]:
    """(name, uint8 C x H x W) for each image, named as `inception.predict` names them."""
    if isinstance(images, torch.Tensor):
        check_pixels(images, "images", model.channels)
        batch = _as_uint8(images if images.ndim == 4 else images[None])
        return [(f"images[{i}]", pixels) for i, pixels in enumerate(batch)]
    return [(name, _pixels(model, item, name, 1)) for name, item in _items(images, model.channels)]


def _forward(model: GoogLeNet, head: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The logits of classifier `head` as a function of the normalised input."""
    if head == "main":
        return model
    tap = head.removeprefix("aux-")

    def forward(x: torch.Tensor) -> torch.Tensor:
        if model.config.transform_input:
            x = model.transform_input(x)
        for name in layers(model, head):
            x = model.layers[name](x)
        return model.aux[tap](x)

    return forward


@contextmanager
def _eval(model: GoogLeNet) -> Iterator[None]:
    """Eval mode for the duration (dropout off, BatchNorm's running statistics: the maps of the
    model as it predicts), then the mode it had."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)
