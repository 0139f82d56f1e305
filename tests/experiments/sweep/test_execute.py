"""A sweep run's compile cache is switched on for the run and off again: the process keeps no global setting; the
step a run resumed from is the one the trainer restored."""

import shutil

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

from meshlm.experiments.sweep.execute import execute, persistent_compile_cache
from meshlm.training import config as config_lib
from meshlm.training.trainer import train
from tests.training.helpers import quiet, small_config, text_corpus


@pytest.fixture(autouse=True)
def without_the_sessions_cache():
    """The test session's own cache (tests/conftest.py) is set aside while these tests watch the setting change."""
    session_dir = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", session_dir)
    compilation_cache.reset_cache()


def test_compile_cache_is_on_only_inside_the_run(tmp_path):
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    with persistent_compile_cache(str(tmp_path / "cache")):
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
        assert float(jax.jit(lambda x: x * 3.0)(jnp.float32(2.0))) == 6.0
    assert (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs) == before


def test_no_directory_leaves_the_setting_alone():
    before = jax.config.jax_compilation_cache_dir
    with persistent_compile_cache(""):
        assert jax.config.jax_compilation_cache_dir == before
    assert jax.config.jax_compilation_cache_dir == before


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A 6-step run stopped after step 4 (checkpoints 2 and 4), and its config as the sweep passes it."""
    root = tmp_path_factory.mktemp("stopped")
    (root / "corpus").mkdir()
    cfg = small_config(text_corpus(root / "corpus"), root, steps=6, **{"model.n_layers": 1})
    train(cfg, root / "run", progress=False, log=quiet, stop_after=4)
    return config_lib.to_dict(cfg), root / "run"


@pytest.mark.parametrize(
    "resume, damage_latest, expected",
    [(False, False, 0), (True, False, 4), (True, True, 2)],
    ids=["new", "stopped", "latest-checkpoint-damaged"],
)
def test_the_sweep_records_the_step_the_run_resumed_from(stopped, tmp_path, resume, damage_latest, expected):
    """The step the trainer really restored: with the latest checkpoint unreadable, the one before it."""
    config, run = stopped
    if resume:
        shutil.copytree(run, tmp_path / "run")
    if damage_latest:
        (tmp_path / "run" / "checkpoints" / "4" / "data" / "metadata").write_text('{"processes": [')
    result = execute(config, str(tmp_path / "run"), tokenizer=str(run / "tokenizer.model"))
    assert result.resumed_from_step == expected
    assert [step for step, _ in result.val_curve] == [4 * 4 * 32, 6 * 4 * 32]
