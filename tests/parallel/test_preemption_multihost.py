"""Preemption, two processes on localhost: a signal to one of them (SIGTERM inside the first call's compilation,
SIGINT between checkpoints, SIGTERM while an asynchronous save is written and during validation) stops both after
the same step, which JAX's preemption service agrees on; both save it and exit with PREEMPTED_EXIT_CODE, and the
re-runs end bitwise where an uninterrupted two-process run ends.

The agreed step is the fastest process's call count when the notice arrives, plus one, so it is not known in
advance: the test reads it from both processes' messages and checks that they name the same step."""

import re

import pytest

from meshlm.training.run_dir import load_run
from tests.parallel.test_multihost import _corpus, _train_two_processes
from tests.training.test_kill_anywhere import _curve, _finished, _in_flight
from tests.training.test_preemption import assert_same_params

MESH = "data=2,fsdp=2,tensor=2"
STEPS = 16
MORE = ("train.eval_every=3",)  # and SETTINGS' checkpoint every 2 steps, a metrics record every step


def _after(step: int, every: int) -> int:
    return (step // every + 1) * every


def _stopped_at(results) -> int:
    found = [re.search(r"stopped after step (\d+),", r.stderr) for r in results]
    assert all(found), [r.stderr[-2000:] for r in results]
    steps = {int(m.group(1)) for m in found}
    assert len(steps) == 1, steps  # one step for both processes
    return steps.pop()


@pytest.mark.slow
def test_a_signal_to_either_process_stops_both_at_one_step_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    data = _corpus(tmp_path)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _train_two_processes(straight, data, MESH, STEPS, MORE)

    stop = 0
    for process, point in (
        (0, lambda s: f"compile:{s + 1}"),
        (1, lambda s: f"step:{s + 1}:INT"),
        (0, lambda s: f"checkpoint:{_after(s, 2)}"),
        (1, lambda s: f"eval:{_after(s, 3)}"),
    ):
        signal_at = ["", ""]
        signal_at[process] = point(stop)
        results = _train_two_processes(stopped, data, MESH, STEPS, MORE, signal_at=signal_at, returncode=42)
        signalled = int(signal_at[process].split(":")[1])
        previous, stop = stop, _stopped_at(results)
        assert signalled <= stop < STEPS, (signal_at, stop)
        assert (
            ("resumed from" not in results[0].stdout)
            if not previous
            else (f"resumed from step {previous}" in results[0].stdout)
        )
        finished = _finished(stopped)
        assert max(finished) == stop and not _in_flight(stopped), (signal_at, finished)

    final = _train_two_processes(stopped, data, MESH, STEPS, MORE)
    assert f"resumed from step {stop}" in final[0].stdout
    values = _curve(stopped)
    assert [r["step"] for r in values] == list(range(1, STEPS + 1))
    assert values == _curve(straight)
    a, b = load_run(stopped), load_run(straight)
    assert a.step == b.step == STEPS
    assert_same_params(a.params, b.params)
