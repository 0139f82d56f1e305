"""`meshlm bench eval`: the few-shot scoring path (experiments/evaluation/requests.py) in scored tokens/s on a
realistic mix of context lengths, and the shapes it compiles: packed (each context once, the default), one request
per row in lm-evaluation-harness's batches, and Hugging Face scoring those same batches (--against hf-gpt2), all
taking turns."""

import statistics
import time

import jax
import numpy as np
from flax import nnx

from meshlm.experiments.bench.timing import interleaved
from meshlm.experiments.evaluation import tasks as tasks_lib
from meshlm.experiments.evaluation.prompts import draw_shots, fit
from meshlm.experiments.evaluation.requests import LanguageModel, bucket, sorted_batches
from meshlm.model.errors import ConfigError
from meshlm.model.scoring import continuation_logprobs, packed_logprobs
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from meshlm.training.tokenizer import ByteCodec

# Generation, multiple-choice and scrambling tasks: their prompts differ in length per item and grow with K.
TASKS = ("arithmetic_2da", "arithmetic_3ds", "arithmetic_1dc", "cycle_letters", "label_mapping")
SHOTS = (0, 1, 2, 4, 8, 16)


def build_requests(
    tokenizer, n_ctx: int, tasks=TASKS, shots=SHOTS, items: int = 8, seed: int = 0
) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) of every answer of the first `items` items of each task at every K, fitted
    to n_ctx exactly as the harness fits them (shots dropped from the far end when they do not fit)."""
    out = []
    for name in tasks:
        task = tasks_lib.resolve(name, seed)
        if isinstance(task, str):
            raise ConfigError(f"{name} is a probe, not a prompt task; choose among {', '.join(TASKS)}")
        for item in task.items[:items]:
            answers = item.choices if task.kind == "multiple_choice" else (item.target,)
            continuations = [task.fmt.target_delimiter + a for a in answers]
            for k in shots:
                shots_k = draw_shots(task.pool, item, k, seed, task.name)
                fitted = fit(tokenizer, task.fmt, shots_k, item, continuations, n_ctx)
                out += [(fitted.context_ids, c) for c in fitted.continuation_ids]
    return out


def bench_eval(
    cfg: config_lib.Config, items: int, shots: tuple[int, ...], batch_size: int, repeats: int, against=()
) -> dict:
    model = Transformer(cfg.model, nnx.Rngs(cfg.train.seed))
    n_ctx = cfg.model.n_ctx
    tokenizer = ByteCodec()
    if cfg.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"bench eval feeds UTF-8 bytes: set --set model.vocab_size=256 or more (is {cfg.model.vocab_size})"
        )
    requests = build_requests(tokenizer, n_ctx, shots=shots, items=items)
    lengths = [len(c) + len(x) - 1 for c, x in requests]
    batches = sorted_batches(lengths, batch_size)
    packed_lm = LanguageModel(model, tokenizer, batch_size=batch_size)
    rows_lm = LanguageModel(model, tokenizer, batch_size=batch_size, pack=False)
    packed_calls = packed_lm.packed_batches(requests)

    ours, packed_compiled, packed_first_s = _first_pass(packed_lm, requests, packed_logprobs)
    by_row, rows_compiled, rows_first_s = _first_pass(rows_lm, requests, continuation_logprobs)
    ours_R = np.array([s.logprob for s in ours])

    contestants = {
        "meshlm": lambda: packed_lm.loglikelihood_tokens(requests),
        "meshlm-rows": lambda: rows_lm.loglikelihood_tokens(requests),
    }
    hf_check = {}
    if against:
        from meshlm.experiments.reference import (  # torch itself is imported only when asked for
            torch_gpt2,
            torch_inference,
        )

        hf = torch_gpt2.hf_gpt2(cfg.model, params=torch_gpt2.numpy_params(model))
        contestants["hf-gpt2"] = torch_inference.score_fn(hf, requests, batches)
        logprob_R, greedy_R = contestants["hf-gpt2"]()
        hf_check = dict(
            max_logprob_diff=float(np.max(np.abs(logprob_R - ours_R))),
            same_greedy=float(np.mean(greedy_R == np.array([s.is_greedy for s in ours]))),
        )
    times = {k: statistics.median(v) for k, v in interleaved(contestants, repeats).items()}

    scored = sum(lengths)
    padded_lengths = [bucket(lengths[b[0]], n_ctx) for b in batches]  # each batch is padded to its longest row's bucket
    result = dict(
        preset=cfg.preset,
        n_ctx=n_ctx,
        tasks=list(TASKS),
        shots=list(shots),
        items=items,
        batch_size=batch_size,
        repeats=repeats,
        devices=len(packed_lm.partitioner.mesh.devices.flat),
        device_kind=jax.devices()[0].device_kind,
        requests=len(requests),
        distinct_contexts=len({tuple(c) for c, _ in requests}),
        distinct_lengths=len(set(lengths)),
        min_length=min(lengths),
        max_length=max(lengths),
        scored_tokens=scored,
        calls=len(packed_calls),
        positions=sum(batch_size * T for _, T, _ in packed_calls),
        compiled_shapes=packed_compiled,
        call_shapes=len({(T, K) for _, T, K in packed_calls}),
        first_call_s=packed_first_s,
        s=times["meshlm"],
        tokens_per_s=scored / times["meshlm"],
        requests_per_s=len(requests) / times["meshlm"],
        rows=dict(
            batches=len(batches),
            padded_tokens=batch_size * sum(padded_lengths),
            compiled_shapes=rows_compiled,
            length_buckets=len(set(padded_lengths)),
            first_call_s=rows_first_s,
            s=times["meshlm-rows"],
            tokens_per_s=scored / times["meshlm-rows"],
            max_logprob_diff=float(np.max(np.abs(np.array([s.logprob for s in by_row]) - ours_R))),
            same_greedy=float(np.mean([a.is_greedy == b.is_greedy for a, b in zip(ours, by_row)])),
        ),
    )
    if against:
        hf_padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        result["against"] = {
            "hf-gpt2": dict(
                s=times["hf-gpt2"],
                tokens_per_s=scored / times["hf-gpt2"],
                padded_tokens=hf_padded,
                ratio=times["hf-gpt2"] / times["meshlm"],
                rows_ratio=times["hf-gpt2"] / times["meshlm-rows"],
            )
            | hf_check
        }
    return result


def _first_pass(lm: LanguageModel, requests, jitted) -> tuple[list, int, float]:
    """(scores, shapes compiled, seconds) of a first pass over the requests, which compiles every shape."""
    cached_before = jitted._cache_size()
    start = time.perf_counter()
    scores = lm.loglikelihood_tokens(requests)
    return scores, jitted._cache_size() - cached_before, time.perf_counter() - start


def text(r: dict) -> str:
    rows = r["rows"]
    lines = [
        f"meshlm bench eval: {r['preset']} (n_ctx {r['n_ctx']}), {r['requests']} requests from {len(r['tasks'])} "
        f"tasks x K={','.join(map(str, r['shots']))} x {r['items']} items, batches of {r['batch_size']}, "
        f"{r['devices']} x {r['device_kind']}, median of {r['repeats']}",
        f"requests     {r['min_length']}..{r['max_length']} tokens, {r['distinct_lengths']} distinct lengths, "
        f"{r['distinct_contexts']} distinct contexts; {r['scored_tokens']:,} scored tokens (context + continuation "
        "- 1 each)",
        f"meshlm       {r['tokens_per_s']:,.0f} scored tokens/s, {r['requests_per_s']:,.1f} requests/s "
        f"({r['s']:.2f} s): packed, each context once; {r['calls']} calls run {r['positions']:,} positions; "
        f"{r['compiled_shapes']} compiled shapes for {r['call_shapes']} (length, slots) buckets used (first pass "
        f"{r['first_call_s']:.1f} s)",
        f"meshlm-rows  {rows['tokens_per_s']:,.0f} scored tokens/s ({rows['s']:.2f} s): one request per row, "
        f"lm-eval's batches, {rows['padded_tokens']:,} positions; {rows['compiled_shapes']} compiled shapes for "
        f"{rows['length_buckets']} length buckets; packed / rows = {rows['s'] / r['s']:.2f}; largest log-prob "
        f"difference {rows['max_logprob_diff']:.1e}, same greedy flags {rows['same_greedy']:.0%}",
    ]
    for name, ref in r.get("against", {}).items():
        lines.append(
            f"{name:12s} {ref['tokens_per_s']:,.0f} scored tokens/s ({ref['s']:.2f} s, the rows' batches, each padded "
            f"to its longest: {ref['padded_tokens']:,} positions); meshlm / {name} = {ref['ratio']:.2f}, meshlm-rows "
            f"/ {name} = {ref['rows_ratio']:.2f}; largest log-prob difference {ref['max_logprob_diff']:.1e}, same "
            f"greedy flags {ref['same_greedy']:.0%}"
        )
    return "\n".join(lines)
