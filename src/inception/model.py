"""GoogLeNet, built by one loop over Table 1 (`inception.table1.TABLE1`).

Forward contract (the same in train and eval mode, unlike torchvision's, vision#1273):

- `model(x)` returns the main classifier's logits, always a tensor;
- `model.forward_aux(x)` returns `GoogLeNetOutput(logits, aux)`, where `aux` holds the logits of the
  auxiliary classifiers on 4a and 4d, in that order. It is what a training step calls; it raises if
  the model was built with `aux_logits=False` or had its heads dropped.
- `googlenet_loss(output, target)` is the paper's training loss: the main loss plus 0.3 times each
  auxiliary loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from inception.config import ConfigError, GoogLeNetConfig
from inception.modules import AuxClassifier, ConvReLU, Inception, local_response_norm
from inception.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from inception.table1 import AUX_TAPS, TABLE1, Row

# The last of the "lower stages" of section 5's gradient argument: the first aux head sits on 4a.
LOWER_STAGES_END = "4a"

CLASSIFIER_INIT_STD = 0.01


class GoogLeNetOutput(NamedTuple):
    """The main logits and the auxiliary logits (4a, then 4d)."""

    logits: torch.Tensor
    aux: tuple[torch.Tensor, ...]


def _pool_out(size: int, kernel: int, stride: int, ceil: bool) -> int:
    """PyTorch's pooling output size (no padding), ceil_mode included."""
    span = size - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size:
        out -= 1
    return out


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class GoogLeNet(nn.Module):
    """GoogLeNet (Inception v1) as in Table 1 and Figure 3, configured by `GoogLeNetConfig`.

    Layers are `self.layers[row]` for each row name of Table 1 except softmax (which lives in the
    loss), and `self.aux["4a"]`, `self.aux["4d"]` when built with aux heads.

    Max pools round up (`ceil_mode`), as in Caffe's and torchvision's ports: it is what gives
    Table 1's 112 -> 56 -> 28 -> 14 -> 7 from a 224 input. "avg pool 7x7/1" is a global average
    pool, identical at 224 px and defined at every other size.

    Initialisation (the paper is silent; Caffe's port used "xavier", which in Caffe is uniform with
    variance 1/fan_in): every convolution and the aux heads' fc1 are followed by a ReLU, so they get
    He initialisation (normal, variance 2/fan_in), which keeps the activations' scale through the
    22 ReLU layers of the BN-free paper variant; biases are zero. The classifiers (the final linear
    and the aux heads' last layer) are N(0, 0.01) so that the first loss is about ln(num_classes).
    BatchNorm starts at weight 1, bias 0.

    `init_seed`: draw each layer's weights from a generator seeded by (init_seed, the layer's
    name) instead of from torch's global stream, so a layer's initial weights depend only on the
    seed, its name and its shape. Two configurations then start the layers they share from the
    same weights, and adding a layer (the aux heads, a head, a branch) changes no other layer's:
    what paired ablations need (`inception experiment`).
    """

    def __init__(self, config: GoogLeNetConfig | None = None,
                 init_seed: int | None = None) -> None:
        super().__init__()
        self.config = config = config or GoogLeNetConfig()
        channels, size = config.in_chans, config.image_size
        layers: dict[str, nn.Module] = {}
        tap_shapes: dict[str, tuple[int, int]] = {}
        for row in TABLE1:
            if row.type == "softmax":
                continue
            layers[row.name], channels, size = self._build_row(row, channels, size)
            if size < 1:
                raise ConfigError(f"image_size={config.image_size} is too small for the "
                                  f"{config.stem!r} stem: the map vanishes at {row.name}")
            if row.name in AUX_TAPS:
                tap_shapes[row.name] = (channels, size)
        self.layers = nn.ModuleDict(layers)
        self.num_features = self.layers["linear"].in_features
        self.aux = nn.ModuleDict(
            {tap: self._build_aux(*tap_shapes[tap]) for tap in AUX_TAPS}
            if config.aux_logits else {}
        )
        names = list(self.layers)
        split = names.index([r.name for r in TABLE1 if r.type == "inception"][-1]) + 1
        self._feature_rows, self._head_rows = tuple(names[:split]), tuple(names[split:])
        self.reset_parameters(init_seed)

    def _w(self, filters: int) -> int:
        """A filter count scaled by the width multiplier."""
        return max(1, round(filters * self.config.width))

    def _build_row(self, row: Row, cin: int, size: int) -> tuple[nn.Module, int, int]:
        """The module for one row of Table 1, its output depth and output side."""
        cfg = self.config
        bn = cfg.norm == "bn"
        lrn = [local_response_norm()] if cfg.norm == "lrn" else []

        def conv(cin: int, cout: int, k: int, stride: int = 1) -> ConvReLU:
            return ConvReLU(cin, cout, k, stride, batch_norm=bn, bn_eps=cfg.bn_eps)

        if row.name == "conv1":
            cout = self._w(row.output[2])
            if cfg.stem == "small":
                return conv(cin, cout, 3), cout, size
            return conv(cin, cout, row.kernel, row.stride), cout, _conv_out(size, row.kernel,
                                                                            row.stride)
        if row.type == "convolution":  # conv2: "3x3 reduce" 1x1, then the 3x3 convolution
            mid, cout = self._w(row.n3x3_reduce), self._w(row.n3x3)
            layer = nn.Sequential(conv(cin, mid, 1), conv(mid, cout, row.kernel), *lrn)
            return layer, cout, size
        if row.type == "max pool":
            kernel = cfg.pool4_kernel if row.name == "pool4" else row.kernel
            if row.name == "pool1":
                # Figure 3: the first LocalRespNorm follows pool1; the small stem drops the pool.
                pool = [] if cfg.stem == "small" else [nn.MaxPool2d(kernel, row.stride,
                                                                    ceil_mode=True)]
                out = size if cfg.stem == "small" else _pool_out(size, kernel, row.stride, True)
                return nn.Sequential(*pool, *lrn), cin, out
            layer = nn.MaxPool2d(kernel, row.stride, ceil_mode=True)
            return layer, cin, _pool_out(size, kernel, row.stride, True)
        if row.type == "inception":
            filters = [self._w(f) for f in (row.n1x1, row.n3x3_reduce, row.n3x3, row.n5x5_reduce,
                                            row.n5x5, row.pool_proj)]
            layer = Inception(cin, *filters, naive=cfg.module == "naive",
                              branch5x5_kernel=cfg.branch5x5_kernel, pool_branch=cfg.pool_branch,
                              batch_norm=bn, bn_eps=cfg.bn_eps)
            return layer, layer.out_channels, size
        if row.type == "avg pool":
            if cfg.head == "fc":
                fc = nn.Linear(cin * size * size, cin)
                return nn.Sequential(nn.Flatten(1), fc, nn.ReLU(inplace=True)), cin, 1
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), cin, 1
        if row.type == "dropout":
            return nn.Dropout(cfg.dropout), cin, size
        if row.type == "linear":
            return nn.Linear(cin, cfg.num_classes), cfg.num_classes, size
        raise ValueError(f"no builder for Table 1 row {row.name!r} of type {row.type!r}")

    def _build_aux(self, channels: int, size: int) -> AuxClassifier:
        cfg = self.config
        if cfg.aux_pool == "5x5/3":
            pooled = _pool_out(size, 5, 3, ceil=False)
            if pooled < 1:
                raise ConfigError(
                    f"aux_pool='5x5/3' needs at least a 5x5 map at 4a/4d, but image_size="
                    f"{cfg.image_size} with the {cfg.stem!r} stem gives {size}x{size}; "
                    "use a larger image_size, aux_pool='adaptive' or --no-aux-logits")
            seen = (pooled - 1) * 3 + 5
            if seen < size:
                raise ConfigError(
                    f"aux_pool='5x5/3' on the {size}x{size} map at 4a/4d (image_size="
                    f"{cfg.image_size}, {cfg.stem!r} stem) averages only its top-left "
                    f"{seen}x{seen} positions; use aux_pool='adaptive' (every position), an "
                    "image_size whose 4a map is 3k+5 wide (14x14 at 224 px, 8x8 at 32 px with "
                    "the small stem) or --no-aux-logits")
        else:
            pooled = 4
        return AuxClassifier(channels, cfg.num_classes, pooled_size=pooled, pool=cfg.aux_pool,
                             filters=self._w(128), units=self._w(1024), dropout=cfg.aux_dropout,
                             batch_norm=cfg.norm == "bn", bn_eps=cfg.bn_eps)

    def classifiers(self) -> list[nn.Linear]:
        """The layers that produce logits: the final linear and each aux head's last layer."""
        return [self.layers["linear"], *(head.fc2 for head in self.aux.values())]

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """He-normal for ReLU layers, N(0, 0.01) for classifiers; see the class docstring. With
        `seed`, each layer draws from its own generator, seeded by (seed, its name)."""
        def generator(name: str) -> torch.Generator | None:
            return None if seed is None else torch.Generator().manual_seed(layer_seed(seed, name))

        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu",
                                        generator=generator(name))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        classifiers = {id(fc) for fc in self.classifiers()}
        for name, m in self.named_modules():
            if id(m) in classifiers:
                nn.init.normal_(m.weight, std=CLASSIFIER_INIT_STD, generator=generator(name))

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised input -> the [-1, 1] scaling torchvision's pretrained weights
        expect, channel by channel, in torchvision's arithmetic order."""
        channels = [x[:, c:c + 1] * (s / 0.5) + (m - 0.5) / 0.5
                    for c, (m, s) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))]
        return torch.cat(channels, 1)

    def forward_features(self, x: torch.Tensor,
                         aux_logits: list[torch.Tensor] | None = None) -> torch.Tensor:
        """conv1 .. 5b: N x 1024 x 7 x 7 at 224 px. Appends the aux heads' logits to
        `aux_logits` when a list is given."""
        if self.config.transform_input:
            x = self.transform_input(x)
        for name in self._feature_rows:
            x = self.layers[name](x)
            if aux_logits is not None and name in self.aux:
                aux_logits.append(self.aux[name](x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """avg pool, dropout (40%), linear. `pre_logits=True` stops before the linear layer."""
        for name in self._head_rows:
            if pre_logits and name == "linear":
                break
            x = self.layers[name](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The main classifier's logits, N x num_classes, in train and eval mode alike."""
        return self.forward_head(self.forward_features(x))

    def forward_aux(self, x: torch.Tensor) -> GoogLeNetOutput:
        """Main and auxiliary logits in one pass, for the paper's training loss."""
        if not self.aux:
            raise RuntimeError("this model has no auxiliary classifiers: build it with "
                               "aux_logits=True to get aux logits")
        aux: list[torch.Tensor] = []
        logits = self.forward_head(self.forward_features(x, aux))
        return GoogLeNetOutput(logits, tuple(aux))

    def lower_stage_parameters(self, last: str = LOWER_STAGES_END) -> list[nn.Parameter]:
        """The parameters of Table 1's rows from conv1 up to and including `last`: the "lower
        stages" whose gradient section 5's auxiliary classifiers are meant to strengthen ("increase
        the gradient signal that gets propagated back"). The aux heads' own parameters are not
        among them."""
        names = list(self.layers)
        if last not in names:
            raise ValueError(f"no layer {last!r}; choose one of {', '.join(names)}")
        return [p for name in names[:names.index(last) + 1]
                for p in self.layers[name].parameters()]

    def drop_aux(self) -> GoogLeNet:
        """Remove the auxiliary classifiers, in place: "At inference time, these auxiliary
        networks are discarded." Returns the model."""
        self.aux = nn.ModuleDict()
        self.config = self.config.replace(aux_logits=False)
        return self

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifiers (main and aux) for `num_classes` classes."""
        self.config = self.config.replace(num_classes=num_classes)

        def fresh(old: nn.Linear) -> nn.Linear:
            new = nn.Linear(old.in_features, num_classes, device=old.weight.device)
            nn.init.normal_(new.weight, std=CLASSIFIER_INIT_STD)
            nn.init.zeros_(new.bias)
            return new

        self.layers["linear"] = fresh(self.layers["linear"])
        for head in self.aux.values():
            head.fc2 = fresh(head.fc2)


def googlenet(config: GoogLeNetConfig | None = None, **overrides: Any) -> GoogLeNet:
    """Build GoogLeNet: the paper's by default, with any `GoogLeNetConfig` field overridden.

    >>> model = googlenet(num_classes=10, stem="small", image_size=28, norm="bn",
    ...                   aux_pool="adaptive")
    """
    return GoogLeNet((config or GoogLeNetConfig()).replace(**overrides))


def layer_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the layer `name` of a model initialised with `seed` (SHA-256 of both:
    stable across processes and Python versions, unlike `hash`)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def gradient_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """The L2 norm of the gradients of `parameters` (those that have one) taken together, as a
    tensor on their device: reading it is the caller's choice of synchronisation point."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        raise ValueError("none of the parameters has a gradient; call backward() first")
    return torch.nn.utils.get_total_norm(grads)


def googlenet_loss(output: GoogLeNetOutput, target: torch.Tensor, aux_weight: float = 0.3,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """Section 5: "their loss gets added to the total loss of the network with a discount weight
    (the losses of the auxiliary classifiers were weighted by 0.3)"."""
    loss = F.cross_entropy(output.logits, target, label_smoothing=label_smoothing)
    for aux in output.aux:
        loss = loss + aux_weight * F.cross_entropy(aux, target, label_smoothing=label_smoothing)
    return loss
