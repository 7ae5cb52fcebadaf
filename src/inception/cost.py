"""Table 1 recomputed from the model: parameters, multiply-adds, output sizes and depth per row.

Nothing here is typed in except the paper's printed figures (in `inception.table1`), which are only
ever *compared* against. The model is built on PyTorch's meta device, so a forward pass costs no
arithmetic and no memory; forward hooks read every convolution's and linear layer's output shape,
and a layer's multiply-adds are (output elements) x (input channels per group) x (kernel area).
Pooling, LRN, ReLU and concatenation are not multiply-adds and are not counted, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from inception.config import ConfigError, GoogLeNetConfig
from inception.model import GoogLeNet
from inception.modules import ConvReLU, Inception
from inception.table1 import (
    PAPER_BUDGET_MACS,
    TABLE1,
    disagrees,
    paper_ops,
    paper_params,
)

FILTER_COLUMNS = ("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj")


@dataclass
class RowCost:
    """One row of Table 1 as computed from a model, beside the paper's printed figures."""

    name: str
    type: str
    patch: str | None
    output: tuple[int, int, int]  # (height, width, depth)
    depth: int  # layers with parameters on the row's longest path
    filters: dict[str, int | None]
    params: int  # every parameter: weights, biases, BN scale and shift
    weights: int  # convolution and linear weights only: what the paper's params column counts
    ops: int  # multiply-adds for one image
    paper_params: int | None = None
    paper_ops: int | None = None
    paper_params_printed: str | None = None
    paper_ops_printed: str | None = None
    params_mismatch: bool = False  # the paper's params disagree with its own filter counts
    ops_mismatch: bool = False  # likewise for ops

    @property
    def paper_mismatch(self) -> bool:
        return self.params_mismatch or self.ops_mismatch

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("filters"))
        out["output"] = list(self.output)
        out["output_size"] = "x".join(map(str, self.output))
        out["paper_mismatch"] = self.paper_mismatch
        return out


@dataclass
class CostReport:
    config: GoogLeNetConfig
    rows: list[RowCost]
    total_params: int  # the inference model: no aux heads
    total_params_with_aux: int | None  # None where the aux heads cannot be built at this size
    total_ops: int  # inference: one image through the main path
    total_ops_with_aux: int | None  # a training forward pass, aux heads included
    depth: int
    depth_with_pooling: int
    paper_budget_ops: int = PAPER_BUDGET_MACS
    paper_total_params: int = 0  # the sum of Table 1's printed params column
    paper_total_ops: int = 0  # the sum of Table 1's printed ops column
    mismatches: list[str] = field(default_factory=list)  # the paper's slips, explained
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "rows": [r.to_json() for r in self.rows],
            "total_params": self.total_params,
            "total_params_with_aux": self.total_params_with_aux,
            "total_ops": self.total_ops,
            "total_ops_with_aux": self.total_ops_with_aux,
            "paper_budget_ops": self.paper_budget_ops,
            "paper_total_params": self.paper_total_params,
            "paper_total_ops": self.paper_total_ops,
            "depth": self.depth,
            "depth_with_pooling": self.depth_with_pooling,
            "units": "params and ops are exact counts; the paper prints params in K = 1024 "
                     "weights (no biases) and ops in M = 10^6 multiply-adds",
            "mismatches": self.mismatches,
            "notes": self.notes,
        }


@contextmanager
def _macs_hooks(model: nn.Module) -> Iterator[dict[str, int]]:
    """Record {qualified name: multiply-adds per image} for every conv and linear layer."""
    macs: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            per_image = output.numel() // output.shape[0]
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                fan_in = module.in_channels // module.groups * kh * kw
            else:
                fan_in = module.in_features
            macs[name] = macs.get(name, 0) + per_image * fan_in
        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        yield macs
    finally:
        for h in handles:
            h.remove()


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of `module` in eval mode on an input of `input_shape`
    (batch 1)."""
    was_training = module.training
    module.eval()
    try:
        with _macs_hooks(module) as macs, torch.no_grad():
            module(torch.empty(input_shape, device="meta"))
    finally:
        module.train(was_training)
    return sum(macs.values())


def layer_depth(module: nn.Module) -> int:
    """Layers with parameters on the longest path through `module`: branches of an Inception
    module run side by side (max), everything else runs in sequence (sum)."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        return 1
    depths = [layer_depth(m) for m in module.children()]
    if isinstance(module, Inception):
        return max(depths)
    return sum(depths)


