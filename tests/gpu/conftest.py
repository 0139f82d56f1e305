"""The GPU tests run where JAX sees an NVIDIA GPU (make bench-gpu runs them with JAX_PLATFORMS=cuda); make test
leaves them out by their marker, and a direct run without a GPU skips them with that reason."""

import jax
import pytest


def pytest_collection_modifyitems(config, items):
    if jax.devices()[0].platform == "gpu":
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU visible to JAX (JAX_PLATFORMS=cuda); make bench-gpu runs it")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
