"""The bench's timers: how many calls they make and what they return (no timing assertions)."""

from __future__ import annotations

from ractd_cli.bench import time_calls, time_paired


def _counter():
    calls = []
    return calls, (lambda: calls.append(len(calls)))


def test_time_calls_makes_warmup_plus_repeats_calls_without_a_time_floor():
    calls, fn = _counter()
    out = time_calls(fn, repeats=7, warmup=3, sync=lambda: None, min_seconds=0.0)
    assert len(calls) == 10 and out["calls"] == 7
    assert out["min"] <= out["median"] <= out["max"]


def test_time_calls_keeps_calling_a_fast_function_for_min_seconds_up_to_the_cap():
    calls, fn = _counter()
    out = time_calls(fn, repeats=5, warmup=0, sync=lambda: None, min_seconds=60.0, max_calls=500)
    assert out["calls"] == 500 == len(calls)


def test_time_paired_alternates_and_calls_both_equally_often():
    order = []
    a_ms, b_ms, ratio = time_paired(lambda: order.append("a"), lambda: order.append("b"), repeats=20, warmup=2, sync=lambda: None, min_seconds=0.0)
    assert order == ["a", "b"] * 22
    assert a_ms > 0 and b_ms > 0 and ratio > 0
