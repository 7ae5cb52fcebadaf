"""The model configuration: one dataclass whose defaults are the paper.

Every way in which this package, torchvision, TF-slim or Caffe can depart from *Going Deeper with
Convolutions* is a named field here, commented with what the paper says. A checkpoint or an
exported model stores `asdict(config)`, so it rebuilds without flags. The training configuration
is `inception.train.config.TrainConfig`; the command-line flags of both are `inception.flags`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal

Norm = Literal["lrn", "bn", "none"]
Stem = Literal["imagenet", "small"]
ModuleForm = Literal["reduced", "naive"]
AuxPool = Literal["5x5/3", "adaptive"]
Head = Literal["avgpool", "fc"]
# The most classes a model may have: past ImageNet-21k's 21,841; more would make the classifier
# alone gigabytes.
MAX_CLASSES = 100_000


class ConfigError(ValueError):
    """A configuration value that cannot build a model; the message names the field."""


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take: `kind` (int or float; floats finite), between `low`
    and `high` (None: no bound on that side; `low_open`/`high_open`: that end excluded), or one
    of `choices`. Declared once beside each setting, it is both the config's check
    (`validate_fields`) and, called on the text of a flag, the command line's argparse `type`
    (`inception.flags.number`), so that a flag and its config field refuse the same values with
    the same words."""

    kind: type = int
    low: int | float | None = None
    high: int | float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[int | float, ...] = ()

    def describe(self) -> str:
        """The allowed values in words: "an integer from 1 to 100000", "a number in [0, 1)"."""
        if self.choices:
            *rest, last = map(str, self.choices)
            return f"{', '.join(rest)} or {last}" if rest else last
        noun = "an integer" if self.kind is int else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            if not (self.low_open or self.high_open):
                return f"{noun} from {low} to {high}"
            return (f"{noun} in {'(' if self.low_open else '['}{low}, "
                    f"{high}{')' if self.high_open else ']'}")
        if low is not None:
            return f"{noun} {'greater than' if self.low_open else 'of at least'} {low}"
        if high is not None:
            return f"{noun} {'less than' if self.high_open else 'of at most'} {high}"
        return noun if self.kind is int else "a finite number"

    def admits(self, value: int | float) -> bool:
        """Whether `value` (already of `kind`) is one of the allowed values."""
        if self.kind is float and not math.isfinite(value):
            return False
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __call__(self, text: str) -> int | float:
        """`text`, a flag's argument, as a `kind` in bounds; argparse reports the
        ArgumentTypeError as "--flag must be ...; got TEXT" (`inception.parser.Parser`)."""
        import argparse

        try:
            value = self.kind(text)
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or not self.admits(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}; got {text}")
        return value


def option(default: Any, help: str, *, low: int | float | None = None,
           high: int | float | None = None, low_open: bool = False, high_open: bool = False,
           choices: tuple[int | float, ...] = ()) -> Any:
    """A dataclass field with its one-line documentation, which the command line's `--help` shows
    for the field's flag (`inception.flags`), and for a number the values it may take
    (`Bounds`, from the field's type): both written once, beside the default. The bounds are
    checked by `validate_fields` and, for the flag, by argparse, before any work starts."""
    metadata: dict[str, Any] = {"help": help}
    if low is not None or high is not None or choices:
        metadata["bounds"] = dict(low=low, high=high, low_open=low_open, high_open=high_open,
                                  choices=choices)
    return dataclasses.field(default=default, metadata=metadata)


def field_bounds(f: dataclasses.Field, hint: Any) -> Bounds | None:
    """The `Bounds` of a config field of type int or float (`option`'s, or its type's alone:
    any integer, any finite number); None for other types."""
    if hint not in (int, float):
        return None
    return Bounds(hint, **f.metadata.get("bounds", {}))


