"""Weights in and out: our trained models (`load`) and torchvision's GoogLeNet (`from_torchvision`).

A trained model is `model.safetensors` (inference weights, no aux heads) with `model.json` beside
it: the model config, the preprocessing it was trained with and the class names. `load` needs
nothing else, so `inception eval`, `predict` and `export` take no model flags.

Every load is safe: safetensors for weights, `torch.load(weights_only=True)` for torchvision's
`.pth` files. A file that is not what it claims to be is refused with a `WeightsError` naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inception.config import ConfigError, GoogLeNetConfig
from inception.devices import resolve_device
from inception.files import replace_atomically
from inception.model import GoogLeNet
from inception.preprocessing import Preprocessing, PreprocessingError, standardize, to_unit
from inception.torchvision_compat import to_torchvision_key

MODEL_FILE, META_FILE = "model.safetensors", "model.json"


class WeightsError(ValueError):
    """A model file that cannot be loaded; the message names the file and what to do."""


@dataclass
class LoadedModel:
    """A model ready for inference, with everything needed to feed it and read its output.
    `preprocessing` may be given as `model.json`'s dict; it is kept as a `Preprocessing`."""

    model: GoogLeNet
    preprocessing: Preprocessing
    classes: list[str]
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    _runners: dict[str, nn.Module] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.preprocessing, dict):
            self.preprocessing = Preprocessing.from_dict(self.preprocessing)

    @property
    def config(self) -> GoogLeNetConfig:
        return self.model.config

    @property
    def image_size(self) -> int:
        return self.preprocessing.crop

    @property
    def channels(self) -> int:
        return self.preprocessing.channels

    def runner(self, precision: str = "fp32") -> nn.Module:
        """The inference-only form of the model (`optimize_for_inference`) in `precision`
        ("fp32" or "bf16"), built once and kept."""
        from inception.inference import optimize_for_inference

        if precision not in self._runners:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
            self._runners[precision] = optimize_for_inference(self.model, dtype=dtype)
        return self._runners[precision]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of a normalised batch (`normalize`), as `model(x)` would give them; the
        batch is moved to the model's device. For image files: `inception.predict`."""
        return self.model(x.to(self.device))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels (N x C x H x W or C x H x W, C the model's channels) -> the float input the
        model was trained on, on the images' device. uint8 pixels are 0-255; floating-point ones
        must be in [0, 1] (`check_pixels`): the range is checked, never guessed, so 0.5 is half
        intensity and a float image in 0-255 is refused with the range it has."""
        check_pixels(images, "images", self.channels)
        unit = to_unit(images) if images.dtype == torch.uint8 else images.float()
        return standardize(unit, self.preprocessing.mean, self.preprocessing.std)


def check_pixels(images: Any, argument: str = "images", channels: int | None = None,
                 dims: tuple[int, ...] = (3, 4)) -> None:
    """Refuse, naming `argument`, what is not an image tensor: a `TypeError` for anything but a
    uint8 (0-255) or floating-point tensor, a `ValueError` for a float tensor with values
    outside [0, 1] (the range found is in the message), and for a shape that is not C x H x W
    (`dims` 3) or N x C x H x W (`dims` 4) with `channels` channels when given."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{argument}: expected a torch.Tensor of pixels (uint8 0-255, or float "
                        f"in [0, 1]); got {type(images).__name__}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"{argument}: expected uint8 (0-255) or floating-point (0-1) pixels; "
                        f"got {images.dtype} (convert 0-255 values with .to(torch.uint8))")
    shape = {(3,): "C x H x W", (4,): "N x C x H x W"}.get(dims, "C x H x W or N x C x H x W")
    if (images.ndim not in dims or (channels is not None and images.shape[-3] != channels)
            or 0 in images.shape[-2:]):
        need = f"{shape}{f' with {channels} channel(s)' if channels is not None else ''}"
        raise ValueError(f"{argument}: expected {need}; got shape {tuple(images.shape)}")
    if images.is_floating_point() and images.numel():
        low, high = torch.aminmax(images.detach().float())
        low, high = low.item(), high.item()
        if not (low >= 0.0 and high <= 1.0):  # NaN fails both
            raise ValueError(f"{argument}: float pixels must be in [0, 1]; found values in "
                             f"[{low:.4g}, {high:.4g}] (divide 0-255 values by 255, or pass "
                             "them as uint8)")


