"""The building blocks of GoogLeNet: conv+ReLU, the Inception module (both forms of Figure 2) and
the auxiliary classifier of section 5. Each is one parametrized class.

Parameter names follow torchvision's (`conv`, `bn`, `branch1`..`branch4`, `fc1`, `fc2`), so that
`inception.torchvision_compat` maps a torchvision state dict onto ours by prefix alone.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

# Not in the paper. Caffe's bvlc_googlenet, the port made with the first author's help, uses
# local_size 5, alpha 1e-4, beta 0.75 (k = 1) for both LRN layers; PyTorch's LocalResponseNorm has
# Caffe's across-channels semantics (alpha is divided by size).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0


class LocalResponseNorm(nn.LocalResponseNorm):
    """`nn.LocalResponseNorm` (Caffe's across-channels LRN), computed faster: x / (k + alpha/n *
    window sum of x^2)^beta, the window sums as one GEMM of the squares (pixels x C) by a banded
    C x C matrix that carries alpha/n, with k as the GEMM's bias (`torch.addmm`). PyTorch's own
    version pools a 5-D view with `avg_pool3d`; this one trains the paper variant faster at 224 px
    in bf16 (`benchmarks/lrn.py` measures by how much; BENCHMARKS.md, "LRN: training step, PyTorch
    inference and ONNX Runtime").

    The normaliser is computed in fp32 even under bf16 autocast or on bf16 input: with bf16's
    8-bit mantissa, k + alpha/n * S rounds to k for most activations and the layer would vanish.

    On the CPU the pixels go through in chunks of `CPU_CHUNK` rows, so that the squares, the
    window sums and the scale stay in cache between the steps, and training uses a hand-written
    backward (`_ChunkedLRN`) that reuses the saved sums instead of autograd's chain of `pow`s.
    Not when traced (`torch.compile`, `torch.export`), where a chunk count would fix the batch
    size, nor on GPUs. Gains in a bf16 training step: `benchmarks/lrn.py`, BENCHMARKS.md.
    """

    CPU_CHUNK = 2048

    def band(self, channels: int, device: torch.device | None = None) -> torch.Tensor:
        """The C x C matrix [input channel i, output channel j] = alpha/n where i is in j's
        window, else 0."""
        return lrn_band(channels, self.size, self.alpha, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gemm_lrn(x, self.size, self.alpha, self.beta, self.k, self.CPU_CHUNK)


def lrn_band(channels: int, size: int, alpha: float,
             device: torch.device | None = None) -> torch.Tensor:
    """`LocalResponseNorm.band`: alpha/size where input channel i is in output channel j's
    window (PyTorch's window: j - size//2 .. j + (size-1)//2), else 0."""
    offsets = torch.arange(channels, device=device)
    lo, hi = size // 2, (size - 1) // 2
    diff = offsets[:, None] - offsets[None, :]  # input channel i - output channel j
    return ((diff >= -lo) & (diff <= hi)).float() * (alpha / size)


def gemm_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
             chunk: int) -> torch.Tensor:
    """`LocalResponseNorm`'s forward as a function. `torch.fx` traces it as one call (it is
    registered with `torch.fx.wrap` below): its device and autocast checks cannot run on a
    tracing proxy, and without that `create_feature_extractor` fails on the paper variant."""
    n, c, h, w = x.shape
    device = x.device.type
    no_autocast = (torch.autocast(device, enabled=False)
                   if torch.amp.is_autocast_available(device) else contextlib.nullcontext())
    with no_autocast:
        band = lrn_band(c, size, alpha, x.device)
        bias = torch.full((c,), float(k), device=x.device)
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view for channels_last input
        traced = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        if x.device.type != "cpu" or traced:
            scale = torch.addmm(bias, pixels.float().square(), band).pow_(-beta)
            out = pixels * scale.to(x.dtype)
        elif torch.is_grad_enabled() and x.requires_grad:
            out = _ChunkedLRN.apply(pixels, band, bias, beta, chunk)
        else:
            out = _lrn_chunks(pixels, band, bias, beta, chunk)
        return out.view(n, h, w, c).permute(0, 3, 1, 2)


torch.fx.wrap("gemm_lrn")


def _lrn_chunks(pixels: torch.Tensor, band: torch.Tensor, bias: torch.Tensor, beta: float,
                chunk: int, sums: torch.Tensor | None = None) -> torch.Tensor:
    """x * s^-beta with s = k + x^2 @ band, `chunk` rows of pixels at a time, s in fp32 (float64
    for float64 input) and kept in `sums` if given."""
    compute = torch.promote_types(pixels.dtype, torch.float32)
    band, bias = band.to(compute), bias.to(compute)
    out = torch.empty_like(pixels)
    for i in range(0, len(pixels), chunk):
        p = pixels[i:i + chunk]
        s = torch.addmm(bias, p.to(compute).square(), band)
        if sums is not None:
            sums[i:i + chunk] = s
        torch.mul(p, s.pow_(-beta).to(pixels.dtype), out=out[i:i + chunk])
    return out


class _ChunkedLRN(torch.autograd.Function):
    """`_lrn_chunks` with a backward from the saved s, also chunked: dL/dx = g * s^-beta
    - 2 beta x * ((g x s^-beta / s) @ band^T)."""

    @staticmethod
    def forward(ctx, pixels: torch.Tensor, band: torch.Tensor, bias: torch.Tensor, beta: float,
                chunk: int) -> torch.Tensor:
        compute = torch.promote_types(pixels.dtype, torch.float32)
        sums = torch.empty(pixels.shape, dtype=compute, device=pixels.device)
        out = _lrn_chunks(pixels, band, bias, beta, chunk, sums)
        ctx.save_for_backward(pixels, sums, band.to(compute))
        ctx.beta, ctx.chunk = beta, chunk
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pixels, sums, band = ctx.saved_tensors
        beta, chunk = ctx.beta, ctx.chunk
        out = torch.empty_like(pixels)
        band_t = band.t()
        for i in range(0, len(pixels), chunk):
            x, s = pixels[i:i + chunk].to(sums.dtype), sums[i:i + chunk]
            g = grad[i:i + chunk].to(sums.dtype)
            scale = s.pow(-beta)
            t = torch.mm(g * x * scale / s, band_t)
            out[i:i + chunk] = g * scale - (2 * beta) * x * t
        return out, None, None, None, None


def local_response_norm() -> LocalResponseNorm:
    """The LocalRespNorm of Figure 3, with Caffe's constants."""
    return LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


class ConvReLU(nn.Module):
    """A square convolution with "same" padding, an optional BatchNorm, and a ReLU.

    "All the convolutions, including those inside the Inception modules, use rectified linear
    activation" -- the 1x1 reductions and pool projections included. With `batch_norm` the
    convolution has no bias (the BN shift replaces it), as in torchvision.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 batch_norm: bool = False, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


# An Inception module's four branches by the names of Figure 2, and their attributes.
BRANCHES = {"1x1": "branch1", "3x3": "branch2", "5x5": "branch3", "pool": "branch4"}


class Inception(nn.Module):
    """The Inception module of Figure 2, in either form.

    reduced (Figure 2b, used by GoogLeNet): "1x1 convolutions are used to compute reductions
    before the expensive 3x3 and 5x5 convolutions", and a 1x1 "projection layer after the built-in
    max-pooling". Output depth: n1x1 + n3x3 + n5x5 + pool_proj.

    naive (Figure 2a): the 1x1, 3x3 and 5x5 convolutions read the input directly and the 3x3 max
    pool passes every input channel through. `n3x3_reduce`, `n5x5_reduce` and `pool_proj` are
    ignored. Output depth: n1x1 + n3x3 + n5x5 + in_channels.

    `pool_branch=False` removes the fourth branch (the max pool and, when reduced, its
    projection): the ablation of section 4's "adding an alternative parallel pooling path".
    `branch4` is then None.

    The four branch outputs are "concatenated into a single output vector forming the input of
    the next stage".
    """

    def __init__(self, in_channels: int, n1x1: int, n3x3_reduce: int, n3x3: int, n5x5_reduce: int,
                 n5x5: int, pool_proj: int, *, naive: bool = False, branch5x5_kernel: int = 5,
                 pool_branch: bool = True, batch_norm: bool = False,
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.naive = naive

        def conv(cin: int, cout: int, k: int) -> ConvReLU:
            return ConvReLU(cin, cout, k, batch_norm=batch_norm, bn_eps=bn_eps)

        def branch(reduce: int, out: int, k: int) -> nn.Sequential:
            if naive:
                return nn.Sequential(conv(in_channels, out, k))
            return nn.Sequential(conv(in_channels, reduce, 1), conv(reduce, out, k))

        self.branch1 = conv(in_channels, n1x1, 1)
        self.branch2 = branch(n3x3_reduce, n3x3, 3)
        self.branch3 = branch(n5x5_reduce, n5x5, branch5x5_kernel)
        pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.branch4: nn.Sequential | None = None
        if pool_branch:
            self.branch4 = nn.Sequential(pool) if naive else nn.Sequential(
                pool, conv(in_channels, pool_proj, 1))
        pooled = 0 if not pool_branch else in_channels if naive else pool_proj
        self.out_channels = n1x1 + n3x3 + n5x5 + pooled

    def branches(self) -> tuple[nn.Module, ...]:
        four = (self.branch1, self.branch2, self.branch3, self.branch4)
        return tuple(b for b in four if b is not None)

    def filter_counts(self) -> dict[str, int | None]:
        """Table 1's filter columns read back from this module's convolutions."""
        def outs(seq: nn.Module) -> list[int]:
            return [m.out_channels for m in seq.modules() if isinstance(m, nn.Conv2d)]

        b2, b3 = outs(self.branch2), outs(self.branch3)
        b4 = outs(self.branch4) if self.branch4 is not None else []
        return {
            "n1x1": self.branch1.conv.out_channels,
            "n3x3_reduce": None if self.naive else b2[0],
            "n3x3": b2[-1],
            "n5x5_reduce": None if self.naive else b3[0],
            "n5x5": b3[-1],
            "pool_proj": b4[0] if b4 else None,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A torch.fx trace (feature extraction) keeps the blocks, in train mode too.
        if self.training and not isinstance(x, torch.fx.Proxy) and self._fusable():
            return self._fused_forward(x)
        return torch.cat([b(x) for b in self.branches()], dim=1)

    def _blocks(self) -> list[ConvReLU]:
        return [m for m in self.modules() if isinstance(m, ConvReLU)]

    # Training runs `_fused_forward` where it computes the same thing; False runs the blocks one
    # by one (as before 0.5.0; `benchmarks/train_step.py` compares the two).
    fuse_in_training: bool = True

    def _fusable(self) -> bool:
        """Whether `_fused_forward` computes what the blocks would: a reduced module of plain
        Conv2d and ReLU layers with no hooks (the fused form calls none of them: cost counting,
        pruning or quantization hooks must see the blocks run), whose norms are all absent, or
        all plain BatchNorm2d in this module's mode (not SyncBatchNorm, which must talk to the
        other processes) tracking running statistics with one momentum and one epsilon."""
        if self.naive or not self.fuse_in_training or _global_hooks():
            return False
        blocks = self._blocks()
        layers = [m for b in blocks for m in b.modules()]
        if any(m._forward_hooks or m._forward_pre_hooks for m in (self, *layers)):
            return False
        if not all(type(b.conv) is nn.Conv2d and type(b.relu) is nn.ReLU for b in blocks):
            return False
        norms = [b.bn for b in blocks]
        if all(type(n) is nn.Identity for n in norms):
            return True
        return (all(type(n) is nn.BatchNorm2d and n.track_running_stats
                    and n.training == self.training for n in norms)
                and len({(n.momentum, n.eps) for n in norms}) == 1
                and norms[0].momentum is not None)

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's training forward with its thin layers merged: the same function of the
        same parameters, in fewer and wider operations.

        - The three 1x1 convolutions that read the input (the 1x1 branch, the 3x3 and 5x5
          reduces) are one convolution, their weights concatenated.
        - The two reductions' BatchNorms and ReLUs are one BatchNorm and one ReLU.
        - The four branch outputs are concatenated before their BatchNorm and ReLU, which then
          run once over the module's whole output.

        BatchNorm and ReLU act channel by channel, so merging them changes nothing but the
        number of passes over memory; at width 0.25 the branches have 4-64 channels, where each
        pass costs far more than its arithmetic, and BatchNorm in channels_last is slowest of
        all (`benchmarks/train_step.py`). The blocks' own forwards are not called (their hooks
        do not fire); eval mode and a traced graph run them one by one.
        """
        (b1, (r3, c3), (r5, c5)) = self.branch1, self.branch2, self.branch3
        first = (b1, r3, r5)
        weight = torch.cat([b.conv.weight for b in first])
        bias = None if b1.conv.bias is None else torch.cat([b.conv.bias for b in first])
        y = F.conv2d(x, weight, bias)
        n1 = b1.conv.out_channels
        reduced = _norm_relu((r3, r5), y[:, n1:].contiguous(memory_format=_layout(y)))
        a, b = reduced.split([r3.conv.out_channels, r5.conv.out_channels], dim=1)
        raw = [y[:, :n1], c3.conv(a), c5.conv(b)]
        tail = [b1, c3, c5]
        if self.branch4 is not None:
            pool, proj = self.branch4
            raw.append(proj.conv(pool(x)))
            tail.append(proj)
        return _norm_relu(tail, torch.cat(raw, dim=1))


