"""The GPU tests run where JAX sees an NVIDIA GPU (make bench-gpu runs them with JAX_PLATFORMS=cuda); elsewhere
they are skipped with that reason, never failed."""

import jax
import pytest


def pytest_collection_modifyitems(config, items):
    if jax.devices()[0].platform == "gpu":
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU visible to JAX (JAX_PLATFORMS=cuda); make bench-gpu runs it")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
