"""`meshlm bench decode`: greedy generation with the KV cache against recomputing the whole sequence every step,
against Hugging Face's `generate` (--against hf-gpt2), and the bytes it reads against the in-run memory bandwidth."""

import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from meshlm.experiments.bench import probes
from meshlm.experiments.bench.timing import interleaved
from meshlm.model import flops, generate
from meshlm.model.transformer import KVCache, Transformer
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


def weight_bytes(cfg) -> int:
    """Bytes of parameters one decode step reads: all of them once (the batch shares them; the tied head reads
    the whole token table) except the position table, of which it reads one row per sequence; in the compute dtype
    where it is narrower than the stored one (f32 master weights cast to bf16 once could be read as bf16)."""
    n = flops.count_params(cfg).total - (cfg.n_ctx * cfg.d_model if cfg.position == "learned" else 0)
    return n * min(np.dtype(cfg.param_dtype).itemsize, np.dtype(cfg.dtype).itemsize)


def cache_bytes_per_position(cfg, batch: int) -> int:
    """Bytes the cache holds per sequence position for the whole batch (keys and values of every layer and any
    per-slot bookkeeping), whatever the cache's layout: the difference between caches of 2 and 1 positions."""

    def nbytes(length: int) -> int:
        shapes = jax.eval_shape(lambda: KVCache.empty(cfg, batch, length))
        return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))

    return nbytes(2) - nbytes(1)


def decode_bytes(cfg, batch: int, prompt_len: int, new_tokens: int) -> int:
    """Bytes that generating new_tokens tokens must read at least: per token, the weights once and the cache of
    every position before it (token i, from 0, follows prompt_len + i positions)."""
    positions = new_tokens * prompt_len + new_tokens * (new_tokens - 1) // 2
    return new_tokens * weight_bytes(cfg) + positions * cache_bytes_per_position(cfg, batch)


def bench_decode(
    cfg: config_lib.Config,
    batches: list[int],
    prompt_len: int,
    new_tokens: int,
    uncached_tokens: int,
    repeats: int,
    against: tuple[str, ...] = (),
) -> dict:
    """Per batch size: cached tokens/s over all new tokens; uncached tokens/s over its first few (every uncached
    step costs the same full-window forward, so its time for new_tokens is that per-token time x new_tokens);
    with against=("hf-gpt2",) HF's generate with the same weights; the bytes read against a read probe."""
    model = Transformer(cfg.model, nnx.Rngs(cfg.train.seed))
    hf = None
    if against:
        from meshlm.experiments.reference import (  # torch itself is imported only when asked for
            torch_gpt2,
            torch_inference,
        )

        hf = torch_gpt2.hf_gpt2(cfg.model, params=torch_gpt2.numpy_params(model))
    probe, probe_bytes = probes.read_probe()
    rows = []
    for B in batches:
        prompts_BP = np.random.default_rng(B).integers(0, cfg.model.vocab_size, (B, prompt_len), dtype=np.int32)
        cached, cached_compile_s = compile_cached(model, prompts_BP, new_tokens)
        uncached, uncached_compile_s = compile_uncached(model, prompts_BP, uncached_tokens, prompt_len + new_tokens)
        ours_BN = cached()
        same = bool(np.array_equal(ours_BN[:, :uncached_tokens], uncached()))
        contestants = dict(cached=cached, uncached=uncached, memory=probe)
        if hf is not None:
            contestants["hf-gpt2"] = torch_inference.generate_fn(hf, prompts_BP, new_tokens)
            hf_same = float(np.mean(contestants["hf-gpt2"]() == ours_BN))
        times = {k: statistics.median(v) for k, v in interleaved(contestants, repeats).items()}
        uncached_total_s = times["uncached"] / uncached_tokens * new_tokens
        read = decode_bytes(cfg.model, B, prompt_len, new_tokens)
        bandwidth_bytes_per_s = probe_bytes / times["memory"]
        row = dict(
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
            bytes_read=read,
            bytes_per_token=read / new_tokens,
            bytes_per_s=read / times["cached"],
            memory_bytes_per_s=bandwidth_bytes_per_s,
            bandwidth_fraction=read / times["cached"] / bandwidth_bytes_per_s,
        )
        if hf is not None:
            row["against"] = {
                "hf-gpt2": dict(
                    s=times["hf-gpt2"],
                    tokens_per_s=B * new_tokens / times["hf-gpt2"],
                    ratio=times["hf-gpt2"] / times["cached"],
                    same_tokens=hf_same,
                )
            }
        rows.append(row)
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


def decode_config(preset: str, overrides: list[str], prompt_len: int, new_tokens: int) -> config_lib.Config:
    cfg = config_lib.from_preset(preset, overrides)
    if prompt_len + new_tokens > cfg.model.n_ctx:
        # Positions beyond the preset's context need a longer position table; the weights are random anyway.
        cfg = config_lib.apply_overrides(cfg, [f"model.n_ctx={prompt_len + new_tokens}"])
    return cfg.validate()


def text(result: dict) -> str:
    new = result["new_tokens"]
    lines = [
        f"meshlm bench decode: {result['preset']} (n_ctx {result['n_ctx']}), prompt {result['prompt_len']} + {new} "
        f"new tokens, greedy, {result['device_kind']}, median of {result['repeats']}"
    ]
    for r in result["rows"]:
        lines.append(
            f"batch {r['batch']:3d}: KV cache {r['cached_tokens_per_s']:,.1f} tokens/s ({r['cached_s']:.2f} s for "
            f"{new}); recompute {r['uncached_tokens_per_s']:,.2f} tokens/s ({r['uncached_total_s']:.1f} s for {new}, "
            f"from {result['uncached_tokens']} steps); speedup {r['speedup']:.1f}x; same tokens: {r['same_tokens']}; "
            f"compile {r['cached_compile_s']:.1f} s / {r['uncached_compile_s']:.1f} s"
        )
        lines.append(
            f"           reads {r['bytes_per_token'] / 1e6:,.1f} MB per step (weights + cache) -> "
            f"{r['bytes_per_s'] / 1e9:,.2f} GB/s = {r['bandwidth_fraction']:.3f} of the in-run read bandwidth "
            f"({r['memory_bytes_per_s'] / 1e9:,.1f} GB/s)"
        )
        for name, ref in r.get("against", {}).items():
            lines.append(
                f"           {name} generate {ref['tokens_per_s']:,.1f} tokens/s ({ref['s']:.2f} s); meshlm / {name} "
                f"= {ref['ratio']:.2f}; same tokens {ref['same_tokens']:.0%}"
            )
    return "\n".join(lines)