@dataclass(frozen=True)
class GoogLeNetConfig:
    """GoogLeNet hyper-parameters. The defaults build the network of Table 1 and section 5.

    Fields that are not in the paper at all (the LRN constants, BN epsilon) follow Caffe's
    `bvlc_googlenet` and torchvision respectively, and say so.
    """

    # "predicting the same 1000 classes" of ILSVRC 2014.
    num_classes: int = option(
        1000, "classes the classifier predicts (the paper: ILSVRC's 1000)", low=1,
        high=MAX_CLASSES)
    # "taking RGB color channels with mean subtraction".
    in_chans: int = option(3, "input channels: 3 for RGB, 1 for grayscale", low=1, high=1024)
    # "The size of the receptive field in our network is 224x224". The network itself ends in a
    # global average pool and accepts any size; image_size fixes the aux heads' FC input (with the
    # paper's 5x5/3 pool) and the cost figures of `inception summary`. Bounds: below 8 px no
    # stem keeps a map; at 4096 px conv1's output alone is 1 GiB an image.
    image_size: int = option(
        224, "input side in pixels: fixes the aux heads' FC input and summary's cost figures",
        low=8, high=4096)
    # Section 4: "computationally cheaper versions". Multiplies every filter count of Table 1 and of
    # the aux heads (128 filters, 1024 units), rounded to the nearest integer, at least 1.
    # Bounds: parameters grow with its square; width 8 is ~450M without the aux heads.
    width: float = option(1.0, "multiplier of every filter count (section 4's cheaper variants)",
                          low=0, low_open=True, high=8)
    # "imagenet": the paper's conv 7x7/2 + max pool 3x3/2 (input / 4 before conv2).
    # "small": for 28-64 px inputs (Fashion-MNIST, CIFAR). conv1 becomes 3x3/1 with the same 64
    # filters and pool1 is removed (its LRN stays); everything after it is unchanged. The input is
    # then divided by about 8 instead of 32 before the classifier: 28 px reaches 3a at 14x14, 4a
    # at 7x7 (where the 5x5/3 aux pool would leave positions unseen: use aux_pool="adaptive")
    # and 5a at 3x3; 32 px gives 16, 8 and 4.
    stem: Stem = option(
        "imagenet",
        "imagenet: conv 7x7/2, max pool 3x3/2 (the paper); small: conv 3x3/1, no pool1 (28-64 px)")
    # Figure 2: "reduced" is (b), "Inception module with dimension reductions", which GoogLeNet
    # uses; "naive" is (a): 1x1, 3x3, 5x5 and a 3x3 max pool side by side, no reductions and no
    # pool projection, so the pool branch passes every input channel through.
    module: ModuleForm = option(
        "reduced", "reduced: Figure 2(b), 1x1 reductions first (the paper); naive: Figure 2(a)")
    # Section 4: "adding an alternative parallel pooling path in each such stage should have
    # additional beneficial effect, too". False removes each module's fourth branch (the 3x3 max
    # pool and its 1x1 projection), so each module's output is n1x1 + n3x3 + n5x5 deep.
    pool_branch: bool = option(
        True, "keep each module's 3x3 max-pool branch and its 1x1 projection (the paper)")
    # Figure 3 has a LocalRespNorm after pool1 and after conv2's 3x3 convolution. "bn" puts a
    # BatchNorm after every convolution instead (torchvision, TF-slim) and drops the LRNs;
    # "none" has neither.
    norm: Norm = option(
        "lrn", "lrn: Figure 3's LocalRespNorms (the paper); bn: BatchNorm after every conv; none")
    # Table 1's "#5x5" column is a 5x5 convolution. torchvision and TF-slim use 3x3 (vision#906).
    branch5x5_kernel: int = option(
        5, "kernel of the '5x5' branch: 5 (Table 1) or 3 (torchvision, TF-slim)", choices=(5, 3))
    # Table 1: "max pool 3x3/2" before 5a. torchvision and TF-slim use 2x2/2 ("MaxPool_5a_2x2").
    pool4_kernel: int = option(
        3, "kernel of the max pool before 5a: 3 (Table 1) or 2 (torchvision, TF-slim)",
        choices=(3, 2))
    # Section 5: auxiliary classifiers on 4a and 4d, for training only: "At inference time, these
    # auxiliary networks are discarded" (`GoogLeNet.drop_aux()`).
    aux_logits: bool = option(
        True, "build the two auxiliary classifiers on 4a and 4d, used in training only (the paper)")
    # "the losses of the auxiliary classifiers were weighted by 0.3".
    aux_weight: float = option(0.3, "weight of each auxiliary classifier's loss (the paper: 0.3)",
                               low=0)
    # "An average pooling layer with 5x5 filter size and stride 3, resulting in an 4x4x512 output".
    # torchvision uses an adaptive pool to 4x4, which at 14x14 averages 4x4 windows at stride 3-4.
    # A 5x5/3 pool covers its map only where the map is 3k+5 wide (14 at 224 px); on any other
    # map it would leave the right and bottom edges out of the aux loss, and is refused.
    aux_pool: AuxPool = option(
        "5x5/3", "aux heads' pool: 5x5/3 (the paper) or adaptive to 4x4 (torchvision, any map)")
    # Section 5: "The use of average pooling before the classifier is based on [12] ... a move
    # from fully connected layers to average pooling improved the top-1 accuracy by about 0.6%".
    # "fc" replaces the global average pool with a fully connected layer (ReLU) from the whole
    # last feature map to as many units as it has channels; the model then only takes
    # image_size inputs.
    head: Head = option(
        "avgpool", "avgpool: global average pool before the classifier (the paper); fc: FC layer")
    # Table 1: "dropout (40%)". torchvision uses 0.2 and TF-slim keep_prob 0.8.
    dropout: float = option(0.4, "dropout ratio before the classifier (the paper: 0.4)",
                            low=0, high=1, high_open=True)
    # "A dropout layer with 70% ratio of dropped outputs."
    aux_dropout: float = option(0.7, "dropout ratio in the aux heads (the paper: 0.7)",
                                low=0, high=1, high_open=True)
    # Not in the paper (it predates BN); torchvision's BasicConv2d uses eps=0.001.
    bn_eps: float = option(
        1e-3, "BatchNorm epsilon with norm bn (not in the paper; torchvision's 0.001)",
        low=0, low_open=True)
    # Not in the paper: torchvision's `transform_input` (vision#4136). Its pretrained GoogLeNet
    # weights come from a port that expected inputs scaled to [-1, 1] ((x - 0.5) / 0.5); with
    # transform_input the model takes ImageNet-normalised input and re-normalises it first,
    # channel by channel: x * (std / 0.5) + (mean - 0.5) / 0.5. Only for 3-channel input.
    transform_input: bool = option(
        False, "torchvision's transform_input: re-normalise ImageNet input to [-1, 1] first")

    def __post_init__(self) -> None:
        validate_fields(self)  # types, choices and each field's bounds (`option`)
        if self.transform_input and self.in_chans != 3:
            raise ConfigError("transform_input needs in_chans=3 (it re-normalises ImageNet RGB "
                              "input)")

    @classmethod
    def torchvision(cls, **overrides: Any) -> GoogLeNetConfig:
        """The layout of `torchvision.models.googlenet`: same parameter shapes, one for one.

        BatchNorm instead of LRN, a 3x3 "5x5" branch, a 2x2/2 pool before 5a, 20% dropout and an
        adaptive 4x4 pool in the aux heads.
        """
        layout = dict(norm="bn", branch5x5_kernel=3, pool4_kernel=2, dropout=0.2,
                      aux_pool="adaptive")
        return cls(**{**layout, **overrides})

    def replace(self, **changes: Any) -> GoogLeNetConfig:
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GoogLeNetConfig:
        """Build from a dict such as a checkpoint's, refusing unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
        return cls(**data)

    def differences_from_paper(self) -> dict[str, tuple[Any, Any]]:
        """{field: (this value, the paper's)} for every architectural field off the paper."""
        paper = GoogLeNetConfig()
        return {
            f.name: (getattr(self, f.name), getattr(paper, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(paper, f.name)
        }


def field_type(hint: Any) -> Any:
    """`int | None` -> int; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def validate_fields(config: Any) -> None:
    """Check every field's type, Literal choices and numeric bounds (`option`), naming the field
    in the error."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        hint = field_type(hints[f.name])
        value = getattr(config, f.name)
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            if value not in choices:
                allowed = ", ".join(map(str, choices))
                raise ConfigError(f"{f.name} must be one of {allowed}; got {value!r}")
        elif value is None:
            if hints[f.name] is hint:  # not Optional
                raise ConfigError(f"{f.name} must not be empty")
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                object.__setattr__(config, f.name, float(value))
            except OverflowError:
                object.__setattr__(config, f.name, math.copysign(math.inf, value))  # refused below
        elif hint in (int, float, bool, str) and (
                not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
            raise ConfigError(f"{f.name} must be of type {hint.__name__}; got {value!r}")
        bounds = field_bounds(f, hint)
        value = getattr(config, f.name)
        if bounds is not None and value is not None and not bounds.admits(value):
            raise ConfigError(f"{f.name} must be {bounds.describe()}; got {value!r}")
