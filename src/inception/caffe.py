"""Caffe's `bvlc_googlenet` weights: a reader for binary `.caffemodel` files that needs no Caffe,
and the mapping of that model's layers onto this package's GoogLeNet (`from_caffe`).

Caffe's model zoo published GoogLeNet weights trained on ILSVRC 2012 (68.7% top-1, 88.9% top-5,
one centre crop). Their network, `models/bvlc_googlenet/train_val.prototxt` in BVLC/caffe, is the
paper variant, `GoogLeNetConfig()`, layer for layer: the 57 convolutions, the ceil-rounded max
pools, both LRN layers (5, 1e-4, 0.75), the dropouts (0.4, 0.7) and both aux heads (average pool
5x5/3, 128 filters, 1024 units). Only the weights move; nothing about the network is guessed.

Reading. A `.caffemodel` is a `NetParameter` protocol buffer. The message classes are built at run
time with the `protobuf` package from the few fields of BVLC/caffe's `src/caffe/proto/caffe.proto`
that lead to the weights, with that file's field numbers; protobuf skips every other field. Both
layer formats are read: `layer` (field 100, `LayerParameter`) and the legacy `layers` (field 2,
`V1LayerParameter`, in which files of 2014 such as the model zoo's were written), both blob shapes
(`BlobShape`, and the legacy num/channels/height/width) and float or double data.

Preprocessing. Caffe's model takes BGR pixels in 0-255 minus the per-channel mean (104, 117, 123)
(train_val.prototxt's `transform_param`). The import reverses conv1's input channels, so that the
model takes RGB, and stores the preprocessing that gives conv1 Caffe's numbers: mean
(123, 117, 104) / 255 and std 1 / 255 on [0, 1] RGB, that is 255 x - mean.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inception.config import GoogLeNetConfig
from inception.devices import resolve_device
from inception.imagenet import WNIDS, class_names
from inception.model import GoogLeNet
from inception.preprocessing import Preprocessing
from inception.table1 import AUX_TAPS, TABLE1
from inception.weights import LoadedModel, WeightsError

# train_val.prototxt's `mean_value`s, in Caffe's channel order (BGR), on 0-255 pixels.
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
# What the model zoo's readme gives for the file, to tell users whether they hold that file.
MODEL_ZOO_SHA1 = "405fc5acd08a3bb12de8ee5e23a96bec22f08204"
# V1LayerParameter's LayerType values (caffe.proto) for the layers bvlc_googlenet has weights in.
V1_TYPES = {4: "Convolution", 14: "InnerProduct"}


class CaffeError(WeightsError):
    """A `.caffemodel` that cannot be imported; the message names the file and the layer."""


@dataclass(frozen=True)
class Blob:
    """One parameter blob: its shape as the file gives it, whether that shape is the legacy
    num/channels/height/width, and its values (float32, flat)."""

    shape: tuple[int, ...]
    legacy: bool
    values: np.ndarray

    def fits(self, target: tuple[int, ...]) -> bool:
        """Caffe's own rule (`Blob::ShapeEquals`): a legacy 4-d shape matches `target` padded
        on the left with ones, so a fully connected layer's (out, in) is (1, 1, out, in)."""
        if self.legacy:
            return len(target) <= 4 and self.shape == (1,) * (4 - len(target)) + target
        return self.shape == target


@dataclass
class CaffeNet:
    """What a `.caffemodel` holds that an import needs: each layer's type and blobs, by name, in
    the file's order."""

    path: Path
    name: str
    format: str  # "layer" or "layers (V1)"
    sha1: str
    layers: dict[str, tuple[str, list[Blob]]] = field(default_factory=dict)

    def with_weights(self) -> list[str]:
        """The names of the layers that carry blobs, in the file's order."""
        return [name for name, (_, blobs) in self.layers.items() if blobs]


# -- reading --------------------------------------------------------------------------------------

