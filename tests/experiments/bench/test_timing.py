"""Contestants' turns: each starts once the process has stopped working."""

import threading
import time

from meshlm.experiments.bench import timing


def test_settle_waits_for_the_process_to_go_idle():
    # A scripted CPU clock that keeps rising for the first five polls, then stays put.
    readings = iter([0.0, 0.01, 0.02, 0.03, 0.04, 0.05] + [0.05] * 100)
    waited = timing.settle(lambda: next(readings))
    assert waited >= 6 * timing.IDLE_WINDOW_S  # five busy windows, then the idle one
    assert waited < timing.SETTLE_LIMIT_S


def test_settle_gives_up_at_its_limit():
    clock = iter(range(1000))  # always busy: without a limit it would wait 1000 windows
    assert 0.2 <= timing.settle(lambda: float(next(clock)), limit_s=0.2) < timing.SETTLE_LIMIT_S


def test_a_turn_does_not_start_while_earlier_work_runs_on_another_thread():
    # The first contestant leaves 0.3 s of work on a thread, as XLA:CPU leaves a step's freeing; the second's
    # turn must start after it.
    done = {}

    def leaves_work():
        def work():
            end = time.perf_counter() + 0.3
            while time.perf_counter() < end:
                pass
            done["at"] = time.perf_counter()

        threading.Thread(target=work).start()

    def records_start():
        done.setdefault("started", time.perf_counter())

    timing.interleaved({"first": leaves_work, "second": records_start}, 1)
    assert done["started"] > done["at"]