def _global_hooks() -> bool:
    """Whether forward hooks are registered for every module (`nn.modules.module.
    register_module_forward_hook` and its pre-hook twin)."""
    from torch.nn.modules import module

    return bool(module._global_forward_hooks or module._global_forward_pre_hooks)


def _layout(t: torch.Tensor) -> torch.memory_format:
    """The memory format `t` is laid out in (channels_last or contiguous)."""
    cl = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _norm_relu(blocks: list[ConvReLU] | tuple[ConvReLU, ...], y: torch.Tensor) -> torch.Tensor:
    """The BatchNorms (if any) and ReLUs of `blocks` applied to `y`, whose channels are those
    blocks' convolution outputs in order, as one BatchNorm and one ReLU."""
    norms = [b.bn for b in blocks]
    if isinstance(norms[0], nn.BatchNorm2d):
        y = _concatenated_batch_norm(norms, y)
    return torch.relu_(y)


def _concatenated_batch_norm(norms: list[nn.BatchNorm2d], y: torch.Tensor) -> torch.Tensor:
    """`norms` applied to consecutive channel groups of `y` by one `F.batch_norm` call, in
    training or eval mode as the first says. In training the running statistics are updated as
    each module's own forward would (momentum, batch counter) and written back."""
    bn = norms[0]
    sizes = [n.num_features for n in norms]
    mean = torch.cat([n.running_mean for n in norms])
    var = torch.cat([n.running_var for n in norms])
    out = F.batch_norm(y, mean, var, torch.cat([n.weight for n in norms]),
                       torch.cat([n.bias for n in norms]), bn.training, bn.momentum, bn.eps)
    if bn.training:
        with torch.no_grad():
            for n, m, v in zip(norms, mean.split(sizes), var.split(sizes), strict=True):
                n.running_mean.copy_(m)
                n.running_var.copy_(v)
                n.num_batches_tracked.add_(1)
    return out


