"""Isolated parsing: a failing, hanging or crashing item is a recorded failure; the others still finish."""

from __future__ import annotations

import os
import time

from lyria.data.isolated import isolated_map


def _parse(item):
    kind, value = item
    if kind == "ok":
        return value * 2
    if kind == "raise":
        raise ValueError(f"bad input {value}")
    if kind == "hang":
        time.sleep(60)
    if kind == "crash":
        os._exit(3)
    return None


def test_failures_are_recorded_and_the_rest_completes():
    items = [("ok", 1), ("raise", 2), ("hang", 3), ("ok", 4), ("crash", 5), ("ok", 6)]
    started = time.monotonic()
    outcomes = {o.index: o for o in isolated_map(_parse, items, num_proc=2, timeout_s=2.0)}
    assert time.monotonic() - started < 30
    assert sorted(outcomes) == list(range(len(items)))
    assert [outcomes[i].value for i in (0, 3, 5)] == [2, 8, 12]
    assert all(outcomes[i].ok for i in (0, 3, 5))
    assert not outcomes[1].ok and "ValueError: bad input 2" in outcomes[1].reason
    assert not outcomes[2].ok and "timed out after 2 s" in outcomes[2].reason
    assert not outcomes[4].ok and "exit code 3" in outcomes[4].reason


def test_empty_input_yields_nothing():
    assert list(isolated_map(_parse, [], num_proc=2)) == []
