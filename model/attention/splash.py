"""`splash`: the TPU splash-attention Pallas kernel (jax.experimental.pallas.ops.tpu). Serves causal training with
packed segments at lengths that are multiples of 128; other masks (decoding, windows, ALiBi) go to `fused`. Off
TPU the kernel runs in Pallas interpret mode, which is how the shared suite checks it on CPU."""

import functools

import jax
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

from meshlm.model.attention import fused
from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_kernel

BLOCKS = (512, 256, 128)  # the largest that divides the sequence is used


@register_kernel("splash", platforms=("tpu",))
def attend(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array:
    B, H, T, K = q_BHTK.shape
    G = k_BGSK.shape[1]
    if not mask.segments_only or T % BLOCKS[-1]:
        return fused.attend(q_BHTK, k_BGSK, v_BGSK, mask)
    kernel = _kernel(H // G, T, interpret=jax.default_backend() != "tpu")
    q_BGRTK = q_BHTK.reshape(B, G, H // G, T, K) * K**-0.5  # the kernel does not scale
    segments = splash.SegmentIds(q=mask.q_segment_BT, kv=mask.kv_segment_BS)
    # One multi-query kernel per (row, key/value head): grouped-query attention without repeating keys.
    per_group = jax.vmap(kernel, in_axes=(0, 0, 0, None))
    per_row = jax.vmap(per_group, in_axes=(0, 0, 0, splash.SegmentIds(q=0, kv=0)))
    return per_row(q_BGRTK, k_BGSK, v_BGSK, segments).reshape(B, H, T, -1)


@functools.cache
def _kernel(query_heads: int, T: int, interpret: bool):
    block = next(b for b in BLOCKS if T % b == 0)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = splash_mask.MultiHeadMask([splash_mask.CausalMask((T, T)) for _ in range(query_heads)])
    # The kernel is cached across traces, so the mask tables it builds must be concrete arrays, never tracers of
    # the jit that happened to build it first.
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)
