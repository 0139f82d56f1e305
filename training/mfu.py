"""Model FLOP utilisation: achieved training FLOP/s over the peak of the devices the mesh uses."""

import functools
import time

import jax
import jax.numpy as jnp

from meshlm.parallel import hardware


def measure_matmul_peak(
    n: int = 1024, min_repeats: int = 5, min_seconds: float = 0.3, dtype=jnp.float32, clock=time.perf_counter
) -> float:
    """FLOP/s of the fastest n x n matmul over at least `min_repeats` runs and `min_seconds`: the CPU's practical
    peak. The time floor makes one slow moment of the machine unable to spoil every run: five runs (70 ms) once
    measured about half the peak, and the training log showed an MFU above 100 %."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best, runs, began = float("inf"), 0, clock()
    while runs < min_repeats or clock() - began < min_seconds:
        start = clock()
        matmul(a, a).block_until_ready()
        best = min(best, clock() - start)
        runs += 1
    return 2 * n**3 / best


def device_peak(devices, dtype: str = "bfloat16") -> tuple[float, str]:
    """Peak FLOP/s of `devices` together (the mesh's, not every device present) and where the figure came from."""
    devices = list(devices)
    kind = devices[0].device_kind
    chip = hardware.lookup(kind)
    if chip is not None:
        return chip.peak(dtype) * len(devices), f"{len(devices)} x {kind} data sheet ({dtype} dense)"
    # Simulated CPU devices share the same cores, so the machine's peak is measured once, not per device.
    return _machine_peak(), f"{kind}: measured f32 1024x1024 matmul"


@functools.cache
def _machine_peak() -> float:
    """Measured once per process (a third of a second of both cores): every run a study or a test session trains in
    one process then divides by the same peak, and only the first pays for it."""
    return measure_matmul_peak()
