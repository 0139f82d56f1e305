"""Model FLOP utilisation: achieved training FLOP/s over the peak of the devices the mesh uses."""

import time

import jax
import jax.numpy as jnp

from meshlm.parallel import hardware


def measure_matmul_peak(n: int = 1024, repeats: int = 5, dtype=jnp.float32) -> float:
    """FLOP/s of the best of a few n x n matmuls on the default device: the CPU's practical peak."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def device_peak(devices, dtype: str = "bfloat16") -> tuple[float, str]:
    """Peak FLOP/s of `devices` together (the mesh's, not every device present) and where the figure came from."""
    devices = list(devices)
    kind = devices[0].device_kind
    chip = hardware.lookup(kind)
    if chip is not None:
        return chip.peak(dtype) * len(devices), f"{len(devices)} x {kind} data sheet ({dtype} dense)"
    # Simulated CPU devices share the same cores, so the machine's peak is measured once, not per device.
    return measure_matmul_peak(), f"{kind}: measured f32 1024x1024 matmul"
