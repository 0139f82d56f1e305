"""meshlm convert without torch: HF GPT-2 tensors land where the layout says (checked by hand against GPT-2's
q|k|v column split), the run directory loads, fine-tunes from step 0, and exports back bit for bit."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from meshlm.experiments.cli import main
from meshlm.experiments.convert import export_hf, gpt2_layout, import_gpt2
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner
from meshlm.training import setup as setup_lib
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.run_dir import CHECKPOINTS, load_run
from meshlm.training.tokenizer import HFTokenizer
from meshlm.training.trainer import train
from tests.experiments.convert import hf_dirs

D, H, K = 32, 4, 8


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    tensors = hf_dirs.write(root / "hf")
    import_gpt2.convert(root / "hf", root / "run")
    return root, tensors


def test_tensors_land_where_gpt2_puts_them(converted):
    root, hf = converted
    run = load_run(root / "run")
    p = {k: np.asarray(v) for k, v in _flat(run.params).items()}
    assert run.step == 0 and isinstance(run.tokenizer, HFTokenizer)
    np.testing.assert_array_equal(p["embed"], hf["transformer.wte.weight"])
    np.testing.assert_array_equal(p["pos_embed"], hf["transformer.wpe.weight"])
    c_attn = hf["transformer.h.1.attn.c_attn.weight"]
    for which in range(3):  # GPT-2 splits c_attn's columns into q, k, v, then each into heads of K features
        for head in range(H):
            columns = c_attn[:, which * D + head * K : which * D + (head + 1) * K]
            np.testing.assert_array_equal(p["blocks/attn/w_qkv"][1, :, which, head, :], columns)
    c_proj = hf["transformer.h.0.attn.c_proj.weight"]  # its input rows are the heads' outputs, head-major
    np.testing.assert_array_equal(p["blocks/attn/w_out"][0, 2, 3], c_proj[2 * K + 3])
    np.testing.assert_array_equal(p["blocks/mlp/w_in"][1], hf["transformer.h.1.mlp.c_fc.weight"])
    np.testing.assert_array_equal(p["final_norm/bias"], hf["transformer.ln_f.bias"])
    cfg = run.config.model
    assert (cfg.vocab_size, cfg.n_ctx, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.tie_embeddings) == (
        300,
        32,
        2,
        32,
        4,
        True,
    )


def test_round_trip_back_to_hf_is_exact(converted):
    root, hf = converted
    export_hf.convert(root / "run", root / "back")
    back = safetensors.numpy.load((root / "back" / "model.safetensors").read_bytes())
    assert sorted(back) == sorted(hf)
    for name, value in hf.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    config = json.loads((root / "back" / "config.json").read_text())
    for key in ("model_type", "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon"):
        assert config[key] == hf_dirs.CONFIG[key], key
    assert (root / "back" / "tokenizer.json").read_bytes() == (root / "run" / "tokenizer.json").read_bytes()


def test_untied_head_round_trips(tmp_path):
    cfg = dict(hf_dirs.CONFIG, tie_word_embeddings=False)
    tensors = hf_dirs.gpt2_tensors(cfg)
    tensors["lm_head.weight"] = np.random.default_rng(1).standard_normal((300, D)).astype(np.float32)
    hf_dirs.write(tmp_path / "hf", cfg, tensors)
    import_gpt2.convert(tmp_path / "hf", tmp_path / "run")
    np.testing.assert_array_equal(np.asarray(load_run(tmp_path / "run").params["unembed"]), tensors["lm_head.weight"].T)
    export_hf.convert(tmp_path / "run", tmp_path / "back")
    back = safetensors.numpy.load((tmp_path / "back" / "model.safetensors").read_bytes())
    np.testing.assert_array_equal(back["lm_head.weight"], tensors["lm_head.weight"])


def test_step_zero_is_the_state_training_creates(converted):
    """The checkpoint a fine-tuning run resumes from holds what training's own setup creates for these weights: the
    same step, optimizer state (tree and values) and rng, so the run continues as one that had trained to here."""
    root, _ = converted
    run = load_run(root / "run")
    setup = setup_lib.build(run.config, Partitioner.build(MeshConfig(shape="data=1"), jax.devices()[:1]))
    checkpointer = Checkpointer(root / "run" / CHECKPOINTS, keep=1)
    saved, data_state = setup.restore_or_init(checkpointer)
    checkpointer.close()
    fresh = setup.init_state()
    expected = dataclasses.replace(fresh, params=jax.tree.map(np.asarray, run.params))
    assert data_state is None
    assert jax.tree.structure(saved) == jax.tree.structure(expected)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(saved), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_fine_tunes_from_step_zero(tmp_path):
    (tmp_path / "text").mkdir()
    for i in range(12):
        (tmp_path / "text" / f"{i}.txt").write_text(" ".join(["the king said hello world."] * (i + 3)))
    hf_dirs.write(tmp_path / "hf")
    overrides = [
        f"data.source=text:{tmp_path}/text/*.txt",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.steps=2",
        "train.batch_size=4",
        "train.eval_every=2",
        "train.eval_batches=1",
        "train.checkpoint_every=2",
        "train.optimizer.warmup_steps=1",
    ]
    import_gpt2.convert(tmp_path / "hf", tmp_path / "run", overrides)
    before = load_run(tmp_path / "run").params
    result = train(None, tmp_path / "run", progress=False, log=lambda *_: None)
    after = load_run(tmp_path / "run")
    assert result.final_step == 2 and after.step == 2
    assert not np.array_equal(np.asarray(before["embed"]), np.asarray(after.params["embed"]))
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("tokenizer")) == ["tokenizer.json"]


@pytest.mark.slow
def test_cli_convert_then_generate(tmp_path, capsys):
    hf_dirs.write(tmp_path / "hf")
    assert main(["convert", "hf-gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    args = ["generate", "--run-dir", str(tmp_path / "run"), "--prompt", "the king", "--temperature", "0"]
    assert main(args + ["--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    # Greedy decoding by hand, a full forward pass per token (no KV cache), from the converted weights on disk.
    run = load_run(tmp_path / "run")
    tok = run.tokenizer
    ids = [tok.eos_id] + tok.encode("the king")
    for _ in range(4):
        logits_V = np.asarray(run.model(jnp.asarray([ids]))[0][0, -1, : tok.vocab_size])
        if int(logits_V.argmax()) == tok.eos_id:
            break
        ids.append(int(logits_V.argmax()))
    new = ids[1 + len(tok.encode("the king")) :]
    assert new and printed == "the king" + tok.decode(new)
    assert main(["convert", "to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "back")]) == 0
    assert main(["convert", "hf-gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2


def test_errors_name_the_problem(tmp_path):
    hf_dirs.write(tmp_path / "llama", dict(hf_dirs.CONFIG, model_type="llama"))
    with pytest.raises(ConfigError, match="model_type='llama'"):
        import_gpt2.convert(tmp_path / "llama", tmp_path / "out")
    hf_dirs.write(tmp_path / "relu", dict(hf_dirs.CONFIG, activation_function="relu"))
    with pytest.raises(ConfigError, match="activation_function='relu'"):
        import_gpt2.convert(tmp_path / "relu", tmp_path / "out")
    tensors = hf_dirs.write(tmp_path / "extra")
    tensors["transformer.h.0.attn.q_norm.weight"] = np.ones(D, np.float32)
    hf_dirs.write(tmp_path / "extra", tensors=tensors)
    with pytest.raises(ConfigError, match="tensors GPT-2's layout does not"):
        import_gpt2.convert(tmp_path / "extra", tmp_path / "out")
    hf_dirs.write(tmp_path / "ok")
    with pytest.raises(ConfigError, match="parameter shapes"):
        import_gpt2.convert(tmp_path / "ok", tmp_path / "out", ["model.d_mlp=64"])
    (tmp_path / "ok" / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="tokenizer"):
        import_gpt2.convert(tmp_path / "ok", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(ConfigError, match="not GPT-2-shaped"):
        gpt2_layout.check_gpt2_shaped(ModelConfig(norm="rmsnorm"))


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
