"""The machine's practical rates, probed between a benchmark's contestants: the matmul rate (the peak that CPU MFU
is read against) and the memory read bandwidth (for memory-bound decode)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from meshlm.parallel.devices import place_on

CPU_BYTES = 256 * 2**20  # well past the last-level cache of a CPU
ACCELERATOR_BYTES = 2 * 2**30  # past an H100's 50 MB of L2 by 40x; a sum over it takes ~1 ms at 3 TB/s


def matmul_probe(n: int = 1024, count: int = 4) -> tuple[Callable[[], object], float]:
    """(a call of `count` n x n f32 matmuls, its FLOPs): the machine's practical peak, probed between steps."""
    a_NN = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a_NN).block_until_ready()
    return lambda: [matmul(a_NN).block_until_ready() for _ in range(count)], 2.0 * n**3 * count


def read_probe(device: jax.Device | None = None, n_bytes: int | None = None) -> tuple[Callable[[], object], int]:
    """(a call that sums an f32 array of n_bytes, the bytes it reads). A reduction reads every byte once and
    writes one number, so bytes / seconds is the achieved read bandwidth."""
    device = device or jax.devices()[0]
    n_bytes = n_bytes or (CPU_BYTES if device.platform == "cpu" else ACCELERATOR_BYTES)
    x_N = place_on(jnp.ones((n_bytes // 4,), jnp.float32), device)
    total = jax.jit(jnp.sum)
    total(x_N).block_until_ready()
    return lambda: total(x_N).block_until_ready(), x_N.nbytes
