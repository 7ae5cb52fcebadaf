"""Table 1 of *Going Deeper with Convolutions*, held as data.

One `Row` per line of the paper's table, with the paper's column names. `inception.model` builds
GoogLeNet from these rows with one loop, and `inception.cost` recomputes every figure from the
built model and sets it beside the paper's printed `params` and `ops` columns.

Units of the printed figures. The paper's "K" in the params column is 1024, not 1000: conv2 has
64·64 + 64·9·192 = 114,688 weights, printed "112K" (= 112 × 1024 exactly), and the linear layer has
1024·1000 = 1,024,000 weights, printed "1000K" (= 1000 × 1024 exactly). Biases are not counted.
The "M" of the ops column is 10^6: conv2 costs 56·56·114,688 = 359.7M multiply-adds, printed "360M".
`paper_params()` and `paper_ops()` convert the printed strings with these units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RowType = Literal[
    "convolution", "max pool", "inception", "avg pool", "dropout", "linear", "softmax"
]


@dataclass(frozen=True)
class Row:
    """One line of Table 1, columns as the paper names them.

    `output` is the paper's "output size" column as (height, width, depth) for a 224x224 input.
    The filter columns are `None` where the paper leaves the cell empty.
    """

    name: str
    type: RowType
    patch: str | None  # "patch size/stride", e.g. "7x7/2"
    output: tuple[int, int, int]
    depth: int
    n1x1: int | None = None
    n3x3_reduce: int | None = None
    n3x3: int | None = None
    n5x5_reduce: int | None = None
    n5x5: int | None = None
    pool_proj: int | None = None
    params: str | None = None  # as printed, e.g. "159K"
    ops: str | None = None  # as printed, e.g. "128M"

    @property
    def stride(self) -> int:
        """The stride of the "patch size/stride" column (1 where the column is empty)."""
        return int(self.patch.split("/")[1]) if self.patch else 1

    @property
    def kernel(self) -> int:
        """The patch size of the "patch size/stride" column, e.g. 7 for "7x7/2"."""
        if self.patch is None:
            raise ValueError(f"row {self.name!r} has no patch size")
        return int(self.patch.split("x")[0])


def _inception(name: str, hw: int, depth: int, *filters: int, params: str, ops: str) -> Row:
    n1, r3, n3, r5, n5, pp = filters
    return Row(name, "inception", None, (hw, hw, depth), 2, n1, r3, n3, r5, n5, pp, params, ops)


TABLE1: tuple[Row, ...] = (
    Row("conv1", "convolution", "7x7/2", (112, 112, 64), 1, params="2.7K", ops="34M"),
    Row("pool1", "max pool", "3x3/2", (56, 56, 64), 0),
    Row("conv2", "convolution", "3x3/1", (56, 56, 192), 2, n3x3_reduce=64, n3x3=192,
        params="112K", ops="360M"),
    Row("pool2", "max pool", "3x3/2", (28, 28, 192), 0),
    _inception("3a", 28, 256, 64, 96, 128, 16, 32, 32, params="159K", ops="128M"),
    _inception("3b", 28, 480, 128, 128, 192, 32, 96, 64, params="380K", ops="304M"),
    Row("pool3", "max pool", "3x3/2", (14, 14, 480), 0),
    _inception("4a", 14, 512, 192, 96, 208, 16, 48, 64, params="364K", ops="73M"),
    _inception("4b", 14, 512, 160, 112, 224, 24, 64, 64, params="437K", ops="88M"),
    _inception("4c", 14, 512, 128, 128, 256, 24, 64, 64, params="463K", ops="100M"),
    _inception("4d", 14, 528, 112, 144, 288, 32, 64, 64, params="580K", ops="119M"),
    _inception("4e", 14, 832, 256, 160, 320, 32, 128, 128, params="840K", ops="170M"),
    Row("pool4", "max pool", "3x3/2", (7, 7, 832), 0),
    _inception("5a", 7, 832, 256, 160, 320, 32, 128, 128, params="1072K", ops="54M"),
    _inception("5b", 7, 1024, 384, 192, 384, 48, 128, 128, params="1388K", ops="71M"),
    Row("avgpool", "avg pool", "7x7/1", (1, 1, 1024), 0),
    Row("dropout", "dropout", None, (1, 1, 1024), 0),
    Row("linear", "linear", None, (1, 1, 1000), 1, params="1000K", ops="1M"),
    Row("softmax", "softmax", None, (1, 1, 1000), 0),
)

ROW_NAMES: tuple[str, ...] = tuple(r.name for r in TABLE1)

#: Section 5: "These classifiers take the form of smaller convolutional networks put on top of the
#: output of the Inception (4a) and (4d) modules."
AUX_TAPS: tuple[str, ...] = ("4a", "4d")

#: Section 1: "the models were designed to keep a computational budget of 1.5 billion
#: multiply-adds at inference time".
PAPER_BUDGET_MACS = 1_500_000_000

#: Section 5: "The network is 22 layers deep when counting only layers with parameters (or 27
#: layers if we also count pooling)."
PAPER_DEPTH, PAPER_DEPTH_WITH_POOLING = 22, 27

_UNITS = {"K": 1024, "M": 1_000_000}


def _parse(figure: str, unit: str) -> tuple[float, float]:
    """A printed figure as (value, half a unit of its last printed digit), in absolute units."""
    if not figure.endswith(unit):
        raise ValueError(f"expected a figure in {unit}, got {figure!r}")
    digits = figure[:-1]
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    scale = _UNITS[unit]
    return float(digits) * scale, 0.5 * 10.0**-decimals * scale


def paper_params(row: Row) -> float | None:
    """The row's printed params as a count of weights (K = 1024), or None for an empty cell."""
    return None if row.params is None else _parse(row.params, "K")[0]


def paper_ops(row: Row) -> float | None:
    """The row's printed ops as multiply-adds (M = 10^6), or None for an empty cell."""
    return None if row.ops is None else _parse(row.ops, "M")[0]


def disagrees(printed: str, unit: str, computed: float, tolerance: float = 0.02) -> bool:
    """True when `computed` is further from the printed figure than `tolerance` (relative).

    A figure printed as "1M" only claims a value in [0.5M, 1.5M): a disagreement smaller than the
    printing's own rounding (half a unit of its last digit) is not counted as a slip.
    """
    value, rounding = _parse(printed, unit)
    return abs(computed - value) > max(tolerance * value, rounding)
