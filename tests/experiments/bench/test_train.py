"""`meshlm bench`: the fields it reports and the arithmetic between them (never how fast anything is)."""

import json
import re
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.bench import decode as bench_decode
from meshlm.experiments.bench import train as bench
from meshlm.experiments.cli import main
from meshlm.experiments.reference import torch_gpt2
from meshlm.model import generate
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from meshlm.training import setup as setup_lib
from tests.training.test_profile import TRAIN_STEP_MODULE

SMALL = [
    "--preset",
    "tiny",
    "--set",
    "model.n_layers=1",
    "--set",
    "model.d_model=32",
    "--set",
    "model.n_heads=2",
    "--set",
    "model.vocab_size=256",
    "--set",
    "data.vocab_size=256",
    "--set",
    "train.seq_len=16",
    "--set",
    "train.batch_size=4",
]


def _json(argv, capsys) -> dict:
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_fields_are_consistent(capsys):
    r = _json(["bench", "train"] + SMALL + ["--steps", "2", "--warmup", "1"], capsys)
    assert (r["batch"], r["seq_len"], r["devices"]) == (4, 16, 4)  # data parallel over the simulated devices
    # Counted by hand for d=32, 1 layer, GELU MLP 4d, vocab 256, 16 tokens: the matmul weights (4d^2 attention +
    # 8d^2 MLP + d x vocab head) at 6 FLOPs each per token (forward 2, backward 4), plus attention's QK^T and AV,
    # 2 x 2 x T x d forward per layer, times 3 with the backward.
    d, T = 32, 16
    by_hand = 6 * (12 * d * d + d * 256) + 3 * 2 * 2 * T * d
    assert r["flops_per_token"] == by_hand
    assert r["flops_per_step"] == by_hand * 4 * T
    assert r["tokens_per_s"] == pytest.approx(4 * 16 / r["step_s"])
    assert r["flops_per_s"] == pytest.approx(r["flops_per_step"] / r["step_s"])
    assert r["mfu"] == pytest.approx(r["flops_per_s"] / r["peak_flops_per_s"])
    assert r["matmul_flops_per_s"] == r["peak_flops_per_s"]  # on CPU the peak is the in-run matmul rate
    assert r["compile_s"] > 0 and r["trace_s"] > 0 and r["against"] == {}
    assert "6 x 2 x n_layers x seq_len x d_attn" in r["flop_formula"]


def test_timed_step_is_a_full_batch_under_a_ramp():
    """A ramped preset's first steps train on one chunk; the bench must time whole batches (it once counted a
    16-row chunk as a 32-row batch and reported twice the throughput)."""
    cfg = config_lib.from_preset(
        "tiny",
        SMALL[1::2][1:] + ["train.ramp_tokens=1000000", "train.ramp_batch=2", "train.steps=0", "train.tokens=10000000"],
    ).validate()
    assert cfg.train.ramp_batch < cfg.train.batch_size  # the preset really ramps
    compiled, state, batch, _, _ = bench.build_train_step(cfg, jax.devices()[:1])
    _, metrics = compiled(state, batch)
    assert int(metrics["tokens"]) == 4 * 16


def test_a_timed_call_of_several_steps_trains_that_many_full_batches(capsys):
    cfg = config_lib.from_preset("tiny", SMALL[1::2][1:] + ["train.steps_per_call=3"]).validate()
    compiled, state, batch, _, _ = bench.build_train_step(cfg, jax.devices()[:1])
    new_state, metrics = compiled(state, batch)
    assert metrics["tokens"].tolist() == [4 * 16] * 3 and int(new_state.step) == 3
    r = _json(["bench", "train"] + SMALL + ["--set", "train.steps_per_call=3", "--steps", "1", "--warmup", "0"], capsys)
    assert r["steps_per_call"] == 3 and r["tokens_per_s"] == pytest.approx(4 * 16 / r["step_s"])


