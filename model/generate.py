"""Incremental decoding with a fixed-size KV cache, all under one `jax.jit`."""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from meshlm.model.attention import KVCache
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1 = no nucleus cut
    stop_tokens: tuple[int, ...] = ()
    seed: int = 0
    vocab_limit: int = 0  # ids >= this are never sampled (the model's vocab is padded past the tokenizer's); 0 = none


def sample_token(logits_BV: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    if cfg.vocab_limit:
        logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < cfg.vocab_limit, logits_BV, -jnp.inf)
    return _sample(logits_BV, key, cfg)


def _sample(logits_BV: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    if cfg.temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = logits_BV / cfg.temperature
    if cfg.top_k > 0:
        kth_B1 = jax.lax.top_k(logits_BV, cfg.top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    if cfg.top_p < 1.0:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p.
        keep_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV < cfg.top_p
        cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
        logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
    return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


class LoopState(NamedTuple):
    """What the decode loop carries from one token to the next."""

    step: jax.Array
    cache: KVCache
    logits_BV: jax.Array  # the distribution of the next token
    key: jax.Array
    out_BN: jax.Array  # tokens so far (0 after a row stopped)
    done_B: jax.Array
    n_B: jax.Array  # tokens per row, its stop token included


def left_pad(
    prompts: list[list[int]], pad_id: int, length: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts right-aligned so every row's next token goes into the same cache slot; `length` (default the
    longest prompt) lets batches of different prompts share one compiled shape."""
    P = length or max(len(p) for p in prompts)
    tokens_BP = np.full((len(prompts), P), pad_id, np.int32)
    segment_BP = np.zeros((len(prompts), P), np.int32)
    positions_BP = np.zeros((len(prompts), P), np.int32)
    for b, prompt in enumerate(prompts):
        n = len(prompt)
        tokens_BP[b, P - n :] = prompt
        segment_BP[b, P - n :] = 1
        positions_BP[b, P - n :] = np.arange(n)
    return tokens_BP, segment_BP, positions_BP


def generate(
    model: Transformer, prompts: list[list[int]], cfg: SamplingConfig, pad_id: int = 0, length: int | None = None
) -> list[list[int]]:
    """New tokens for each prompt, cut after the first stop token (which is kept). Prompts are left-padded to
    `length` (default: the longest)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token; pass non-empty prompts")
    n_ctx, longest = model.cfg.n_ctx, max(max(len(p) for p in prompts), length or 0)
    if longest + cfg.max_new_tokens > n_ctx:
        raise ConfigError(
            f"a prompt of {longest} tokens plus max_new_tokens={cfg.max_new_tokens} exceeds the model's n_ctx={n_ctx}; "
            "shorten the prompt or lower --max-new-tokens"
        )
    tokens_BP, segment_BP, positions_BP = left_pad(prompts, pad_id, longest)
    graphdef, state = nnx.split(model)
    out_BN, n_B = _generate(
        graphdef=graphdef,
        state=state,
        tokens_BP=tokens_BP,
        segment_BP=segment_BP,
        positions_BP=positions_BP,
        key=jax.random.key(cfg.seed),
        cfg=cfg,
    )
    out_BN, n_B = np.asarray(out_BN), np.asarray(n_B)
    return [out_BN[b, : n_B[b]].tolist() for b in range(len(prompts))]


def weights_in_compute_dtype(state: nnx.State, dtype: np.dtype) -> nnx.State:
    """Matrices (floating, 2-D or more) cast to `dtype` where it is narrower; vectors (norm scales, biases) keep
    theirs. The forward pass casts each matrix to the compute dtype anyway, so results are unchanged; casting once
    before the decode loop spares every step a read of the f32 master weights."""

    def cast(x):
        narrower = jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize > dtype.itemsize
        return x.astype(dtype) if narrower and x.ndim >= 2 else x

    return jax.tree.map(cast, state)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"))
def _generate(graphdef, state, tokens_BP, segment_BP, positions_BP, key, cfg: SamplingConfig):
    model = nnx.merge(graphdef, state)
    nnx.update(model, weights_in_compute_dtype(state, jnp.dtype(model.cfg.dtype)))
    B, P = tokens_BP.shape
    N = cfg.max_new_tokens
    # Layers unrolled over per-layer weights and cache, taken apart here, outside the loop: a scan over stacked
    # arrays would copy every layer's weights and cache out of them at every token.
    cache = KVCache.empty(model.cfg, B, P + N, per_layer=True)
    layer_params = model.split_layers()
    # The prompt's last position is the only one whose logits are needed: the head reads that one alone.
    x_BPD, cache = model(tokens_BP, positions_BP, segment_BP, cache, return_hidden=True, layer_params=layer_params)
    next_position_B = positions_BP[:, -1] + 1
    stop_S = jnp.asarray(cfg.stop_tokens or (-1,), jnp.int32)

    def not_finished(state: LoopState):
        return (state.step < N) & ~jnp.all(state.done_B)

    def step_fn(state: LoopState) -> LoopState:
        key, sample_key = jax.random.split(state.key)
        token_B = sample_token(state.logits_BV, sample_key, cfg)
        positions_B1 = (next_position_B + state.step)[:, None]
        logits_B1V, cache = model(
            token_B[:, None], positions_B1, jnp.ones((B, 1), jnp.int32), state.cache, layer_params=layer_params
        )
        return LoopState(
            step=state.step + 1,
            cache=cache,
            logits_BV=logits_B1V[:, 0],
            key=key,
            out_BN=state.out_BN.at[:, state.step].set(jnp.where(state.done_B, 0, token_B)),
            done_B=state.done_B | jnp.isin(token_B, stop_S),
            n_B=state.n_B + (~state.done_B).astype(jnp.int32),
        )

    start = LoopState(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        logits_BV=model.head(x_BPD[:, -1]),
        key=key,
        out_BN=jnp.zeros((B, N), jnp.int32),
        done_B=jnp.zeros((B,), bool),
        n_B=jnp.zeros((B,), jnp.int32),
    )
    final = jax.lax.while_loop(not_finished, step_fn, start)
    return final.out_BN, final.n_B