def _weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear))


def _filters(module: nn.Module) -> dict[str, int | None]:
    """Table 1's filter columns read back from a row's convolutions (conv2: reduce, then 3x3)."""
    counts: dict[str, int | None] = dict.fromkeys(FILTER_COLUMNS)
    if isinstance(module, Inception):
        counts.update(module.filter_counts())
    else:
        convs = [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]
        if len(convs) == 2:
            counts["n3x3_reduce"], counts["n3x3"] = convs
    return counts


def _measure(config: GoogLeNetConfig) -> tuple[GoogLeNet, dict[str, int], dict[str, tuple]]:
    """The model on the meta device, its per-layer MACs and per-row outputs.

    It has aux heads whenever they can be built, so that their cost is reported too; a config with
    `aux_logits=False` at a size where the paper's aux pool cannot run is measured without them.
    """
    with torch.device("meta"):
        try:
            model = GoogLeNet(config.replace(aux_logits=True)).eval()
        except ConfigError:
            if config.aux_logits:
                raise
            model = GoogLeNet(config).eval()
    shapes: dict[str, tuple] = {}
    handles = [
        layer.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        for name, layer in model.layers.items()
    ]
    x = torch.empty(1, config.in_chans, config.image_size, config.image_size, device="meta")
    with _macs_hooks(model) as macs, torch.no_grad():
        model.forward_aux(x) if model.aux else model(x)
    for h in handles:
        h.remove()
    return model, macs, shapes


def table1_cost(config: GoogLeNetConfig | None = None) -> CostReport:
    """Every row of Table 1 computed from the model built with `config` (the paper's if None).

    `params_mismatch` / `ops_mismatch` flag the rows where the paper's printed figure disagrees by
    more than 2% (or more than its own rounding) with the arithmetic of the paper's own filter
    counts. They are properties of the paper, so they are computed from the paper's configuration
    whatever `config` is.
    """
    config = config or GoogLeNetConfig()
    paper_config = GoogLeNetConfig()
    model, macs, shapes = _measure(config)
    rows = _rows(config, model, macs, shapes)
    paper_rows = (rows if _same_geometry(config, paper_config)
                  else _rows(paper_config, *_measure(paper_config)))
    mismatches = []
    for row, ref, spec in zip(rows, paper_rows, TABLE1, strict=True):
        slips = []
        if spec.params is not None:
            row.paper_params = round(paper_params(spec))
            row.paper_params_printed = spec.params
            row.params_mismatch = disagrees(spec.params, "K", ref.weights)
            if row.params_mismatch:
                slips.append(f"params printed {spec.params}, its filter counts give "
                             f"{ref.weights:,} weights = {_k(ref.weights)}")
        if spec.ops is not None:
            row.paper_ops = round(paper_ops(spec))
            row.paper_ops_printed = spec.ops
            row.ops_mismatch = disagrees(spec.ops, "M", ref.ops)
            if row.ops_mismatch:
                slips.append(f"ops printed {spec.ops}, its filter counts give {ref.ops:,} "
                             f"multiply-adds = {_m(ref.ops)}")
        if slips:
            mismatches.append(f"{spec.name}: " + "; ".join(slips))

    inference_params = sum(p.numel() for p in model.layers.parameters())
    total_ops = sum(r.ops for r in rows)
    with_aux_params = with_aux_ops = None
    if model.aux:
        with_aux_params = inference_params + sum(p.numel() for p in model.aux.parameters())
        with_aux_ops = total_ops + sum(v for k, v in macs.items() if k.startswith("aux."))
    depth = sum(r.depth for r in rows)
    pools = sum(1 for r in rows if r.type in ("max pool", "avg pool") and r.patch)
    notes = []
    if not _same_geometry(config, paper_config):
        notes.append("this configuration differs from the paper's; the paper columns and the "
                     "mismatch flags refer to the paper's 224 px network")
    return CostReport(
        config=config, rows=rows,
        total_params=inference_params, total_params_with_aux=with_aux_params,
        total_ops=total_ops, total_ops_with_aux=with_aux_ops,
        depth=depth, depth_with_pooling=depth + pools, mismatches=mismatches, notes=notes,
        paper_total_params=sum(r.paper_params or 0 for r in rows),
        paper_total_ops=sum(r.paper_ops or 0 for r in rows),
    )