def resolve_model_path(path: str | Path) -> tuple[Path, Path]:
    """(weights file, model.json) for a run directory or a `.safetensors` file."""
    path = Path(path)
    weights = path / MODEL_FILE if path.is_dir() else path
    if not weights.exists():
        where = f"{path} has no {MODEL_FILE}" if path.is_dir() else f"{path} does not exist"
        raise WeightsError(f"MODEL {where}; give a run directory of `inception train` or its "
                           f"{MODEL_FILE}")
    if weights.suffix != ".safetensors":
        pickled = weights.suffix in (".pt", ".pth", ".pkl", ".bin")
        raise WeightsError(f"MODEL {weights}: expected a .safetensors file (with {META_FILE} "
                           "beside it) or a run directory" + (
                               "; pickled checkpoints are not loaded" if pickled else
                               " (an exported file runs in its own runtime, not here)"))
    meta = weights.with_name(META_FILE)
    if not meta.exists():
        raise WeightsError(f"MODEL {weights}: {META_FILE} is missing beside it; it holds the "
                           "model config and preprocessing, copy it along with the weights")
    return weights, meta


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, refusing anything else by name."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e}); it may be truncated "
                           "or corrupt") from e


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """`model.load_state_dict(state)` with mismatches reported as one line naming `source`."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("wrong shape", wrong)) if keys]
        raise WeightsError(f"{source}: the weights do not fit the model config "
                           f"({'; '.join(parts)})")
    model.load_state_dict(state)


def load(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The trained model at `path` (a run directory or its `model.safetensors`), in eval mode,
    on `device` ("cpu", "cuda", "auto": the GPU when there is one).

    >>> m = inception.load("runs/fashion-mnist-20261125-101500")
    >>> [m.classes[i] for i in m(m.normalize(images)).argmax(1)]
    """
    weights, meta_path = resolve_model_path(path)
    try:
        meta = json.loads(meta_path.read_text())
        config = GoogLeNetConfig.from_dict(meta["model"])
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        classes = list(meta["classes"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError, PreprocessingError) as e:
        raise WeightsError(f"{meta_path}: not a valid {META_FILE} ({e})") from e
    if len(classes) != config.num_classes:
        raise WeightsError(f"{meta_path}: {len(classes)} class names for a "
                           f"{config.num_classes}-class model")
    if preprocessing.channels != config.in_chans:
        raise WeightsError(f"{meta_path}: preprocessing for {preprocessing.channels} channels, "
                           f"but the model takes {config.in_chans}")
    model = GoogLeNet(config)
    load_state(model, read_safetensors(weights), weights)
    extra = {k: v for k, v in meta.items() if k not in ("model", "preprocessing", "classes")}
    # channels_last: faster than NCHW on CPUs (`inception bench` times both forms of
    # torchvision's model; BENCHMARKS.md, "Inference and training at 224 px").
    model = model.to(resolve_device(device), memory_format=torch.channels_last).eval()
    return LoadedModel(model, preprocessing, classes, weights, extra)


def save_model(folder: str | Path, config: GoogLeNetConfig, state: dict[str, torch.Tensor],
               preprocessing: Preprocessing, classes: list[str],
               extra: dict[str, Any] | None = None) -> Path:
    """Write the model directory `load` reads: `model.safetensors` (`state`, on the CPU) and
    `model.json` (`config`, `preprocessing`, `classes` and the `extra` keys). Both files are
    serialised before either is written, and each is written atomically. Returns the weights'
    path."""
    from safetensors.torch import save

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    blob = save(state, metadata={"format": "inception.googlenet"})
    meta = json.dumps({"model": config.to_dict(), "preprocessing": preprocessing.to_dict(),
                       "classes": classes, **(extra or {})}, indent=2) + "\n"
    path = folder / MODEL_FILE
    replace_atomically(path, lambda f: f.write(blob), "wb")
    replace_atomically(folder / META_FILE, lambda f: f.write(meta))
    return path


# -- torchvision ----------------------------------------------------------------------------------

def read_torchvision_state(source: str | Path | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision GoogLeNet state dict from a dict, a `.pth` (weights_only) or safetensors."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file; download torchvision's googlenet-1378be20.pth "
                           "or save a state dict there")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated files and pickles carrying code are refused alike
        raise WeightsError(f"{path}: not a loadable state dict ({type(e).__name__}); only plain "
                           "tensors are accepted (weights_only=True)") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return state


def _check_torchvision_layout(config: GoogLeNetConfig, source: str | Path) -> None:
    """torchvision's GoogLeNet has every module's pooling path and an average-pool head."""
    if not config.pool_branch or config.head != "avgpool":
        raise WeightsError(f"{source}: torchvision's weights need pool_branch=True and "
                           "head='avgpool' (its model has the pooling paths and no FC head)")


def from_torchvision(state_dict_or_path: str | Path | dict[str, torch.Tensor],
                     transform_input: bool = False, **overrides: Any) -> GoogLeNet:
    """Our GoogLeNet in torchvision's layout (`GoogLeNetConfig.torchvision()`), loaded with a
    `torchvision.models.googlenet` state dict, with aux heads when the state dict has them.

    With the same weights and the same `transform_input`, the logits equal torchvision's (eval
    mode). torchvision's own builder turns `transform_input` on whenever it loads its pretrained
    weights (vision#4136): pass `transform_input=True` to feed those weights ImageNet-normalised
    images as torchvision does. `overrides` are further config fields (e.g. `image_size`).
    """
    state = read_torchvision_state(state_dict_or_path)
    source = state_dict_or_path if not isinstance(state_dict_or_path, dict) else "state dict"
    if "fc.weight" not in state:
        raise WeightsError(f"{source}: not a torchvision GoogLeNet state dict (no fc.weight)")
    has_aux = any(k.startswith("aux1.") for k in state)
    config = GoogLeNetConfig.torchvision(num_classes=state["fc.weight"].shape[0],
                                         aux_logits=has_aux, transform_input=transform_input,
                                         **overrides)
    _check_torchvision_layout(config, source)
    model = GoogLeNet(config)
    theirs = {}
    for key in model.state_dict():
        name = to_torchvision_key(key)
        if name not in state:
            raise WeightsError(f"{source}: {name} is missing; it does not fit torchvision's "
                               "googlenet layout")
        theirs[key] = state[name]
    load_state(model, theirs, source)
    return model.eval()


def torchvision_backbone_state(source: str | Path, model: GoogLeNet) -> dict[str, torch.Tensor]:
    """The tensors of a torchvision GoogLeNet file that fit `model`, classifiers excluded: the
    initialisation for fine-tuning (`inception train --init torchvision:PATH`)."""
    _check_torchvision_layout(model.config, f"--init {source}")
    state = read_torchvision_state(source)
    own = model.state_dict()
    picked, wrong = {}, []
    for key, value in own.items():
        if key.startswith("layers.linear.") or ".fc2." in key:
            continue  # a new classifier for the new classes
        name = to_torchvision_key(key)
        if name not in state and key.startswith("aux."):
            continue  # a file saved without aux heads: they start fresh
        if name not in state:
            raise WeightsError(f"--init {source}: {name} is missing; it is not a torchvision "
                               "googlenet state dict")
        if state[name].shape != value.shape:
            wrong.append(f"{name} {tuple(state[name].shape)} vs {tuple(value.shape)}")
        picked[key] = state[name]
    if wrong:
        raise WeightsError(f"--init {source}: shapes do not fit the model ({wrong[0]}"
                           f"{' ...' if len(wrong) > 1 else ''}); fine-tune with torchvision's "
                           "layout (the init sets it) and no --width or --branch5x5-kernel")
    return picked
