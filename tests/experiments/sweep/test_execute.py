"""A sweep run's compile cache is switched on for the run and off again: the process keeps no global setting."""

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

from meshlm.experiments.sweep.execute import persistent_compile_cache


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