@functools.cache
def _messages() -> dict[str, Any]:
    """The message classes of the caffe.proto subset, in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    schema = {  # message: (field, number, type, label, message type)
        "BlobShape": [("dim", 1, F.TYPE_INT64, many, None)],
        "BlobProto": [("shape", 7, F.TYPE_MESSAGE, one, "BlobShape"),
                      ("data", 5, F.TYPE_FLOAT, many, None),
                      ("double_data", 8, F.TYPE_DOUBLE, many, None),
                      ("num", 1, F.TYPE_INT32, one, None),
                      ("channels", 2, F.TYPE_INT32, one, None),
                      ("height", 3, F.TYPE_INT32, one, None),
                      ("width", 4, F.TYPE_INT32, one, None)],
        # Strings are read as bytes (the same on the wire) and decoded leniently: a name that is
        # not UTF-8 must not stop the import with a decoding error.
        "LayerParameter": [("name", 1, F.TYPE_BYTES, one, None),
                           ("type", 2, F.TYPE_BYTES, one, None),
                           ("blobs", 7, F.TYPE_MESSAGE, many, "BlobProto")],
        # `type` is the enum LayerType, a varint on the wire, read here as its number.
        "V1LayerParameter": [("name", 4, F.TYPE_BYTES, one, None),
                             ("type", 5, F.TYPE_INT32, one, None),
                             ("blobs", 6, F.TYPE_MESSAGE, many, "BlobProto")],
        "NetParameter": [("name", 1, F.TYPE_BYTES, one, None),
                         ("layers", 2, F.TYPE_MESSAGE, many, "V1LayerParameter"),
                         ("layer", 100, F.TYPE_MESSAGE, many, "LayerParameter")],
    }
    proto = descriptor_pb2.FileDescriptorProto(name="inception_caffe.proto", package="caffe",
                                               syntax="proto2")
    for message, fields in schema.items():
        m = proto.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            f = m.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = f".caffe.{type_name}"
            if label == many and kind != F.TYPE_MESSAGE:
                f.options.packed = True  # caffe.proto's [packed = true]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name in schema}


def _blob(message: Any, where: str) -> Blob:
    """A BlobProto as a `Blob`. As Caffe's `Blob::FromProto`, the legacy num/channels/height/width
    win when any of them is set, else `shape`; the values are `data`, else `double_data`."""
    legacy_fields = ("num", "channels", "height", "width")
    legacy = any(message.HasField(f) for f in legacy_fields)
    if legacy:
        shape = tuple(int(getattr(message, f)) for f in legacy_fields)
    else:
        shape = tuple(int(d) for d in message.shape.dim)
    if len(message.data):
        values = np.asarray(message.data, dtype=np.float32)
    else:
        values = np.asarray(message.double_data, dtype=np.float64).astype(np.float32)
    if min(shape, default=1) < 0 or values.size != math.prod(shape):
        raise CaffeError(f"{where} has {values.size} values for its shape {shape}; the file is "
                         "damaged")
    return Blob(shape, legacy, values)


def read_caffemodel(path: str | Path) -> CaffeNet:
    """The layers of a binary `.caffemodel` (either layer format), with their blobs."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CaffeError(f"{path}: cannot read it ({e.strerror}); give the downloaded "
                         "bvlc_googlenet.caffemodel") from e
    net = _messages()["NetParameter"]()
    try:
        net.ParseFromString(data)
    except (DecodeError, RecursionError) as e:
        raise CaffeError(f"{path}: not a binary Caffe model ({e}); it may be truncated, or a "
                         ".prototxt (text) rather than the .caffemodel") from e
    if len(net.layer) and len(net.layers):
        raise CaffeError(f"{path}: has layers in both the current and the legacy (V1) format; "
                         "Caffe itself refuses such a file")
    layers = net.layer if len(net.layer) else net.layers
    out = CaffeNet(path, _text(net.name), "layer" if len(net.layer) else "layers (V1)",
                   hashlib.sha1(data).hexdigest())
    for layer in layers:
        name = _text(layer.name)
        if isinstance(layer.type, bytes):
            kind = _text(layer.type)
        else:
            kind = V1_TYPES.get(layer.type, f"V1 type {layer.type}")
        blobs = [_blob(b, f"{path}: {name} blob {i}") for i, b in enumerate(layer.blobs)]
        if name in out.layers and (blobs or out.layers[name][1]):
            raise CaffeError(f"{path}: two layers named {name} carry weights; the import "
                             "cannot tell them apart")
        out.layers.setdefault(name, (kind, blobs))
    if not out.layers:
        raise CaffeError(f"{path}: no layers; not a Caffe model (give the binary .caffemodel)")
    return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