def _same_geometry(a: GoogLeNetConfig, b: GoogLeNetConfig) -> bool:
    """True when the two configs have the same parameter counts and multiply-adds per row."""
    keys = ("num_classes", "in_chans", "image_size", "width", "stem", "module", "branch5x5_kernel",
            "pool4_kernel", "pool_branch", "head")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _patch(name: str, printed: str | None, config: GoogLeNetConfig,
           previous: tuple[int, int, int]) -> str | None:
    """The "patch size/stride" column of the model as configured."""
    if name == "conv1" and config.stem == "small":
        return "3x3/1"
    if name == "pool1" and config.stem == "small":
        return None
    if name == "pool4":
        return f"{config.pool4_kernel}x{config.pool4_kernel}/2"
    if name == "avgpool":  # a global average pool: 7x7/1 at 224 px; none with head="fc"
        return f"{previous[0]}x{previous[1]}/1" if config.head == "avgpool" else None
    return printed


def _rows(config: GoogLeNetConfig, model: GoogLeNet, macs: dict[str, int],
          shapes: dict[str, tuple]) -> list[RowCost]:
    """One RowCost per Table 1 row from a `_measure`d model."""
    rows: list[RowCost] = []
    for spec in TABLE1:
        previous = rows[-1].output if rows else (config.image_size, config.image_size,
                                                 config.in_chans)
        if spec.name not in model.layers:  # softmax: part of the loss, not of the model
            rows.append(RowCost(spec.name, spec.type, None, previous, 0,
                                dict.fromkeys(FILTER_COLUMNS), 0, 0, 0))
            continue
        layer = model.layers[spec.name]
        c, *hw = shapes[spec.name]
        h, w = hw or (1, 1)
        prefix = f"layers.{spec.name}"
        ops = sum(v for k, v in macs.items() if k == prefix or k.startswith(prefix + "."))
        kind = "linear" if spec.name == "avgpool" and config.head == "fc" else spec.type
        rows.append(RowCost(spec.name, kind, _patch(spec.name, spec.patch, config, previous),
                            (h, w, c), layer_depth(layer), _filters(layer),
                            sum(p.numel() for p in layer.parameters()), _weights(layer), ops))
    return rows


# -- the 1x1-reduction argument of section 4 --------------------------------------------------

@dataclass
class ModuleComparison:
    name: str
    input: tuple[int, int, int]  # (height, width, depth)
    naive_ops: int
    reduced_ops: int
    naive_params: int
    reduced_params: int
    naive_out: int
    reduced_out: int


def classic_example() -> ModuleComparison:
    """The textbook case of the paper's argument: 28x28x192 in, 32 5x5 filters out, with and
    without a 16-filter 1x1 bottleneck in front ("1x1 convolutions are used to compute reductions
    before the expensive 3x3 and 5x5 convolutions")."""
    naive = ConvReLU(192, 32, 5)
    reduced = nn.Sequential(ConvReLU(192, 16, 1), ConvReLU(16, 32, 5))
    shape = (1, 192, 28, 28)
    return ModuleComparison(
        "28x28x192 -> 32 5x5", (28, 28, 192), count_macs(naive.to("meta"), shape),
        count_macs(reduced.to("meta"), shape), _weights(naive), _weights(reduced), 32, 32)


def module_comparisons() -> list[ModuleComparison]:
    """Each Inception module of Table 1, naive (Figure 2a) against reduced (Figure 2b), on the
    same input and with the same 1x1, 3x3 and 5x5 filter counts."""
    report = table1_cost()
    inputs = {}
    previous = None
    for row in report.rows:
        inputs[row.name] = previous
        previous = row.output
    out = []
    for spec in TABLE1:
        if spec.type != "inception":
            continue
        h, w, cin = inputs[spec.name]
        filters = (spec.n1x1, spec.n3x3_reduce, spec.n3x3, spec.n5x5_reduce, spec.n5x5,
                   spec.pool_proj)
        with torch.device("meta"):
            naive, reduced = Inception(cin, *filters, naive=True), Inception(cin, *filters)
        shape = (1, cin, h, w)
        out.append(ModuleComparison(spec.name, (h, w, cin), count_macs(naive, shape),
                                    count_macs(reduced, shape), _weights(naive), _weights(reduced),
                                    naive.out_channels, reduced.out_channels))
    return out


# -- text and plot --------------------------------------------------------------------------------

def _k(n: float) -> str:
    return f"{n / 1024:.1f}K"


