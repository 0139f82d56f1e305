"""The in-run memory bandwidth: how fast this device reads a large array right now, probed between the contestants
of a memory-bound benchmark (decode), as the matmul probe is between training steps."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

CPU_BYTES = 256 * 2**20  # well past the last-level cache of a CPU
ACCELERATOR_BYTES = 2 * 2**30  # past an H100's 50 MB of L2 by 40x; a sum over it takes ~1 ms at 3 TB/s


def read_probe(device: jax.Device | None = None, n_bytes: int | None = None) -> tuple[Callable[[], object], int]:
    """(a call that sums an f32 array of n_bytes, the bytes it reads). A reduction reads every byte once and
    writes one number, so bytes / seconds is the achieved read bandwidth."""
    device = device or jax.devices()[0]
    n_bytes = n_bytes or (CPU_BYTES if device.platform == "cpu" else ACCELERATOR_BYTES)
    x_N = jax.device_put(jnp.ones((n_bytes // 4,), jnp.float32), device)
    total = jax.jit(jnp.sum)
    total(x_N).block_until_ready()
    return lambda: total(x_N).block_until_ready(), x_N.nbytes
