"""An inference-only GoogLeNet with the same outputs, rearranged for speed.

`optimize_for_inference(model)` returns a new module (the model is not modified). The rewrites
depend on the device it is for (the model's, unless `device` says otherwise). On every device:

- the auxiliary classifiers are gone ("At inference time, these auxiliary networks are
  discarded") and dropout is the identity;
- BatchNorm is folded into the convolution before it (`torch.nn.utils.fusion.fuse_conv_bn_eval`);
- weights and activations are channels_last, and bf16 when `dtype=torch.bfloat16` (cast once,
  instead of autocast's cast of every weight at every call);
- `compile=True` wraps the result in `torch.compile`.

On a GPU that is all: the CPU rewrites below are tuned for caches and vector units, and on a GPU
they multiply kernel launches (the chunked stem alone turns a 256-image batch into 128 stems).

On the CPU, also:

- in every Inception module the three 1x1 convolutions that read the module's input (the 1x1
  branch, the 3x3 reduce and the 5x5 reduce) are one convolution whose output is split: one GEMM
  with n1x1 + n3x3_reduce + n5x5_reduce columns instead of three thin ones;
- the Inception modules' 3x3/1 max pools are separable in bf16 (the LRN layers are already the
  fast GEMM form of `inception.modules.LocalResponseNorm`);
- the stem runs a few images at a time, so that its large maps stay in cache.

(bf16: AVX512-BF16 or AMX make it about twice fp32's arithmetic rate on CPUs that have them.)

The result takes float32 input in the model's usual layout and returns float32 logits.

`export=True` gives a different arrangement, the one ONNX Runtime runs fastest (measured with
`benchmarks/onnx_graph.py`, BENCHMARKS.md): BN folded, but the 1x1 convolutions not fused,
because ONNX Runtime keeps convolutions in its blocked NCHWc layout and has no blocked Split, so
every split costs two layout conversions; and the LRN layers as `ConvLRN`, whose window sum is a
1x1 convolution that stays in that layout.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from inception.model import GoogLeNet
from inception.modules import ConvReLU, Inception, LocalResponseNorm


def _fold(block: ConvReLU) -> None:
    """Fold `block`'s BatchNorm into its convolution, in place."""
    if isinstance(block.bn, nn.BatchNorm2d):
        block.conv = fuse_conv_bn_eval(block.conv, block.bn)
        block.bn = nn.Identity()


class FusedInception(nn.Module):
    """A reduced Inception module with its three input-side 1x1 convolutions as one."""

    def __init__(self, module: Inception) -> None:
        super().__init__()
        first = [module.branch1, module.branch2[0], module.branch3[0]]
        convs = [b.conv for b in first]
        self.splits = [c.out_channels for c in convs]
        device = convs[0].weight.device
        fused = nn.Conv2d(convs[0].in_channels, sum(self.splits), 1, bias=True, device=device)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([c.weight for c in convs]))
            fused.bias.copy_(torch.cat([c.bias if c.bias is not None
                                        else torch.zeros(c.out_channels, device=device)
                                        for c in convs]))
        self.reduce = fused
        self.branch2, self.branch3 = module.branch2[1], module.branch3[1]
        self.branch4 = module.branch4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = F.relu(self.reduce(x), inplace=True).split(self.splits, dim=1)
        outs = [a, self.branch2(b), self.branch3(c)]
        if self.branch4 is not None:
            outs.append(self.branch4(x))
        return torch.cat(outs, dim=1)


