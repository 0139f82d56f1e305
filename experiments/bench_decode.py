"""`meshlm bench decode`: greedy generation with the KV cache against recomputing the whole sequence every step."""

import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from meshlm.experiments.timing import interleaved
from meshlm.model import generate
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def generate_uncached(graphdef, state, prompts_BP: jax.Array, n_new: int, window: int) -> jax.Array:
    """n_new greedy tokens, each from a full forward pass over all `window` positions (no cache; the causal mask
    hides the slots not yet written). Every step costs the same, whatever its position."""
    model = nnx.merge(graphdef, state)
    B, P = prompts_BP.shape
    tokens_BW = jnp.zeros((B, window), jnp.int32).at[:, :P].set(prompts_BP)

    def step(i, tokens_BW):
        logits_BWV, _ = model(tokens_BW)
        next_B = jnp.argmax(jax.lax.dynamic_index_in_dim(logits_BWV, P + i - 1, axis=1, keepdims=False), axis=-1)
        return jax.lax.dynamic_update_index_in_dim(tokens_BW, next_B.astype(jnp.int32), P + i, axis=1)

    return jax.lax.fori_loop(0, n_new, step, tokens_BW)[:, P : P + n_new]


def compile_cached(model: Transformer, prompts_BP: np.ndarray, n_new: int):
    """(compiled KV-cache generation of n_new greedy tokens: () -> tokens_BN, seconds to compile)."""
    graphdef, state = nnx.split(model)
    sampling = generate.SamplingConfig(max_new_tokens=n_new, temperature=0.0)
    args = (
        prompts_BP,
        np.ones_like(prompts_BP),
        np.broadcast_to(np.arange(prompts_BP.shape[1], dtype=np.int32), prompts_BP.shape),
        jax.random.key(0),
    )
    start = time.perf_counter()
    compiled = generate._generate.lower(graphdef, state, *args, sampling).compile()
    seconds = time.perf_counter() - start
    return lambda: np.asarray(compiled(state, *args)[0]), seconds


def compile_uncached(model: Transformer, prompts_BP: np.ndarray, n_new: int, window: int):
    graphdef, state = nnx.split(model)
    start = time.perf_counter()
    compiled = generate_uncached.lower(graphdef, state, prompts_BP, n_new, window).compile()
    seconds = time.perf_counter() - start
    return lambda: np.asarray(compiled(state, prompts_BP)), seconds


def bench_decode(
    cfg: config_lib.Config, batches: list[int], prompt_len: int, new_tokens: int, uncached_tokens: int, repeats: int
) -> dict:
    """Per batch size: cached tokens/s over all new tokens; uncached tokens/s over its first few (every uncached
    step costs the same full-window forward, so its time for new_tokens is that per-token time x new_tokens)."""
    model = Transformer(cfg.model, nnx.Rngs(cfg.train.seed))
    rows = []
    for B in batches:
        prompts_BP = np.random.default_rng(B).integers(0, cfg.model.vocab_size, (B, prompt_len), dtype=np.int32)
        cached, cached_compile_s = compile_cached(model, prompts_BP, new_tokens)
        uncached, uncached_compile_s = compile_uncached(model, prompts_BP, uncached_tokens, prompt_len + new_tokens)
        same = bool(np.array_equal(cached()[:, :uncached_tokens], uncached()))
        times = {
            k: statistics.median(v) for k, v in interleaved(dict(cached=cached, uncached=uncached), repeats).items()
        }
        uncached_total_s = times["uncached"] / uncached_tokens * new_tokens
        rows.append(
            dict(
                batch=B,
                cached_s=times["cached"],
                cached_tokens_per_s=B * new_tokens / times["cached"],
                uncached_s_per_token=times["uncached"] / uncached_tokens,
                uncached_tokens_per_s=B * uncached_tokens / times["uncached"],
                uncached_total_s=uncached_total_s,
                speedup=uncached_total_s / times["cached"],
                same_tokens=same,
                cached_compile_s=cached_compile_s,
                uncached_compile_s=uncached_compile_s,
            )
        )
    return dict(
        preset=cfg.preset,
        n_ctx=cfg.model.n_ctx,
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        uncached_tokens=uncached_tokens,
        repeats=repeats,
        device_kind=jax.devices()[0].device_kind,
        rows=rows,
    )


def run(args) -> None:
    prompt_len, new = args.prompt_len, args.new_tokens
    cfg = config_lib.from_preset(args.preset, list(args.set))
    if prompt_len + new > cfg.model.n_ctx:
        # Positions beyond the preset's context need a longer position table; the weights are random anyway.
        cfg = config_lib.apply_overrides(cfg, [f"model.n_ctx={prompt_len + new}"])
    cfg = cfg.validate()
    result = bench_decode(
        cfg,
        batches=args.batch or [1, 16],
        prompt_len=prompt_len,
        new_tokens=new,
        uncached_tokens=min(args.uncached_tokens, new),
        repeats=args.repeats,
    )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"meshlm bench decode: {result['preset']} (n_ctx {result['n_ctx']}), prompt {prompt_len} + {new} new tokens, "
        "greedy, "
        f"{result['device_kind']}, median of {result['repeats']}"
    )
    for r in result["rows"]:
        print(
            f"batch {r['batch']:3d}: KV cache {r['cached_tokens_per_s']:,.1f} tokens/s ({r['cached_s']:.2f} s for "
            f"{new}); "
            f"recompute {r['uncached_tokens_per_s']:,.2f} tokens/s ({r['uncached_total_s']:.1f} s for {new}, from "
            f"{result['uncached_tokens']} steps); "
            f"speedup {r['speedup']:.1f}x; same tokens: {r['same_tokens']}; compile {r['cached_compile_s']:.1f} s / "
            f"{r['uncached_compile_s']:.1f} s"
        )
