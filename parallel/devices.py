"""The one place that sets how many CPU devices a process simulates, and placement on a single device."""

import os

import jax

from meshlm.model.errors import ConfigError


def cpu_device_count_given() -> bool:
    """Whether XLA_FLAGS or JAX's config already fixes the number of simulated CPU devices."""
    return "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or (
        jax.config.jax_num_cpu_devices > 0
    )


def set_cpu_devices(n: int, flag: str = "the CPU device count") -> None:
    """Simulate n CPU devices in this process; only possible before JAX starts its backends."""
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        raise ConfigError(f"{flag} {n}: JAX is already initialised; set it before any JAX call") from None


def place_on(x, device: jax.Device | None) -> jax.Array:
    """x on one device (the default device if None), unsharded: for probes of a single device's memory."""
    return jax.device_put(x, device)
