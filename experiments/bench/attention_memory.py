"""`meshlm bench attention-memory`: XLA's compiled peak memory of attention kernels at one sequence length.

Nothing runs: each kernel's forward and backward pass is compiled for one device and XLA's memory analysis read,
so the figures do not depend on load from other processes. The claim checked is blockwise attention's: memory
linear in the sequence length, at most a quarter of `reference`'s at T = 8192 on CPU.
"""

import jax
import jax.numpy as jnp

from meshlm.model import attention
from meshlm.model.attention import AttentionMask


def peak_bytes(kernel: str, seq_len: int, batch: int = 1, heads: int = 4, head_dim: int = 64) -> int:
    """Arguments + outputs + temporaries of one f32 causal forward-and-backward pass of the kernel."""
    shape = jax.ShapeDtypeStruct((batch, heads, seq_len, head_dim), jnp.float32)
    attend = attention.kernel(kernel)

    def loss(q_BHTK, k_BHTK, v_BHTK):
        return jnp.sum(attend(q_BHTK, k_BHTK, v_BHTK, AttentionMask.causal(batch, seq_len)))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(shape, shape, shape).compile()
    stats = compiled.memory_analysis()
    return stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes


def attention_memory(seq_len: int = 8192, kernel: str = "blockwise", against: str = "reference") -> dict:
    """Both figures and their ratio: what the issue asks of blockwise attention (ratio <= 0.25 at T = 8192)."""
    ours, theirs = peak_bytes(kernel, seq_len), peak_bytes(against, seq_len)
    return dict(
        seq_len=seq_len, kernel=kernel, kernel_bytes=ours, against=against, against_bytes=theirs, ratio=ours / theirs
    )


def text(r: dict) -> str:
    return (
        f"meshlm bench attention-memory: T={r['seq_len']}, batch 1, 4 heads of 64, f32 forward+backward, "
        f"{jax.devices()[0].device_kind}\n"
        f"  {r['kernel']:<12} {r['kernel_bytes'] / 2**20:10.1f} MiB\n"
        f"  {r['against']:<12} {r['against_bytes'] / 2**20:10.1f} MiB\n"
        f"  ratio        {r['ratio']:10.3f}"
    )
