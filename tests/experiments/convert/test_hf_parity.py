"""Against transformers: a random GPT2LMHeadModel saved to disk and converted gives transformers' logits (f32,
<= 1e-5, where f32 differences measure ~2e-6) and greedy tokens in meshlm, tokenizes as transformers does, and comes
back to HF exactly."""

import os

import numpy as np
import pytest

from meshlm.experiments.convert import export_hf, import_gpt2
from meshlm.model.errors import ConfigError
from meshlm.model.generate import SamplingConfig, generate
from meshlm.training.run_dir import load_run
from tests.experiments.convert import hf_dirs

pytestmark = pytest.mark.torch  # make test installs the torch extra and runs these; -m "not torch" leaves them out
VOCAB, CTX = 300, 64
torch = transformers = None  # imported by the hf_model fixture, so a run that deselects these never loads torch


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random GPT-2 saved by transformers, and its conversion."""
    global torch, transformers
    import torch
    import transformers

    os.environ["HF_HUB_OFFLINE"] = "1"  # local directories only: nothing may reach the hub
    root = tmp_path_factory.mktemp("hf_parity")
    model = hf_dirs.save_random_torch_gpt2(root / "hf", torch, transformers, vocab=VOCAB, n_ctx=CTX)
    import_gpt2.convert(root / "hf", root / "run")
    return root, model


def test_logits_match_transformers(hf_model):
    root, model = hf_model
    run = load_run(root / "run")
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=(3, CTX))
    with torch.no_grad():
        expected = model(torch.tensor(tokens)).logits.numpy()
    got = np.asarray(run.model(tokens)[0])
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-5


def test_greedy_generation_matches_transformers(hf_model):
    root, model = hf_model
    run = load_run(root / "run")
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, VOCAB, size=10)]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    expected = out[0, len(prompt) :].tolist()
    got = generate(run.model, [prompt], SamplingConfig(max_new_tokens=24, temperature=0.0))[0]
    assert got == expected


def test_tokenizes_as_transformers(hf_model):
    root, _ = hf_model
    run = load_run(root / "run")
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(root / "hf" / "tokenizer.json"))
    for text in ["the king said hello.", " leading space", "two  spaces\nnewline", "snow ☃ 🙂", "<|endoftext|>x"]:
        assert run.tokenizer.encode(text) == reference(text, add_special_tokens=False)["input_ids"], text
        assert run.tokenizer.encode(text) == reference.encode(text), text  # GPT-2 adds no special tokens either way


def test_round_trip_to_hf_is_exact(hf_model, tmp_path):
    root, model = hf_model
    export_hf.convert(root / "run", tmp_path / "back")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    original, returned = model.state_dict(), back.state_dict()
    assert sorted(original) == sorted(returned)
    for name, value in original.items():
        assert torch.equal(value, returned[name]), name
    tokens = torch.tensor(np.random.default_rng(2).integers(0, VOCAB, size=(2, 16)))
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, back(tokens).logits)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer("the queen")["input_ids"] == load_run(root / "run").tokenizer.encode("the queen")


class _NotATensor:
    pass


def test_torch_bin_loads_only_tensors(hf_model, tmp_path):
    root, model = hf_model
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / "bin" / name).write_bytes((root / "hf" / name).read_bytes())
    import_gpt2.convert(tmp_path / "bin", tmp_path / "run")
    expected = load_run(root / "run").params["blocks"]["attn"]["w_qkv"]
    np.testing.assert_array_equal(load_run(tmp_path / "run").params["blocks"]["attn"]["w_qkv"], expected)

    (tmp_path / "evil").mkdir()
    torch.save({"x": _NotATensor()}, tmp_path / "evil" / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / "evil" / name).write_bytes((root / "hf" / name).read_bytes())
    with pytest.raises(ConfigError, match="refused"):
        import_gpt2.convert(tmp_path / "evil", tmp_path / "run2")
