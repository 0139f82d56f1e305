"""kill -9 anywhere: `meshlm train` is killed at chosen points, including while an asynchronous checkpoint is being
written; each re-run of the same command resumes from the last complete checkpoint, and the finished run equals an
uninterrupted one bitwise (parameters and every logged loss).

The kill points are chosen, not hit by luck: MESHLM_KILL_AT=POINT:STEP makes the trainer SIGKILL itself there
(meshlm.training.faults)."""

import dataclasses
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from meshlm.training import metrics as metrics_lib
from meshlm.training.run_dir import load_run
from tests.training.helpers import overrides_of, small_config, text_corpus


def _argv(run_dir, cfg) -> list[str]:
    argv = [sys.executable, "-m", "meshlm.experiments.cli", "train", "--preset", "tiny", "--run-dir", str(run_dir)]
    return argv + ["--no-progress"] + [arg for item in overrides_of(cfg) for arg in ("--set", item)]


def _run(argv, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MESHLM_KILL_AT"}
    if kill_at:
        env["MESHLM_KILL_AT"] = kill_at
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


def _finished(run_dir) -> list[int]:
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def _in_flight(run_dir) -> list[str]:
    folder = run_dir / "checkpoints"
    return [p.name for p in folder.iterdir() if not p.name.isdigit()] if folder.exists() else []


def _curve(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in metrics_lib.PER_START} for r in metrics_lib.read(run_dir)]


@pytest.mark.slow
def test_killed_anywhere_and_rerun_equals_an_uninterrupted_run_bitwise(tmp_path):
    (tmp_path / "corpus").mkdir()
    corpus = text_corpus(tmp_path / "corpus")
    cfg = small_config(corpus, tmp_path, steps=10, **{"model.n_layers": 1, "train.log_every": 1, "train.eval_every": 5})
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    # The uninterrupted run trains alongside, so it prepares its data in a cache of its own (two processes building
    # one TFDS cache at once race on its final rename); the cache folder changes no number.
    own_cache = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(tmp_path / "cache_straight")))
    reference = subprocess.Popen(
        _argv(straight, own_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    argv, resume_from = _argv(killed, cfg), None
    for kill_at in (
        "setup:0",  # config and tokenizer written, nothing trained
        "checkpoint:4",  # step 4's save started and is still being written when the process dies
        "step:7",  # mid-loop, between checkpoints (step 6's asynchronous save may or may not have finished)
        "metrics:9",  # just after a metrics line was appended
    ):
        out = _run(argv, kill_at)
        assert out.returncode == -signal.SIGKILL, (kill_at, out.stderr[-2000:])
        if resume_from is None:
            assert "resumed from" not in out.stdout, kill_at
        else:
            assert f"resumed from step {resume_from} " in out.stdout, (kill_at, out.stdout)
        finished = _finished(killed)
        if kill_at.startswith("checkpoint"):
            assert 4 not in finished and _in_flight(killed), "the kill did not catch the save while it was written"
        resume_from = max(finished, default=None)  # the last complete checkpoint: where the next run must start
    assert resume_from is not None and resume_from >= 6
    final = _run(argv)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"resumed from step {resume_from} " in final.stdout

    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]
    curve = _curve(killed)
    assert [r["step"] for r in curve] == list(range(1, 11))  # no step lost or repeated in the log
    assert curve == _curve(straight)  # losses, gradient norms, learning rates, validation losses: bit for bit
    a, b = load_run(killed), load_run(straight)
    assert a.step == b.step == 10
    assert jax.tree.structure(a.params) == jax.tree.structure(b.params)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
