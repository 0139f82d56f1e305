"""Eight simulated CPU devices for every test, set before jax is imported anywhere, quick XLA compiles, and one
on-disk compilation cache per test session."""

import os
import shutil
import tempfile

from tests.xla import QUICK_COMPILES, USERS_COMPILER_OPTIONS

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8 {QUICK_COMPILES}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite compiles the same small programs many times over: in both xdist workers and in every `meshlm train`,
# multi-host and sweep process the tests start (which inherit these variables). A cache shared by all of them turns
# each repeat into a read. Programs are keyed by their HLO, compile options and jax version, so no result changes.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="meshlm-tests-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

from meshlm.parallel import sharding  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_unconfigure(config):
    # Only the process that made the cache removes it: under xdist, the controller, after every worker is done.
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def users_compiler(monkeypatch) -> dict:
    """Train steps compiled as users compile them (USERS_COMPILER_OPTIONS); the options, for a test's own jax.jit."""
    monkeypatch.setattr(sharding, "CPU_COMPILER_OPTIONS", {**sharding.CPU_COMPILER_OPTIONS, **USERS_COMPILER_OPTIONS})
    return USERS_COMPILER_OPTIONS


@pytest.fixture
def no_compilation_cache():
    """For tests that must watch XLA compile (its warnings, its time): nothing is read from or written to the cache."""
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    yield
    jax.config.update("jax_enable_compilation_cache", enabled)