class ConvLRN(nn.Module):
    """`LocalResponseNorm` for export: x * (k + alpha/n * window sum of x^2)^-beta, the window
    sum a 1x1 convolution of the squares with the banded C x C weight (bias k).

    The power, when beta is 3/4 (Caffe's), takes a form for the target runtime (`form`;
    `benchmarks/lrn_share.py` measures both):

    - "onnxruntime": rsqrt(s) * sqrt(rsqrt(s)), faster there than `Pow`;
    - "openvino": (s^1/4)^-3 as sqrt, sqrt, then an integer power: one chain of unary
      element-wise operations, which OpenVINO's CPU plugin fuses with the final multiply into
      one kernel (its profile shows one node for them). Alternated with the rsqrt form in
      OpenVINO (`benchmarks/lrn_floor.py`), the two ran within 5% of each other in bf16 and INT8;
      `Pow(s, -3/4)`, exp-log and OpenVINO's own LRN ran far slower (BENCHMARKS.md, "Deploying
      on a CPU").

    Both equal the definition to float rounding (`tests/test_inference.py`)."""

    FORMS = ("onnxruntime", "openvino")

    def __init__(self, lrn: LocalResponseNorm, channels: int,
                 device: torch.device | None = None, form: str = "onnxruntime") -> None:
        super().__init__()
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {', '.join(self.FORMS)}; got {form!r}")
        self.beta, self.form = lrn.beta, form
        band = lrn.band(channels, device)  # [input channel, output channel]
        self.window = nn.Conv2d(channels, channels, 1, device=device)
        with torch.no_grad():
            self.window.weight.copy_(band.t().reshape(channels, channels, 1, 1))
            self.window.bias.fill_(lrn.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.window(x * x)
        if self.beta != 0.75:
            return x * s.pow(-self.beta)
        if self.form == "openvino":
            return x * torch.sqrt(torch.sqrt(s)).pow(-3)
        r = torch.rsqrt(s)
        return x * (r * torch.sqrt(r))


class MaxPool3x3(nn.Module):
    """`nn.MaxPool2d(3, stride=1, padding=1)` as two separable 3-wide maxima over -inf padding:
    about 4x faster than PyTorch's bf16 max pool in channels_last on this CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
        rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
        return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


class InferenceGoogLeNet(nn.Module):
    """The rearranged network plus the casts at its edges: float32 in, float32 logits out.

    The stem (conv1 .. pool2, whose 112x112 and 56x56 maps dominate memory traffic) runs
    `stem_chunk` images at a time so that its activations stay in cache; the rest of the network
    runs on the whole batch."""

    def __init__(self, net: GoogLeNet, dtype: torch.dtype, stem_chunk: int | None = 2,
                 cast: bool = True) -> None:
        super().__init__()
        self.net, self.dtype, self.stem_chunk, self.cast = net, dtype, stem_chunk, cast
        self.config = net.config
        names = list(net.layers)
        split = names.index("pool2") + 1
        self.stem, self.body = names[:split], names[split:]

    def _run(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for name in names:
            x = self.net.layers[name](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cast:  # the export graph: no casts, no chunks
            return self.net(x)
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        if self.stem_chunk is None:
            return self.net(x).float()
        if self.config.transform_input:
            x = self.net.transform_input(x)
        parts = [self._run(self.stem, chunk) for chunk in x.split(self.stem_chunk)]
        x = torch.cat(parts) if len(parts) > 1 else parts[0]
        return self._run(self.body, x).float()


def _replace_lrn(net: GoogLeNet, form: str = "onnxruntime") -> None:
    """Replace every `LocalResponseNorm` in `net` by its `ConvLRN` of `form`, in place. The
    channel counts come from one forward pass of a blank image."""
    channels: dict[nn.Module, int] = {}
    hooks = [m.register_forward_pre_hook(
        lambda module, args: channels.__setitem__(module, args[0].shape[1]))
        for m in net.modules() if isinstance(m, LocalResponseNorm)]
    size = net.config.image_size
    device = next(net.parameters()).device
    net(torch.zeros(1, net.config.in_chans, size, size, device=device))
    for h in hooks:
        h.remove()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if child in channels:
                setattr(parent, name, ConvLRN(child, channels[child], device, form))


@torch.no_grad()
def optimize_for_inference(model: GoogLeNet, dtype: torch.dtype = torch.float32,
                           compile: bool = False, export: bool | str = False,
                           device: str | torch.device | None = None) -> nn.Module:
    """An inference-only copy of `model` with equal outputs; see the module docstring.

    `device` is the device the rewrites are chosen for (default: the model's); the copy stays
    on the model's device. `export=True` gives the fp32 graph for ONNX (module docstring): BN
    folded, the 1x1 convolutions not fused, the LRN layers as `ConvLRN`, the stem not chunked.
    `export="openvino"` gives the same graph with `ConvLRN`'s OpenVINO form (`export=True` is
    "onnxruntime").
    """
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16; got {dtype}")
    if export and (dtype != torch.float32 or compile):
        raise ValueError(f"export={export!r} is for the fp32 export graph: no bf16, no compile")
    target = torch.device(device) if device is not None else next(model.parameters()).device
    cpu = target.type == "cpu"
    net = copy.deepcopy(model).eval().float()
    if net.aux:
        net.drop_aux()
    for block in list(net.modules()):
        if isinstance(block, ConvReLU):
            _fold(block)
    if export:
        _replace_lrn(net, "onnxruntime" if export is True else export)
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(parent, child_name, nn.Identity())
    if cpu and not export:
        _cpu_rewrites(net, dtype)
    net = net.to(dtype=dtype, memory_format=torch.channels_last)
    if export:
        return InferenceGoogLeNet(net.to(memory_format=torch.contiguous_format), dtype,
                                  stem_chunk=None, cast=False).eval()
    out: nn.Module = InferenceGoogLeNet(net, dtype, stem_chunk=2 if cpu else None).eval()
    if compile:
        out = torch.compile(out)
    return out


def _cpu_rewrites(net: GoogLeNet, dtype: torch.dtype) -> None:
    """The CPU-only rewrites, in place: fused input-side 1x1 convolutions, and in bf16 the
    separable 3x3/1 max pools."""
    for name, layer in list(net.layers.items()):
        if isinstance(layer, Inception) and not layer.naive:
            net.layers[name] = FusedInception(layer)
    if dtype == torch.bfloat16:
        for layer in net.layers.values():
            if isinstance(layer, FusedInception | Inception) and layer.branch4 is not None:
                pool = layer.branch4[0]
                if pool.kernel_size == 3 and pool.stride == 1 and pool.padding == 1:
                    layer.branch4[0] = MaxPool3x3()
