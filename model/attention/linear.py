"""`linear`: linear attention (Katharopoulos et al. 2020), the example of a non-softmax kernel. Similarity is
phi(q) . phi(k) with the feature map phi = elu + 1, so causal attention is a prefix sum of phi(k) v^T: computed
here chunk by chunk (exact attention inside a chunk, the running sum of earlier chunks across), linear in the
sequence length. Masks other than the plain causal one (segments, decoding against a cache, windows) use the
quadratic form of the same definition. Not softmax attention: registered as not exact, so never compared with
`reference`."""

import jax
import jax.numpy as jnp

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_kernel
from meshlm.model.errors import ConfigError

CHUNK = 64


def feature_map(x: jax.Array) -> jax.Array:
    return jax.nn.elu(x.astype(jnp.float32)) + 1.0


@register_kernel("linear", exact=False, bias=False)
def attend(q_BHTK: jax.Array, k_BGSK: jax.Array, v_BGSK: jax.Array, mask: AttentionMask) -> jax.Array:
    if mask.alibi:
        raise ConfigError("linear attention has no logits for ALiBi's bias; choose another model.position")
    B, H, T, K = q_BHTK.shape
    G = k_BGSK.shape[1]
    fq_BGRTK = feature_map(q_BHTK).reshape(B, G, H // G, T, K)
    fk_BGSK, v_BGSK32 = feature_map(k_BGSK), v_BGSK.astype(jnp.float32)
    if mask.plain_causal and k_BGSK.shape[2] == T:
        out_BGRTK = _chunked_causal(fq_BGRTK, fk_BGSK, v_BGSK32)
    else:
        weights_BGRTS = jnp.einsum("bgrtk,bgsk->bgrts", fq_BGRTK, fk_BGSK) * mask.dense_BTS()[:, None, None]
        out_BGRTK = jnp.einsum("bgrts,bgsk->bgrtk", weights_BGRTS, v_BGSK32) / weights_BGRTS.sum(-1)[..., None]
    return out_BGRTK.reshape(B, H, T, -1).astype(v_BGSK.dtype)


def _chunked_causal(fq_BGRTK: jax.Array, fk_BGTK: jax.Array, v_BGTK: jax.Array) -> jax.Array:
    B, G, R, T, K = fq_BGRTK.shape
    C = min(CHUNK, T)
    pad = -T % C
    # Padded keys come after every real query, so the causal rule already hides them.
    fq_BGRNCK = jnp.pad(fq_BGRTK, [(0, 0)] * 3 + [(0, pad), (0, 0)]).reshape(B, G, R, -1, C, K)
    fk_BGNCK = jnp.pad(fk_BGTK, [(0, 0)] * 2 + [(0, pad), (0, 0)]).reshape(B, G, -1, C, K)
    v_BGNCV = jnp.pad(v_BGTK, [(0, 0)] * 2 + [(0, pad), (0, 0)]).reshape(B, G, -1, C, v_BGTK.shape[-1])
    # The sums of phi(k) v^T and phi(k) over all earlier chunks (an exclusive prefix sum over chunks).
    state_BGNKV = jnp.cumsum(jnp.einsum("bgnck,bgncv->bgnkv", fk_BGNCK, v_BGNCV), axis=2)
    state_BGNKV = jnp.pad(state_BGNKV, [(0, 0), (0, 0), (1, 0), (0, 0), (0, 0)])[:, :, :-1]
    norm_BGNK = jnp.pad(jnp.cumsum(fk_BGNCK.sum(3), axis=2), [(0, 0), (0, 0), (1, 0), (0, 0)])[:, :, :-1]
    causal_CC = jnp.tril(jnp.ones((C, C), bool))
    within_BGRNCC = jnp.einsum("bgrnck,bgndk->bgrncd", fq_BGRNCK, fk_BGNCK) * causal_CC
    numerator_BGRNCV = jnp.einsum("bgrncd,bgndv->bgrncv", within_BGRNCC, v_BGNCV) + jnp.einsum(
        "bgrnck,bgnkv->bgrncv", fq_BGRNCK, state_BGNKV
    )
    denominator_BGRNC = within_BGRNCC.sum(-1) + jnp.einsum("bgrnck,bgnk->bgrnc", fq_BGRNCK, norm_BGNK)
    out_BGRNCV = numerator_BGRNCV / denominator_BGRNC[..., None]
    return out_BGRNCV.reshape(B, G, R, -1, v_BGTK.shape[-1])[:, :, :, :T]
