"""A Hugging Face model directory on disk: config.json <-> ModelConfig, weight files <-> numpy tensors.

Weights are read from safetensors with its numpy API (no torch needed); a PyTorch `.bin` is read only through
`torch.load(weights_only=True)`, which refuses pickled code, and only when torch is installed.
"""

import json

import numpy as np
import safetensors
import safetensors.numpy
from etils import epath

from meshlm.experiments.convert.gpt2_layout import GPT2_OPTIONS, check_gpt2_shaped
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.training.atomic import write_atomic

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
# GPT-2's MLP activation under its transformers names: all the tanh approximation that meshlm's gelu computes.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def model_config(hf: dict) -> ModelConfig:
    """A GPT-2 config.json -> meshlm's ModelConfig; options GPT-2's layout cannot express are refused."""
    if hf.get("model_type") != "gpt2":
        raise ConfigError(
            f"config.json has model_type={hf.get('model_type')!r}; only GPT-2-layout checkpoints (model_type gpt2) "
            "convert (docs/interop.md says what other layouts need)"
        )
    unsupported = {
        "activation_function": hf.get("activation_function", "gelu_new") not in TANH_GELUS,
        "scale_attn_weights": not hf.get("scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"config.json sets {', '.join(f'{k}={hf.get(k)!r}' for k in bad)}, which meshlm lacks")
    d_model = hf["n_embd"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        n_ctx=hf["n_positions"],
        n_layers=hf["n_layer"],
        d_model=d_model,
        n_heads=hf["n_head"],
        d_mlp=0 if hf.get("n_inner") in (None, 4 * d_model) else hf["n_inner"],
        tie_embeddings=hf.get("tie_word_embeddings", True),
        dropout=hf.get("resid_pdrop", 0.1),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        init_std=hf.get("initializer_range", 0.02),
        **GPT2_OPTIONS,
    ).validate()


def gpt2_config(cfg: ModelConfig, eos_id: int, bos_id: int) -> dict:
    """meshlm's ModelConfig -> a config.json that transformers reads as the same GPT2LMHeadModel."""
    check_gpt2_shaped(cfg)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_ctx,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_mlp or None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": 0.0,  # meshlm has no dropout on attention probabilities
        "layer_norm_epsilon": cfg.norm_eps,
        "initializer_range": cfg.init_std,
        "scale_attn_weights": True,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def read_config(directory: epath.PathLike) -> dict:
    path = epath.Path(directory) / "config.json"
    if not path.exists():
        raise ConfigError(f"{directory} has no config.json; point at a Hugging Face model directory")
    return json.loads(path.read_text())


def read_tensors(directory: epath.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as float32 numpy, names without GPT2LMHeadModel's `transformer.` prefix."""
    directory = epath.Path(directory)
    if (directory / SAFETENSORS).exists():
        tensors = _read_safetensors([directory / SAFETENSORS])
    elif (directory / SAFETENSORS_INDEX).exists():
        shards = sorted(set(json.loads((directory / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
        tensors = _read_safetensors([directory / s for s in shards])
    elif (directory / TORCH_BIN).exists():
        tensors = _read_torch_bin(directory / TORCH_BIN)
    else:
        raise ConfigError(f"{directory} has no {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN}")
    return {k.removeprefix("transformer."): v.astype(np.float32) for k, v in tensors.items()}


def _read_safetensors(paths: list[epath.Path]) -> dict[str, np.ndarray]:
    out = {}
    for path in paths:
        try:
            out.update(safetensors.numpy.load(path.read_bytes()))
        except (safetensors.SafetensorError, TypeError) as e:
            raise ConfigError(f"cannot read {path} with safetensors' numpy API ({e}); save it in float32") from None
    return out


def _read_torch_bin(path: epath.Path) -> dict[str, np.ndarray]:
    try:
        import torch  # deferred: only a .bin checkpoint needs torch
    except ImportError:
        raise ConfigError(
            f"{path} is a PyTorch pickle; install torch (pip install 'meshlm[torch]') or save it as safetensors"
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # refuses anything but tensors
    except Exception as e:  # an UnpicklingError wrapped in whatever torch raises
        raise ConfigError(
            f"{path} holds more than tensors ({type(e).__name__}); refused: save it as safetensors"
        ) from None
    return {k: v.float().numpy() for k, v in state.items()}


def write_tensors(directory: epath.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """model.safetensors, written atomically, named as GPT2LMHeadModel saves them (`transformer.` prefix)."""
    named = {k if k == "lm_head.weight" else f"transformer.{k}": v for k, v in tensors.items()}
    write_atomic(epath.Path(directory) / SAFETENSORS, safetensors.numpy.save(named, metadata={"format": "pt"}))


def write_json(path: epath.Path, obj: dict) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
