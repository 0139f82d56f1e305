"""Hugging Face GPT-2 directories written here from random tensors (no torch, no hub): names and shapes as
GPT2LMHeadModel saves them, spelled out independently of meshlm's layout table."""

import json

import numpy as np
import safetensors.numpy

from tests.training import hf_tokenizer

CONFIG = dict(
    model_type="gpt2",
    architectures=["GPT2LMHeadModel"],
    vocab_size=300,
    n_positions=32,
    n_embd=32,
    n_layer=2,
    n_head=4,
    n_inner=None,
    activation_function="gelu_new",
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    layer_norm_epsilon=1e-5,
    initializer_range=0.02,
    tie_word_embeddings=True,
)


def gpt2_tensors(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    V, P, D, L = cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"]
    shapes = {"transformer.wte.weight": (V, D), "transformer.wpe.weight": (P, D)}
    for i in range(L):
        h = f"transformer.h.{i}."
        shapes.update(
            {
                h + "ln_1.weight": (D,),
                h + "ln_1.bias": (D,),
                h + "attn.c_attn.weight": (D, 3 * D),  # Conv1D: (in, out), out = [q | k | v]
                h + "attn.c_attn.bias": (3 * D,),
                h + "attn.c_proj.weight": (D, D),
                h + "attn.c_proj.bias": (D,),
                h + "ln_2.weight": (D,),
                h + "ln_2.bias": (D,),
                h + "mlp.c_fc.weight": (D, 4 * D),
                h + "mlp.c_fc.bias": (4 * D,),
                h + "mlp.c_proj.weight": (4 * D, D),
                h + "mlp.c_proj.bias": (D,),
            }
        )
    shapes.update({"transformer.ln_f.weight": (D,), "transformer.ln_f.bias": (D,)})
    tensors = {k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    for k in tensors:
        if ".ln_" in k and k.endswith("weight"):
            tensors[k] += 1.0
    return tensors


def write(directory, cfg: dict = CONFIG, tensors: dict | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """config.json, model.safetensors and tokenizer.json in `directory`; returns the tensors."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = gpt2_tensors(cfg, seed) if tensors is None else tensors
    (directory / "config.json").write_text(json.dumps(cfg))
    (directory / "model.safetensors").write_bytes(safetensors.numpy.save(tensors, metadata={"format": "pt"}))
    (directory / "tokenizer.json").write_text(hf_tokenizer.gpt2_style(cfg["vocab_size"]).to_str())
    return tensors


def save_random_torch_gpt2(directory, torch, transformers, vocab: int = 300, n_ctx: int = 64):
    """A randomly initialised GPT2LMHeadModel, every tensor perturbed (so norms and biases are not trivially 1 and
    0), saved by transformers with this module's tokenizer.json beside it; returns the model."""
    torch.manual_seed(0)
    eos = hf_tokenizer.gpt2_style(vocab).token_to_id(hf_tokenizer.EOS)
    config = transformers.GPT2Config(
        vocab_size=vocab,
        n_positions=n_ctx,
        n_embd=64,
        n_layer=2,
        n_head=4,
        initializer_range=0.1,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(directory)
    (directory / "tokenizer.json").write_text(hf_tokenizer.gpt2_style(vocab).to_str())
    return model
