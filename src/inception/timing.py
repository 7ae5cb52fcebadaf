"""Timing several code paths fairly on a noisy machine: alternated rounds, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from inception.devices import synchronize


def median_rates(paths: dict[str, Callable[[], Any]], batch: int, repeats: int,
                 warmup: int = 1, device: torch.device | None = None,
                 primed: bool = False, cold: dict[str, float] | None = None
                 ) -> dict[str, float]:
    """images/s of each path, alternated, median over `repeats` rounds. On a GPU each call is
    followed by a synchronisation, so that its time is the work's and not the launch's.

    `primed`: each timed call follows an untimed call of the same path. Paths from different
    runtimes need it: a runtime's worker threads keep spinning for a while after its call
    returns (ONNX Runtime's, OpenMP's) and take a small CPU's cores from the next path's call
    (`benchmarks/lrn_floor.py` measures both calls). With `cold` (a dict, and `primed`), the
    rates of the priming calls, each right after the previous path's call, go into it."""
    device = device or torch.device("cpu")

    def call(fn: Callable[[], Any]) -> None:
        fn()
        synchronize(device)

    for fn in paths.values():
        for _ in range(warmup):
            call(fn)
    times: dict[str, list[float]] = {k: [] for k in paths}
    first: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            if primed:
                t = time.perf_counter()
                call(fn)
                first[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            call(fn)
            times[name].append(time.perf_counter() - t)
    if primed and cold is not None:
        cold.update({k: batch / statistics.median(v) for k, v in first.items()})
    return {k: batch / statistics.median(v) for k, v in times.items()}
