"""The forward pass, token ids to logits: embeddings, a scan over identical blocks, final norm, output head."""

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model import attention, layout
from meshlm.model.attention import AttentionMask, KVCache
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.model.layers import Block, Norm, dropout
from meshlm.model.layout import constrain
from meshlm.model.param import param

# Logical axes of the residual stream between blocks: meshlm.parallel maps them to mesh axes.
ACTIVATION_AXES = ("act_batch", "act_seq", "act_embed")

REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        attention.check(cfg.validate())
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
        return_hidden: bool = False,
        layer_params: list[nnx.State] | None = None,
        branch_ids_BT: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Logits (f32) for every position; with a cache, the tokens continue it from `cache.index`. With
        return_hidden, the normed hidden states [B, T, D] instead, for `head` to read at chosen positions.
        `layer_params` (from `split_layers`) runs the layers unrolled on parameters already taken apart.
        `branch_ids_BT` (with positions and segment ids) runs continuations that share a context in one row
        (`AttentionMask.shared_prefix`)."""
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        B, T = tokens_BT.shape
        if branch_ids_BT is not None and (positions_BT is None or segment_ids_BT is None or cache is not None):
            raise ConfigError("branch_ids_BT needs explicit positions and segment ids, and no cache")
        if positions_BT is None:
            start = 0 if cache is None else cache.index
            positions_BT = jnp.broadcast_to(start + jnp.arange(T, dtype=jnp.int32), (B, T))
        if branch_ids_BT is None:
            mask = self._mask(B, T, segment_ids_BT, cache)
        else:
            mask = AttentionMask.shared_prefix(positions_BT, segment_ids_BT, branch_ids_BT)
        if cache is None and layout.reorders(T):
            # Context parallelism: each device holds a chunk from the start of every sequence and one from its end,
            # so causal attention costs them all the same; positions and the mask's indices travel with the tokens.
            # Decoding keeps time order (each new token's keys go to the next cache slot).
            tokens_BT, positions_BT = layout.to_context_order(tokens_BT), layout.to_context_order(positions_BT)
            mask = mask.in_order(layout.to_context_order)

        # The lookups read tables whose embedding dimension FSDP splits, while the rows they return are split by
        # batch over the same mesh axis; gathered whole first (as FSDP gathers every weight before use), the
        # partitioner need not replicate the looked-up rows to move them (tests/parallel/test_no_involuntary_remat).
        x_BTD = constrain(self.embed[...], ("vocab", None)).astype(dtype)[tokens_BT]
        if cfg.position == "learned":
            x_BTD = x_BTD + constrain(self.pos_embed[...], (None, None)).astype(dtype)[positions_BT]
        if dropout_key is not None:
            dropout_key, embed_key = jax.random.split(dropout_key)
            x_BTD = dropout(x_BTD, cfg.dropout, embed_key)

        x_BTD, cache = self._run_blocks(x_BTD, positions_BT, mask, cache, dropout_key, layer_params)
        x_BTD = self.final_norm(x_BTD)
        if mask.reordered:  # back in time order before the head: callers read positions by their index
            x_BTD = layout.to_time_order(x_BTD)
        return (x_BTD if return_hidden else self.head(x_BTD)), cache

    def split_layers(self) -> list[nnx.State]:
        """Each layer's parameters as arrays of their own. Decoding takes them apart once, before its loop: XLA
        does not hoist a slice of a stacked array out of a while loop, so every token would copy every weight."""
        _, stacked = nnx.split(self.blocks)
        return [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(self.cfg.n_layers)]

    def head(self, x_XD: jax.Array) -> jax.Array:
        """Logits (f32) of hidden states at any positions, [..., D] -> [..., V]."""
        w_out_DV = self.embed[...].T if self.cfg.tie_embeddings else self.unembed[...]
        logits_XV = (x_XD @ w_out_DV.astype(x_XD.dtype)).astype(jnp.float32)
        return logits_XV if self.cfg.output_mult == 1.0 else logits_XV * self.cfg.output_mult  # muP's 1/m

    def _mask(self, B: int, T: int, segment_ids_BT, cache: KVCache | None) -> AttentionMask:
        if cache is None:
            return AttentionMask.causal(B, T, segment_ids_BT)
        return cache.mask(jnp.ones((B, T), jnp.int32) if segment_ids_BT is None else segment_ids_BT.astype(jnp.int32))

    def _run_blocks(self, x_BTD, positions_BT, mask, cache, dropout_key, layer_params=None):
        """One compiled block, scanned over the layer axis, so compile time does not grow with depth (unless
        model.scan_layers=false, or the parameters or cache come per layer, as decoding passes them). The cache's
        arrays ride in the carry: each layer writes its new slots in place."""
        graphdef, stacked = nnx.split(self.blocks)
        L = self.cfg.n_layers
        layer_keys = None if dropout_key is None else jax.random.split(dropout_key, L)

        unrolled = not self.cfg.scan_layers or layer_params is not None or (cache is not None and cache.per_layer)

        def body(carry, layer):
            x_BTD, cache_layers = carry
            state, key, index = layer  # index: an array in the scan, a Python int unrolled (picks per-layer arrays)
            layer_cache = None if cache is None else cache.for_layer(cache_layers, index)
            x_BTD = constrain(x_BTD, ACTIVATION_AXES)
            layer_positions_BT, layer_mask = positions_BT, mask
            if not unrolled:
                # Tied to the carry, positions and the mask are no longer loop constants: otherwise, for the backward
                # pass, JAX hoists all that depends on them alone out of the scan, e.g. blockwise attention's mask
                # of every block pair at once (a T x T array).
                x_BTD, layer_positions_BT, layer_mask = jax.lax.optimization_barrier((x_BTD, positions_BT, mask))
            block = nnx.merge(graphdef, state)
            x_BTD, layer_cache = block(x_BTD, layer_positions_BT, layer_mask, layer_cache, index, key)
            return (constrain(x_BTD, ACTIVATION_AXES), None if cache is None else layer_cache.layers), None

        def remat(fn):
            if self.cfg.remat == "none":
                return fn
            # Inside a scan XLA cannot merge the recomputation with the forward pass; unrolled, it could, and would
            # quietly save what the policy says to recompute.
            return jax.checkpoint(fn, policy=REMAT_POLICIES[self.cfg.remat], prevent_cse=unrolled)

        carry = (x_BTD, None if cache is None else cache.layers)
        if unrolled:
            layer_params = self.split_layers() if layer_params is None else layer_params
            for i in range(L):
                key_i = None if layer_keys is None else layer_keys[i]
                carry, _ = remat(lambda carry, layer, i=i: body(carry, (*layer, i)))(carry, (layer_params[i], key_i))
        else:
            carry, _ = jax.lax.scan(remat(body), carry, (stacked, layer_keys, jnp.arange(L)))
        x_BTD, cache_layers = carry
        if cache is not None:
            cache = cache.advanced(mask.q_segment_BT, cache_layers)
        return x_BTD, cache


def abstract_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """The model with shapes and dtypes in place of arrays: nothing is allocated. The one way to get a graphdef or
    parameter shapes without building the parameters."""
    return nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(seed)))


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
