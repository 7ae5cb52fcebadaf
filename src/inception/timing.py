"""Timing several code paths fairly on a noisy machine: alternated rounds, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from inception.devices import synchronize


def median_rates(paths: dict[str, Callable[[], Any]], batch: int, repeats: int,
                 warmup: int = 1, device: torch.device | None = None) -> dict[str, float]:
    """images/s of each path, alternated, median over `repeats` rounds. On a GPU each call is
    followed by a synchronisation, so that its time is the work's and not the launch's."""
    device = device or torch.device("cpu")

    def call(fn: Callable[[], Any]) -> None:
        fn()
        synchronize(device)

    for fn in paths.values():
        for _ in range(warmup):
            call(fn)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            t = time.perf_counter()
            call(fn)
            times[name].append(time.perf_counter() - t)
    return {k: batch / statistics.median(v) for k, v in times.items()}