class AuxClassifier(nn.Module):
    """The auxiliary classifier of section 5, put on top of 4a and 4d during training:

    - "An average pooling layer with 5x5 filter size and stride 3, resulting in an 4x4x512 output
      for the (4a), and 4x4x528 for the (4d) stage." (`pool="adaptive"`: torchvision's 4x4
      adaptive average pool instead);
    - "A 1x1 convolution with 128 filters for dimension reduction and rectified linear activation.";
    - "A fully connected layer with 1024 units and rectified linear activation.";
    - "A dropout layer with 70% ratio of dropped outputs.";
    - "A linear layer with softmax loss as the classifier" (the softmax lives in the loss).

    `pooled_size` is the side of the pooled map (4 for a 14x14 input), which fixes fc1's input.
    """

    def __init__(self, in_channels: int, num_classes: int, *, pooled_size: int = 4,
                 pool: str = "5x5/3", filters: int = 128, units: int = 1024, dropout: float = 0.7,
                 batch_norm: bool = False, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3) if pool == "5x5/3" else nn.AdaptiveAvgPool2d(
            pooled_size)
        self.conv = ConvReLU(in_channels, filters, 1, batch_norm=batch_norm, bn_eps=bn_eps)
        self.fc1 = nn.Linear(filters * pooled_size * pooled_size, units)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(units, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 512 x 14 x 14 (4a) or N x 528 x 14 x 14 (4d) at 224 px
        x = self.conv(self.pool(x))
        # N x 128 x 4 x 4
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        # N x 1024
        return self.fc2(self.dropout(x))
