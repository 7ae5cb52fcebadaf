"""`inception.timing`: alternated rounds, medians, and priming against the previous path's
spinning threads, on a fake clock (no real timing)."""

import pytest

from inception import timing


@pytest.fixture
def clock(monkeypatch):
    """A fake `perf_counter` and two paths that run 10x slower when the path before them was
    the other one, as a runtime does while another runtime's threads still spin."""
    state = {"now": 0.0, "last": None}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: state["now"])

    def path(name: str):
        def call() -> None:
            state["now"] += 0.1 if state["last"] == name else 1.0
            state["last"] = name
        return call
    return {"a": path("a"), "b": path("b")}


def test_unprimed_rounds_time_each_path_right_after_the_other(clock):
    assert timing.median_rates(clock, batch=4, repeats=3) == {"a": 4.0, "b": 4.0}


def test_primed_rounds_time_each_path_after_a_call_of_its_own(clock):
    cold: dict[str, float] = {}
    rates = timing.median_rates(clock, batch=4, repeats=3, primed=True, cold=cold)
    assert rates == pytest.approx({"a": 40.0, "b": 40.0})
    assert cold == pytest.approx({"a": 4.0, "b": 4.0})  # the priming calls, after the other
