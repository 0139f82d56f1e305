"""Preemption, one process: `meshlm train` sent SIGTERM during the first call's compilation, between checkpoints,
while an asynchronous save is written and during validation (then SIGINT during the save it stops for) saves the
step it stops at and exits with PREEMPTED_EXIT_CODE; each re-run of the same command resumes from that step, and
the finished run equals an uninterrupted one bitwise (parameters and every logged value).

The signals are sent at chosen points, not timed: MESHLM_SIGNAL_AT=POINT:STEP[:INT] makes the trainer signal itself
there (meshlm.training.faults). tests/parallel/test_preemption_multihost.py does the same with two processes."""

import dataclasses
import os
import signal
import subprocess

import jax
import numpy as np
import pytest

from meshlm.training.errors import PREEMPTED_EXIT_CODE, Preempted
from meshlm.training.run_dir import load_run
from meshlm.training.trainer import Trainer
from tests.training.helpers import quiet, small_config, text_corpus
from tests.training.test_kill_anywhere import _argv, _curve, _finished, _in_flight


def _run(argv, signal_at: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MESHLM_KILL_AT", "MESHLM_SIGNAL_AT")}
    env["MESHLM_SIGNAL_AT"] = signal_at
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)


def assert_same_params(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_signalled_anywhere_saves_exits_42_and_the_rerun_equals_an_uninterrupted_run_bitwise(tmp_path):
    (tmp_path / "corpus").mkdir()
    corpus = text_corpus(tmp_path / "corpus")
    # Checkpoints every 2 steps, validation every 4, a metrics record every step.
    cfg = small_config(corpus, tmp_path, steps=10, **{"model.n_layers": 1, "train.log_every": 1})
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    own_cache = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(tmp_path / "cache_straight")))
    reference = subprocess.Popen(
        _argv(straight, own_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    argv, resume_from = _argv(stopped, cfg), None
    for signal_at, stop, saved in (
        ("compile:1", 1, {1}),  # inside the compilation of the first call: step 1 is still trained, then saved
        ("step:3", 3, {2, 3}),  # between checkpoints: step 3 is saved although only even steps are
        ("checkpoint:4", 5, {4, 5}),  # while step 4's asynchronous save is written: it completes, then step 5's
        ("eval:8,checkpoint:9:INT", 9, {8, 9}),  # during validation; then SIGINT during the save of step 9
    ):
        out = _run(argv, signal_at)
        assert out.returncode == PREEMPTED_EXIT_CODE, (signal_at, out.stderr[-3000:])
        assert f"stopped after step {stop}, saved in {stopped / 'checkpoints'}" in out.stderr, signal_at
        assert (
            ("resumed from" not in out.stdout)
            if resume_from is None
            else f"resumed from step {resume_from} " in out.stdout
        )
        finished = _finished(stopped)
        assert max(finished) == stop and saved <= set(finished) and not _in_flight(stopped), (signal_at, finished)
        assert f"step {stop}/10 " in out.stdout and f"step {stop + 1}/10 " not in out.stdout  # nothing past the stop
        resume_from = stop
    assert "SIGINT again" in out.stderr  # the second signal was seen, and changed nothing
    assert 8 in _finished(stopped)

    final = _run(argv)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"resumed from step {resume_from} " in final.stdout

    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-3000:]
    values = _curve(stopped)
    assert [r["step"] for r in values] == list(range(1, 11))  # no step lost or repeated in the log
    assert values == _curve(straight)  # losses, gradient norms, learning rates, validation losses: bit for bit
    a, b = load_run(stopped), load_run(straight)
    assert a.step == b.step == 10
    assert_same_params(a.params, b.params)


def test_a_signal_during_a_hook_stops_the_trainer_after_the_next_step_saved_and_restores_the_handlers(tmp_path):
    (tmp_path / "corpus").mkdir()
    cfg = small_config(text_corpus(tmp_path / "corpus"), tmp_path, steps=8, **{"model.n_layers": 1})
    trainer = Trainer(cfg, tmp_path / "run", log=quiet)
    trainer.add_hook(4, lambda step, state: os.kill(os.getpid(), signal.SIGINT) if step == 4 else None)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Preempted, match=r"^SIGINT: stopped after step 5, saved in .*exit code 42\)$"):
        trainer.run(progress=False)
    assert signal.getsignal(signal.SIGINT) is before
    assert _finished(tmp_path / "run") == [2, 4, 5] and not _in_flight(tmp_path / "run")