def _m(n: float) -> str:
    return f"{n / 1e6:.1f}M"


def format_table(report: CostReport) -> str:
    """Table 1 as text, computed figures beside the paper's, mismatches flagged."""
    head = ("name", "type", "patch/stride", "output size", "depth", "#1x1", "#3x3 red", "#3x3",
            "#5x5 red", "#5x5", "pool proj", "params", "(paper)", "ops", "(paper)", "")
    lines = []
    for r in report.rows:
        f = [("" if r.filters[c] is None else str(r.filters[c])) for c in FILTER_COLUMNS]
        flag = "!" if r.paper_mismatch else ""
        lines.append((
            r.name, r.type, r.patch or "", "x".join(map(str, r.output)), str(r.depth), *f,
            _k(r.weights) if r.weights else "", r.paper_params_printed or "",
            _m(r.ops) if r.ops else "", r.paper_ops_printed or "", flag))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head).rstrip(), "  ".join("-" * w for w in widths)]
    out += [fmt.format(*line).rstrip() for line in lines]
    out.append("")
    out.append("params: weights of conv and linear layers in K = 1024 (the paper's unit; biases "
               "not counted); ops: multiply-adds per image in M = 10^6.")
    if report.mismatches:
        out.append("! the paper's printed figure disagrees by more than 2% with the arithmetic "
                   "of its own filter counts:")
        out += [f"  {m}" for m in report.mismatches]
    out.append("")
    pct = 100 * report.total_ops / report.paper_budget_ops
    out.append(f"total params (inference, no aux heads): {report.total_params:,}")
    if report.total_params_with_aux is not None:
        out.append(f"total params with aux heads (training): {report.total_params_with_aux:,}")
    out.append(f"total multiply-adds (inference):        {report.total_ops:,} = "
               f"{report.total_ops / 1e9:.3f}G, {pct:.0f}% of the paper's 1.5G budget")
    if report.total_ops_with_aux is not None:
        out.append(f"multiply-adds of a training forward pass with aux heads: "
                   f"{report.total_ops_with_aux:,}")
    out.append(f"Table 1's printed columns sum to {report.paper_total_params:,} params and "
               f"{report.paper_total_ops:,} multiply-adds")
    out.append(f"depth: {report.depth} layers with parameters, {report.depth_with_pooling} with "
               f"pooling (paper: 22 and 27)")
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)


def format_module_cost(classic: ModuleComparison, modules: list[ModuleComparison],
                       naive_net: CostReport, reduced_net: CostReport) -> str:
    """The 1x1-reduction argument in numbers."""
    out = [
        "Section 4: \"1x1 convolutions are used to compute reductions before the expensive 3x3 "
        "and 5x5 convolutions.\"",
        "",
        f"{classic.name}: naive {classic.naive_ops:,} multiply-adds ({_m(classic.naive_ops)}), "
        f"with a 16-filter 1x1 bottleneck {classic.reduced_ops:,} ({_m(classic.reduced_ops)}): "
        f"{classic.naive_ops / classic.reduced_ops:.1f}x fewer; weights {classic.naive_params:,} "
        f"-> {classic.reduced_params:,}",
        "",
        "Each module of Table 1 on its own input, naive (Figure 2a) vs with reductions (2b), "
        "same #1x1, #3x3, #5x5:",
    ]
    head = ("module", "input", "naive ops", "reduced ops", "ratio", "naive params",
            "reduced params", "naive depth out", "reduced depth out")
    lines = [(m.name, "x".join(map(str, m.input)), _m(m.naive_ops), _m(m.reduced_ops),
              f"{m.naive_ops / m.reduced_ops:.1f}x", _k(m.naive_params), _k(m.reduced_params),
              str(m.naive_out), str(m.reduced_out)) for m in modules]
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    out += [fmt.format(*head), *(fmt.format(*line) for line in lines), ""]
    out.append(
        "Whole network with naive modules (pool outputs pile up: \"an inevitable increase in the "
        "number of outputs from stage to stage\"): "
        f"{naive_net.total_ops:,} multiply-adds ({naive_net.total_ops / 1e9:.2f}G) and "
        f"{naive_net.total_params:,} params, against {reduced_net.total_ops:,} "
        f"({reduced_net.total_ops / 1e9:.2f}G) and {reduced_net.total_params:,} with reductions: "
        f"{naive_net.total_ops / reduced_net.total_ops:.1f}x the compute.")
    return "\n".join(out)
