"""`inception.experiments.structure`: the depth trend of the branches experiment."""

import math

from inception.experiments.branches import BRANCHES, BranchResult
from inception.experiments.structure import loss_share_trend


def _result(wide_loss: list[float], wide_channels: list[float]) -> BranchResult:
    """Modules m1.. whose 3x3 and 5x5 branches cost `wide_loss` each (the 1x1 and pool 1.0 each)
    and hold `wide_channels` of the channels each."""
    modules = [f"m{i}" for i in range(len(wide_loss))]
    loss = {m: {"1x1": 1.0, "3x3": w, "5x5": w, "pool": 1.0} for m, w in zip(modules, wide_loss,
                                                                               strict=True)}
    channels = {m: {"1x1": 0.5 - c, "3x3": c, "5x5": c, "pool": 0.5 - c}
                for m, c in zip(modules, wide_channels, strict=True)}
    empty = {m: dict.fromkeys(BRANCHES, 0.0) for m in modules}
    return BranchResult(modules, list(BRANCHES), {"loss": 0.3, "top1": 90.0}, empty, loss,
                        empty, channels)


def test_the_trend_is_of_importance_per_channel_not_of_the_designs_channel_share():
    # Wide branches costing more with depth at a constant share of channels: rho 1.
    rising = _result([1.0, 2.0, 3.0, 4.0], [0.25, 0.25, 0.25, 0.25])
    rho, ratios = loss_share_trend(rising)
    assert ratios[0] == (2 / 4) / 0.5
    assert rho == 1.0
    # The same losses where Table 1's design raises their channels faster: per channel they
    # matter less with depth (share of loss 0.5, 0.67, 0.75, 0.8 over 0.3, 0.5, 0.7, 0.9).
    design = _result([1.0, 2.0, 3.0, 4.0], [0.15, 0.25, 0.35, 0.45])
    assert loss_share_trend(design)[0] == -1.0


def test_too_few_modules_with_a_cost_give_no_trend():
    rho, ratios = loss_share_trend(_result([1.0, 2.0], [0.2, 0.2]))
    assert math.isnan(rho) and len(ratios) == 2
