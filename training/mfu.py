"""Model FLOP utilisation: achieved training FLOP/s over the device's peak."""

import time

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets.
PEAK_FLOPS = {
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,  # v5e
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,  # v6e (Trillium)
    "tpu v6e": 918e12,
    "a100": 312e12,
    "h100": 989e12,
    "h200": 989e12,
}


def table_peak(device_kind: str) -> float | None:
    kind = device_kind.lower()
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):
        if name in kind:
            return PEAK_FLOPS[name]
    return None


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


def device_peak() -> tuple[float, str]:
    """Peak FLOP/s of all devices together and where the figure came from."""
    kind = jax.devices()[0].device_kind
    peak = table_peak(kind)
    if peak is not None:
        return peak * jax.device_count(), f"{jax.device_count()} x {kind} data sheet (bf16 dense)"
    # Simulated CPU devices share the same cores, so the machine's peak is measured once, not per device.
    return measure_matmul_peak(), f"{kind}: measured f32 1024x1024 matmul"