# -- bvlc_googlenet's names -----------------------------------------------------------------------

def caffe_layer_names(config: GoogLeNetConfig) -> dict[str, str]:
    """{bvlc_googlenet layer name: our module's parameter prefix}, in the network's order: each
    Caffe layer's blobs are that module's weight and bias."""
    names = {"conv1/7x7_s2": "layers.conv1.conv", "conv2/3x3_reduce": "layers.conv2.0.conv",
             "conv2/3x3": "layers.conv2.1.conv"}
    branches = {"1x1": "branch1", "3x3_reduce": "branch2.0", "3x3": "branch2.1",
                "5x5_reduce": "branch3.0", "5x5": "branch3.1", "pool_proj": "branch4.1"}
    heads = dict(zip(AUX_TAPS, ("loss1", "loss2"), strict=True))
    for row in TABLE1:
        if row.type != "inception":
            continue
        names |= {f"inception_{row.name}/{b}": f"layers.{row.name}.{ours}.conv"
                  for b, ours in branches.items()}
        if config.aux_logits and row.name in heads:
            loss = heads[row.name]
            names |= {f"{loss}/conv": f"aux.{row.name}.conv.conv", f"{loss}/fc":
                      f"aux.{row.name}.fc1", f"{loss}/classifier": f"aux.{row.name}.fc2"}
    names["loss3/classifier"] = "layers.linear"
    return names


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _classifier_outputs(net: CaffeNet) -> int:
    """The number of classes: the output count of loss3/classifier's weights (outputs x 1024,
    or 1 x 1 x outputs x 1024 in the legacy shape); `caffe_state` checks the rest."""
    _, blobs = net.layers["loss3/classifier"]
    shape = blobs[0].shape if blobs else ()
    ok = len(shape) == 4 and shape[:2] == (1, 1) if blobs and blobs[0].legacy else len(shape) == 2
    if not ok or shape[-2] < 1:
        raise CaffeError(f"{net.path}: loss3/classifier weights have shape "
                         f"{_shape(shape) if blobs else 'none'}; bvlc_googlenet's are classes "
                         "x 1024")
    return shape[-2]


def _require_layers(net: CaffeNet, names: Sequence[str]) -> None:
    """Refuse a file that lacks one of `names`, naming the first missing one."""
    for name in names:
        if name not in net.layers:
            first = ", ".join(net.with_weights()[:3]) or "none"
            raise CaffeError(f"{net.path}: no layer {name}, which bvlc_googlenet has; the file's "
                             f"first layers with weights are {first}: it is not bvlc_googlenet")


