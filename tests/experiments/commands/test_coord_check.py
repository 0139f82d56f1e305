"""`meshlm coord-check`: under muP the output logits keep their scale as the width grows 8x; under the standard
parametrization they grow with it (issue 27)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.studies import coord_check
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from tests.xla import child_env

# Small enough that compiling each width, not training it, is the cost.
CHEAP = ["model.n_layers=1", "model.vocab_size=256", "data.vocab_size=256", "train.batch_size=4", "train.seq_len=32"]


def _start(parametrization: str, widths: str) -> subprocess.Popen:
    """`meshlm coord-check --json` in its own process: the two parametrizations run side by side, and the suite's quick
    compiles (tests/xla.py) keep each width's compile short (compiling is most of the cost)."""
    sets = [f"--set={s}" for s in CHEAP + [f"model.parametrization={parametrization}"]]
    argv = ["coord-check", "--preset", "tiny", "--widths", widths, "--steps", "10", *sets, "--json"]
    env = child_env()  # one device, the suite's quick compiles
    code = "import sys; from meshlm.experiments.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0
    return json.loads(out)


def _after_10_steps(result: dict) -> list[float]:
    return [series[10] for series in result["rms"]["logits"].values()]


@pytest.mark.slow
def test_mup_keeps_the_logits_flat_over_widths_and_standard_grows_them():
    mup, standard = _start("mup", "64,128,256,512"), _start("standard", "64,128,256,512")
    mup, standard = _result(mup), _result(standard)
    assert mup["parametrization"] == "mup" and standard["parametrization"] == "standard"
    assert list(mup["rms"]) == ["embedding", "attn_logits/0", "block/0", "logits"]  # in the forward pass's order
    assert list(mup["rms"]["logits"]) == ["64", "128", "256", "512"]
    assert all(len(series) == 11 for series in mup["rms"]["logits"].values())  # step 0, then after each step
    assert max(_after_10_steps(mup)) / min(_after_10_steps(mup)) <= 2.0
    grown = _after_10_steps(standard)
    assert grown == sorted(grown) and grown[-1] / grown[0] > 2.0


def _first_attention_logits_rms(model: Transformer, tokens_BT: jax.Array, scale: float) -> jax.Array:
    """Layer 0's logits q.k x scale written out (mha with biases, learned positions), RMS over the causal ones."""
    T = tokens_BT.shape[1]
    block = nnx.merge(nnx.graphdef(model.blocks), model.split_layers()[0])
    x_BTD = model.embed[...][tokens_BT] + model.pos_embed[...][:T]
    qkv_3BHTK = jnp.einsum("btd,dchk->cbhtk", block.attn_norm(x_BTD), block.attn.w_qkv[...])
    qkv_3BHTK = qkv_3BHTK + block.attn.b_qkv[...][:, None, :, None]
    logits_BHTS = jnp.einsum("bhtk,bhsk->bhts", qkv_3BHTK[0], qkv_3BHTK[1]) * scale
    causal_TS = jnp.tril(jnp.ones((T, T), bool))
    return jnp.sqrt(jnp.sum(jnp.where(causal_TS, logits_BHTS**2, 0)) / (logits_BHTS.shape[0] * 4 * causal_TS.sum()))


# Width 256 with 4 heads: d_head 64; muP's base is the preset's 128, where d_head is 32.
@pytest.mark.parametrize("parametrization, scale", [("standard", 64**-0.5), ("mup", 32**0.5 / 64)])
def test_the_measured_layers_are_the_forward_pass(parametrization, scale):
    cfg = config_lib.from_preset("tiny", CHEAP + ["model.n_layers=2", f"model.parametrization={parametrization}"])
    cfg = coord_check.width_config(cfg, 256).validate()
    graphdef, params = nnx.split(Transformer(cfg.model, nnx.Rngs(0)))
    tokens_BT = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
    measured = jax.jit(lambda p, t: coord_check.activation_rms(nnx.merge(graphdef, p), t))(params, tokens_BT)
    logits_BTV, _ = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, tokens_BT)
    assert set(measured) == {"embedding", "attn_logits/0", "attn_logits/1", "block/0", "block/1", "logits"}
    np.testing.assert_allclose(measured["logits"], jnp.sqrt(jnp.mean(logits_BTV**2)), rtol=1e-5)
    by_hand = _first_attention_logits_rms(nnx.merge(graphdef, params), tokens_BT, scale)
    np.testing.assert_allclose(measured["attn_logits/0"], by_hand, rtol=1e-5)