def test_train_text_names_every_figure_and_profile_traces_the_timed_steps(capsys, tmp_path):
    assert main(["bench", "train"] + SMALL + ["--steps", "1", "--warmup", "0", "--profile", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for label in ("compile", "step time", "tokens/s", "FLOPs/token", "FLOP/s", "peak", "MFU", "in-run matmul rate"):
        assert label in out
    (trace,) = (tmp_path / "plugins" / "profile").glob("*/*.xplane.pb")  # where TensorBoard's profile plugin looks
    assert TRAIN_STEP_MODULE in trace.read_bytes()


@pytest.mark.torch
def test_against_torch_reports_both_and_the_ratio(capsys):
    r = _json(
        ["bench", "train"]
        + SMALL
        + ["--steps", "1", "--warmup", "0", "--against", "hf-gpt2", "--against", "torch-gpt2"],
        capsys,
    )
    for name in ("hf-gpt2", "torch-gpt2"):
        ref = r["against"][name]
        assert ref["tokens_per_s"] == pytest.approx(4 * 16 / ref["step_s"])
        assert ref["ratio"] == pytest.approx(ref["step_s"] / r["step_s"])  # > 1: meshlm is faster


@pytest.mark.torch
@pytest.mark.parametrize("name", torch_gpt2.REFERENCES)
def test_torch_references_train(name):
    cfg = config_lib.from_preset(
        "tiny", ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.vocab_size=128"]
    )
    step = torch_gpt2.make_step(name, cfg.model, cfg.train.optimizer, batch=2, seq_len=16)
    first = step()
    assert abs(first - np.log(128)) < 0.5  # near-uniform predictions at initialisation
    assert all(np.isfinite(step()) for _ in range(2))


def test_missing_torch_is_a_one_line_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    cfg = config_lib.from_preset("tiny")
    with pytest.raises(ConfigError, match=r"pip install 'meshlm\[torch\]'"):
        torch_gpt2.make_step("hf-gpt2", cfg.model, cfg.train.optimizer, 2, 16)


def test_against_needs_a_gpt2_shaped_model(capsys):
    assert main(["bench", "train", "--preset", "tiny-modern", "--against", "torch-gpt2"]) == 2
    assert "GPT-2-shaped" in capsys.readouterr().err


def test_compile_reports_each_depth_and_the_ratio(capsys):
    r = _json(["bench", "compile"] + SMALL + ["--layers", "1", "2", "--repeats", "1"], capsys)
    assert set(r["compile_s"]) == {"1", "2"}
    assert r["ratio"] == pytest.approx(r["compile_s"]["2"] / r["compile_s"]["1"])


def _lowered_step_text(overrides: list[str]) -> str:
    """The train step as bench_compile hands it to XLA (a fresh jit from abstract shapes), as StableHLO text."""
    setup = setup_lib.build(config_lib.from_preset("tiny", SMALL[1::2][1:] + overrides))
    return setup.lower(batch=setup.abstract_batch(keys=("inputs", "targets")), fresh=True).as_text()


def test_compile_work_is_flat_in_depth_with_scanned_layers():
    """With scan_layers (the default) XLA compiles one block whatever the depth: the program it is given has the
    same operations for 1 and 8 layers, only the stacked dimension changes. Unrolled, it grows with depth."""
    assert ModelConfig().scan_layers
    ops = lambda text: len(re.findall(r"\bstablehlo\.\w+", text))  # noqa: E731
    one, eight = _lowered_step_text(["model.n_layers=1"]), _lowered_step_text(["model.n_layers=8"])
    assert ops(one) == ops(eight) and len(one) == len(eight)
    unrolled = [_lowered_step_text([f"model.n_layers={L}", "model.scan_layers=false"]) for L in (1, 8)]
    assert ops(unrolled[1]) > 2 * ops(unrolled[0])  # the measure sees depth when the program has it


def test_uncached_generation_equals_kv_cache_generation():
    cfg = config_lib.from_preset(
        "tiny", ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.vocab_size=128"]
    ).model
    model = Transformer(cfg, nnx.Rngs(0))
    prompts_BP = np.random.default_rng(0).integers(0, 128, (3, 5), dtype=np.int32)
    cached = generate.generate(model, prompts_BP.tolist(), generate.SamplingConfig(max_new_tokens=12, temperature=0.0))
    graphdef, state = nnx.split(model)
    uncached = bench_decode.generate_uncached(graphdef, state, prompts_BP, 12, 17)
    np.testing.assert_array_equal(np.asarray(uncached), np.array(cached))


def test_decode_fields_are_consistent(capsys):
    argv = (
        ["bench", "decode"]
        + SMALL
        + [
            "--batch",
            "1",
            "--batch",
            "2",
            "--prompt-len",
            "4",
            "--new-tokens",
            "300",
            "--uncached-tokens",
            "2",
            "--repeats",
            "1",
        ]
    )
    r = _json(argv, capsys)
    assert r["n_ctx"] == 304  # raised from tiny's 256 to hold prompt + new tokens
    assert [row["batch"] for row in r["rows"]] == [1, 2]
    for row in r["rows"]:
        assert row["same_tokens"]
        assert row["cached_tokens_per_s"] == pytest.approx(row["batch"] * 300 / row["cached_s"])
        assert row["uncached_total_s"] == pytest.approx(row["uncached_s_per_token"] * 300)
        assert row["speedup"] == pytest.approx(row["uncached_total_s"] / row["cached_s"])
