"""`meshlm bench decode` (bytes read, bandwidth, --against hf-gpt2) and `meshlm bench eval`: the fields they report
checked against independent computations (never how fast anything is)."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.bench import decode as bench_decode
from meshlm.experiments.bench import eval as bench_eval
from meshlm.experiments.bench import probes
from meshlm.experiments.cli import main
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from meshlm.training.tokenizer import ByteCodec

MODEL = ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.vocab_size=256", "data.vocab_size=256"]
SMALL = ["--preset", "tiny"] + [a for kv in MODEL for a in ("--set", kv)]


def _json(argv, capsys) -> dict:
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _padded_length(n: int, n_ctx: int) -> int:
    """The smallest of 16, 24, 32, 48, 64, ... (2^k and 1.5 x 2^k) that holds n, at most n_ctx."""
    sizes = sorted({16 << k for k in range(12)} | {24 << k for k in range(12)})
    return min(next(T for T in sizes if T >= n), n_ctx)


def test_weight_and_cache_bytes_match_the_arrays():
    cfg = config_lib.from_preset("tiny", MODEL).model
    model = Transformer(cfg, nnx.Rngs(0))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert bench_decode.weight_bytes(cfg) == sum(x.nbytes for x in leaves) - model.pos_embed[...].nbytes
    # f32 master weights, bf16 compute: a decoder need only read them as bf16.
    assert 2 * bench_decode.weight_bytes(dataclasses.replace(cfg, dtype="bfloat16")) == bench_decode.weight_bytes(cfg)
    B = 3
    kv = 2 * cfg.n_layers * B * cfg.n_heads * cfg.head_dim * 4  # keys and values, f32, one position
    assert kv <= bench_decode.cache_bytes_per_position(cfg, B) <= kv + 8 * B  # + at most 8 bytes a row of bookkeeping
    P, N = 5, 7
    per_slot = bench_decode.cache_bytes_per_position(cfg, B)
    by_token = sum(bench_decode.weight_bytes(cfg) + (P + i) * per_slot for i in range(N))
    assert bench_decode.decode_bytes(cfg, B, P, N) == by_token


def test_read_probe_reads_the_whole_array():
    probe, n_bytes = probes.read_probe(n_bytes=4 * 1000)
    assert n_bytes == 4000 and float(probe()) == 1000.0  # sums 1000 ones: every element was read


def test_decode_reports_bytes_against_bandwidth(capsys):
    argv = ["bench", "decode"] + SMALL + ["--batch", "2", "--prompt-len", "4", "--new-tokens", "12"]
    r = _json(argv + ["--uncached-tokens", "2", "--repeats", "1"], capsys)
    cfg = config_lib.from_preset("tiny", MODEL).model
    (row,) = r["rows"]
    assert row["bytes_read"] == bench_decode.decode_bytes(cfg, 2, 4, 12)
    assert row["bytes_per_token"] * 12 == pytest.approx(row["bytes_read"])
    assert row["bytes_per_s"] == pytest.approx(row["bytes_read"] / row["cached_s"])
    assert row["bandwidth_fraction"] == pytest.approx(row["bytes_per_s"] / row["memory_bytes_per_s"])
    assert "against" not in row


def test_requests_fit_and_grow_with_shots():
    tok = ByteCodec()
    by_k = {k: bench_eval.build_requests(tok, 256, tasks=("arithmetic_2da",), shots=(k,), items=4) for k in (0, 4)}
    assert len(by_k[0]) == len(by_k[4]) == 4  # one target per generation item
    for (c0, x0), (c4, x4) in zip(by_k[0], by_k[4]):
        assert x0 == x4 and len(c4) > len(c0) and c4[-len(c0) + 1 :] == c0[1:]  # the same query after the shots
    long = bench_eval.build_requests(tok, 64, tasks=("arithmetic_2da",), shots=(16,), items=4)
    assert all(len(c) + len(x) - 1 <= 64 for c, x in long)  # shots dropped to fit n_ctx


def test_eval_fields_are_consistent(capsys):
    argv = ["bench", "eval"] + SMALL + ["--items", "2", "--shots", "0,2,8", "--batch-size", "4", "--repeats", "1"]
    r = _json(argv, capsys)
    requests = bench_eval.build_requests(ByteCodec(), 256, shots=(0, 2, 8), items=2)
    lengths = sorted((len(c) + len(x) - 1 for c, x in requests), reverse=True)
    assert r["requests"] == len(requests) and r["scored_tokens"] == sum(lengths)
    assert r["distinct_contexts"] == len({tuple(c) for c, _ in requests}) < len(requests)  # choices share one
    assert r["tokens_per_s"] == pytest.approx(r["scored_tokens"] / r["s"])
    # Packed: each context once in full rows, so fewer positions run than one request per row, in a few shapes.
    assert r["positions"] < r["rows"]["padded_tokens"] and r["positions"] % (4 * 16) == 0
    assert r["compiled_shapes"] == r["call_shapes"] <= r["calls"] < r["rows"]["batches"]
    # One request per row: longest first, each batch padded to its first row's length bucket.
    rows = r["rows"]
    first_rows = lengths[::4]
    assert rows["batches"] == -(-len(requests) // 4)
    assert rows["padded_tokens"] == sum(4 * _padded_length(n, 256) for n in first_rows)
    assert rows["compiled_shapes"] == len({_padded_length(n, 256) for n in first_rows}) == rows["length_buckets"]
    assert rows["compiled_shapes"] <= 9  # 16, 24, 32, 48, 64, 96, 128, 192, 256: however many lengths appear
    assert r["distinct_lengths"] == len(set(lengths)) > rows["compiled_shapes"]
    assert rows["max_logprob_diff"] < 1e-4 and rows["same_greedy"] == 1.0  # packing changes no score


@pytest.mark.torch
def test_decode_against_hf_generate(capsys):
    argv = ["bench", "decode"] + SMALL + ["--batch", "3", "--prompt-len", "4", "--new-tokens", "10"]
    r = _json(argv + ["--uncached-tokens", "2", "--repeats", "1", "--against", "hf-gpt2"], capsys)
    (row,) = r["rows"]
    hf = row["against"]["hf-gpt2"]
    assert hf["same_tokens"] == 1.0  # the same weights, greedy, f32: the same tokens
    assert hf["tokens_per_s"] == pytest.approx(3 * 10 / hf["s"])
    assert hf["ratio"] == pytest.approx(hf["s"] / row["cached_s"])


@pytest.mark.torch
def test_eval_against_hf_scores_the_same(capsys):
    argv = ["bench", "eval"] + SMALL + ["--items", "2", "--shots", "0,4", "--batch-size", "4", "--repeats", "1"]
    r = _json(argv + ["--against", "hf-gpt2"], capsys)
    hf = r["against"]["hf-gpt2"]
    assert hf["max_logprob_diff"] < 1e-3 and hf["same_greedy"] == 1.0  # same weights, same function
    requests = bench_eval.build_requests(ByteCodec(), 256, shots=(0, 4), items=2)
    lengths = sorted((len(c) + len(x) - 1 for c, x in requests), reverse=True)
    batches = [lengths[i : i + 4] for i in range(0, len(lengths), 4)]
    assert hf["padded_tokens"] == sum(len(b) * b[0] for b in batches)  # HF pads each batch to its longest row
    assert hf["ratio"] == pytest.approx(hf["s"] / r["s"])
    assert hf["rows_ratio"] == pytest.approx(hf["s"] / r["rows"]["s"])
    assert np.isclose(hf["tokens_per_s"], r["scored_tokens"] / hf["s"])
