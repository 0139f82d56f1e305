"""training/mfu.py: the CPU peak is the fastest matmul over a minimum number of runs and a minimum time."""

import pytest

from meshlm.training import mfu


def test_matmul_peak_is_the_fastest_run_and_keeps_timing_until_the_time_floor():
    # began, then (start, end) per run; after the two required runs the loop checks the clock (0.6 < 1.0: go on),
    # runs once more, checks again (1.0: stop). The last value must be left unread.
    ticks = iter([0.0, 0.0, 0.5, 0.5, 0.6, 0.6, 0.6, 0.8, 1.0, 99.0])
    peak = mfu.measure_matmul_peak(n=8, min_repeats=2, min_seconds=1.0, clock=lambda: next(ticks))
    assert peak == pytest.approx(2 * 8**3 / 0.1)
    assert next(ticks) == 99.0