def caffe_state(net: CaffeNet, model: GoogLeNet) -> dict[str, torch.Tensor]:
    """`model`'s state dict filled from `net`, checked layer by layer: type, blob count and each
    blob's shape. conv1's input channels are reversed (BGR -> RGB)."""
    own = model.state_dict()
    names = caffe_layer_names(model.config)
    _require_layers(net, names)
    state = {}
    for caffe_name, prefix in names.items():
        kind, blobs = net.layers[caffe_name]
        want = "Convolution" if prefix.endswith(".conv") else "InnerProduct"
        if kind != want:
            raise CaffeError(f"{net.path}: {caffe_name} is a {kind} layer; bvlc_googlenet's is "
                             f"{want}")
        if len(blobs) != 2:
            raise CaffeError(f"{net.path}: {caffe_name} has {len(blobs)} blob(s); "
                             "bvlc_googlenet's has 2 (weights and bias)")
        for blob, part in zip(blobs, ("weight", "bias"), strict=True):
            target = tuple(own[f"{prefix}.{part}"].shape)
            if not blob.fits(target):
                raise CaffeError(f"{net.path}: {caffe_name} {part}s have shape "
                                 f"{_shape(blob.shape)}; bvlc_googlenet's are {_shape(target)}")
            state[f"{prefix}.{part}"] = torch.from_numpy(blob.values.reshape(target).copy())
    extra = [n for n in net.with_weights() if n not in names]
    if extra:
        raise CaffeError(f"{net.path}: layer {extra[0]} has weights, but bvlc_googlenet has no "
                         f"such layer ({len(extra)} such layer(s)); this is another network")
    state["layers.conv1.conv.weight"] = state["layers.conv1.conv.weight"].flip(1)
    return state


def caffe_preprocessing() -> Preprocessing:
    """Caffe's input, on the RGB input of the imported model: the image warped to 256 x 256 (the
    ImageNet LMDBs of Caffe's `create_imagenet.sh`, and `caffe.Classifier`), a centre 224 crop
    (`crop_size: 224`), and the BGR 0-255 mean subtraction, so that conv1 sees
    255 x - (123, 117, 104)."""
    mean_rgb = tuple(m / 255 for m in reversed(CAFFE_MEAN_BGR))
    return Preprocessing(image_size=224, resize=256, crop=224, mean=mean_rgb,
                         std=(1 / 255,) * 3, channels=3, interpolation="bilinear", warp=True)


def from_caffe(path: str | Path, classes: Sequence[str] | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """The GoogLeNet of a `bvlc_googlenet.caffemodel`, ready for `inception.predict`: the paper
    configuration with the file's classes and, when the file has them, the aux heads.

    A 1000-class file gets ImageNet's class names (`inception.imagenet`); another needs `classes`.
    A file that is not bvlc_googlenet (missing layers, other layers with weights, other shapes)
    is refused with a `CaffeError` naming the first layer that does not fit.

    >>> model = inception.from_caffe("bvlc_googlenet.caffemodel")
    >>> inception.predict(model, ["cat.jpg"], topk=3)
    """
    net = read_caffemodel(path)
    aux = any(n.split("/")[0] in ("loss1", "loss2") for n in net.with_weights())
    _require_layers(net, caffe_layer_names(GoogLeNetConfig(aux_logits=aux)))
    num_classes = _classifier_outputs(net)
    if classes is None and num_classes != len(WNIDS):
        raise CaffeError(f"{net.path}: loss3/classifier has {num_classes} outputs, not "
                         f"ImageNet's {len(WNIDS)}; give the class names (--classes FILE)")
    names = list(classes) if classes is not None else class_names()
    if len(names) != num_classes or len(set(names)) != len(names):
        raise CaffeError(f"{net.path}: {len(set(names))} distinct class names for "
                         f"loss3/classifier's {num_classes} outputs; give one per output")
    model = GoogLeNet(GoogLeNetConfig(num_classes=num_classes, aux_logits=aux))
    model.load_state_dict(caffe_state(net, model))
    meta = {"data": None, "source": {"caffemodel": str(net.path), "net": net.name,
                                     "format": net.format, "sha1": net.sha1}}
    if classes is None:
        meta["class_folders"] = list(WNIDS)
    model = model.to(resolve_device(device), memory_format=torch.channels_last).eval()
    return LoadedModel(model, caffe_preprocessing(), names, net.path, meta)

