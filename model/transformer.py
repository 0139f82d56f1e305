"""The forward pass, token ids to logits: embeddings, a scan over identical blocks, final norm, output head."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model.attention import AttentionMask
from meshlm.model.config import ModelConfig
from meshlm.model.layers import Block, Norm, dropout, param
from meshlm.model.layout import constrain

# Logical axes of the residual stream between blocks: meshlm.parallel maps them to mesh axes.
ACTIVATION_AXES = ("act_batch", "act_seq", "act_embed")

REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Fixed-size cache: keys and values of every layer, the segment of each slot (0 = empty), the next free slot."""

    k_LBSHK: jax.Array
    v_LBSHK: jax.Array
    segment_BS: jax.Array
    index: jax.Array

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, length: int) -> "KVCache":
        shape = (cfg.n_layers, batch, length, cfg.n_heads, cfg.head_dim)
        zeros = jnp.zeros(shape, cfg.dtype)
        return cls(zeros, zeros, jnp.zeros((batch, length), jnp.int32), jnp.zeros((), jnp.int32))


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg, cfg.init_std)
        if cfg.position == "learned":
            self.pos_embed = param(rngs, (cfg.n_ctx, cfg.d_model), ("ctx", "embed"), cfg, cfg.init_std)
        self.blocks = _stacked_blocks(cfg, rngs)
        self.final_norm = Norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.unembed = param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg, cfg.init_std)

    def __call__(
        self,
        tokens_BT: jax.Array,
        positions_BT: jax.Array | None = None,
        segment_ids_BT: jax.Array | None = None,
        cache: KVCache | None = None,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Logits (f32) for every position; with a cache, the tokens continue it from `cache.index`."""
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        B, T = tokens_BT.shape
        if positions_BT is None:
            start = 0 if cache is None else cache.index
            positions_BT = jnp.broadcast_to(start + jnp.arange(T, dtype=jnp.int32), (B, T))
        mask = self._mask(B, T, segment_ids_BT, cache)

        x_BTD = self.embed[...].astype(dtype)[tokens_BT]
        if cfg.position == "learned":
            x_BTD = x_BTD + self.pos_embed[...].astype(dtype)[positions_BT]
        if dropout_key is not None:
            dropout_key, embed_key = jax.random.split(dropout_key)
            x_BTD = dropout(x_BTD, cfg.dropout, embed_key)

        x_BTD, cache = self._run_blocks(x_BTD, positions_BT, mask, cache, dropout_key)

        x_BTD = self.final_norm(x_BTD)
        w_out_DV = self.embed[...].T if cfg.tie_embeddings else self.unembed[...]
        logits_BTV = (x_BTD @ w_out_DV.astype(dtype)).astype(jnp.float32)
        return logits_BTV, cache

    def _mask(self, B: int, T: int, segment_ids_BT, cache: KVCache | None) -> AttentionMask:
        if cache is None:
            return AttentionMask.causal(B, T, segment_ids_BT)
        q_segment_BT = jnp.ones((B, T), jnp.int32) if segment_ids_BT is None else segment_ids_BT.astype(jnp.int32)
        q_index_BT = jnp.broadcast_to(cache.index + jnp.arange(T, dtype=jnp.int32), (B, T))
        S = cache.segment_BS.shape[1]
        kv_segment_BS = jax.lax.dynamic_update_slice_in_dim(cache.segment_BS, q_segment_BT, cache.index, axis=1)
        kv_index_BS = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
        return AttentionMask(q_index_BT, kv_index_BS, q_segment_BT, kv_segment_BS)

    def _run_blocks(self, x_BTD, positions_BT, mask, cache, dropout_key):
        """One compiled block, scanned over the layer axis, so compile time does not grow with depth."""
        graphdef, stacked = nnx.split(self.blocks)
        L, T = self.cfg.n_layers, x_BTD.shape[1]
        layer_keys = None if dropout_key is None else jax.random.split(dropout_key, L)
        kv_LBSHK = None if cache is None else (cache.k_LBSHK, cache.v_LBSHK)
        index = None if cache is None else cache.index

        def body(x_BTD, layer):
            state, key, kv = layer
            x_BTD = constrain(x_BTD, ACTIVATION_AXES)
            x_BTD, kv = nnx.merge(graphdef, state)(x_BTD, positions_BT, mask, kv, index, key)
            return constrain(x_BTD, ACTIVATION_AXES), kv

        if self.cfg.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.cfg.remat], prevent_cse=False)
        x_BTD, kv_LBSHK = jax.lax.scan(body, x_BTD, (stacked, layer_keys, kv_LBSHK))
        if cache is not None:
            cache = KVCache(kv_LBSHK[0], kv_LBSHK[1], mask.kv_segment_BS, cache.index + T)
        return x_BTD, cache


def _stacked_blocks(cfg: ModelConfig, rngs: nnx.Rngs) -> Block:
    """n_layers blocks as one Block whose parameters carry a leading `layers` axis."""
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Block(cfg, nnx.Rngs(0))))
    keys_L = jax.random.split(rngs.params(), cfg.n_layers)
    stacked = jax.vmap(lambda key: nnx.state(Block(cfg, nnx.Rngs(key))))(keys_L)
    blocks = nnx.merge(graphdef, stacked)
    for _, variable in nnx.iter_graph(blocks):
        if isinstance(variable, nnx.Param):
            variable.set_metadata("axes", ("layers",) + variable.get_metadata()["axes"])
    return blocks


def logical_axes(model: Transformer) -> nnx.State:
    """The parameter state with each array replaced by its tuple of logical axis names."""
    return jax.tree.map(
        lambda v: v.get_metadata()["axes"],
        nnx.state(model, nnx.Param),
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
