"""The one table that maps Hugging Face GPT-2 tensors to meshlm parameters and back.

HF names are those of `GPT2Model` (a `transformer.` prefix, as GPT2LMHeadModel saves them, is stripped on reading).
GPT-2's `Conv1D` stores weights as (in, out), as meshlm does, so every entry is a reshape: c_attn's output columns
are [q | k | v], each split into heads, which is meshlm's (D, 3, H, K). A parameter renamed in model/ means one
row changed here.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError

# The model options this layout describes; anything else has tensors GPT-2 does not have.
GPT2_OPTIONS = dict(
    norm="layernorm", position="learned", mlp="gelu", bias=True, qk_norm=False, parametrization="standard"
)

Reshape = Callable[[np.ndarray, ModelConfig], np.ndarray]


def _same(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return x


@dataclasses.dataclass(frozen=True)
class Entry:
    hf: str  # "h.{i}...." for per-layer tensors
    meshlm: tuple[str, ...]  # path in the parameter dict; per-layer ones carry a leading layers axis
    to_meshlm: Reshape = _same  # one HF tensor (one layer's) -> meshlm's shape
    to_hf: Reshape = _same

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf


TABLE = (
    Entry("wte.weight", ("embed",)),
    Entry("wpe.weight", ("pos_embed",)),
    Entry("h.{i}.ln_1.weight", ("blocks", "attn_norm", "scale")),
    Entry("h.{i}.ln_1.bias", ("blocks", "attn_norm", "bias")),
    Entry(
        "h.{i}.attn.c_attn.weight",
        ("blocks", "attn", "w_qkv"),
        to_meshlm=lambda x, c: x.reshape(c.d_model, 3, c.n_heads, c.head_dim),
        to_hf=lambda x, c: x.reshape(c.d_model, 3 * c.n_heads * c.head_dim),
    ),
    Entry(
        "h.{i}.attn.c_attn.bias",
        ("blocks", "attn", "b_qkv"),
        to_meshlm=lambda x, c: x.reshape(3, c.n_heads, c.head_dim),
        to_hf=lambda x, c: x.reshape(3 * c.n_heads * c.head_dim),
    ),
    Entry(
        "h.{i}.attn.c_proj.weight",
        ("blocks", "attn", "w_out"),
        to_meshlm=lambda x, c: x.reshape(c.n_heads, c.head_dim, c.d_model),
        to_hf=lambda x, c: x.reshape(c.n_heads * c.head_dim, c.d_model),
    ),
    Entry("h.{i}.attn.c_proj.bias", ("blocks", "attn", "b_out")),
    Entry("h.{i}.ln_2.weight", ("blocks", "mlp_norm", "scale")),
    Entry("h.{i}.ln_2.bias", ("blocks", "mlp_norm", "bias")),
    Entry("h.{i}.mlp.c_fc.weight", ("blocks", "mlp", "w_in")),
    Entry("h.{i}.mlp.c_fc.bias", ("blocks", "mlp", "b_in")),
    Entry("h.{i}.mlp.c_proj.weight", ("blocks", "mlp", "w_out")),
    Entry("h.{i}.mlp.c_proj.bias", ("blocks", "mlp", "b_out")),
    Entry("ln_f.weight", ("final_norm", "scale")),
    Entry("ln_f.bias", ("final_norm", "bias")),
)
# An untied output head: GPT2LMHeadModel's lm_head (out, in) is meshlm's unembed (D, V) transposed.
LM_HEAD = Entry("lm_head.weight", ("unembed",), to_meshlm=lambda x, c: x.T, to_hf=lambda x, c: x.T)

# Buffers some GPT-2 checkpoints carry (the causal mask): not parameters.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def check_gpt2_shaped(cfg: ModelConfig) -> None:
    wrong = {k: getattr(cfg, k) for k, v in GPT2_OPTIONS.items() if getattr(cfg, k) != v}
    if wrong or cfg.n_heads * cfg.head_dim != cfg.d_model:
        detail = ", ".join(f"model.{k}={v}" for k, v in wrong.items()) or f"model.d_head={cfg.d_head}"
        raise ConfigError(
            f"this run's model is not GPT-2-shaped ({detail}); only layernorm, learned positions, gelu, biases, "
            "no qk-norm, the standard parametrization and d_model = n_heads x d_head convert to the GPT-2 layout "
            "(docs/interop.md)"
        )


def entries(cfg: ModelConfig) -> tuple[Entry, ...]:
    return TABLE + (() if cfg.tie_embeddings else (LM_HEAD,))


def to_meshlm(hf: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """HF tensors (prefix stripped) -> meshlm's nested parameter dict, per-layer tensors stacked."""
    params: dict = {}
    for entry in entries(cfg):
        if entry.per_layer:
            value = np.stack([entry.to_meshlm(_get(hf, entry.hf.format(i=i)), cfg) for i in range(cfg.n_layers)])
        else:
            value = entry.to_meshlm(_get(hf, entry.hf), cfg)
        _set(params, entry.meshlm, value)
    known = {e.hf.format(i=i) for e in entries(cfg) for i in range(cfg.n_layers)}
    extra = sorted(k for k in hf if k not in known and not k.endswith(IGNORED_SUFFIXES) and k != LM_HEAD.hf)
    if extra:
        raise ConfigError(f"the checkpoint has tensors GPT-2's layout does not: {', '.join(extra[:5])}")
    return params


def to_hf(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """meshlm's parameter dict -> HF GPT-2 tensors, named as GPT2Model names them."""
    check_gpt2_shaped(cfg)
    out = {}
    for entry in entries(cfg):
        value = np.asarray(_walk(params, entry.meshlm))
        if entry.per_layer:
            for i in range(cfg.n_layers):
                out[entry.hf.format(i=i)] = np.ascontiguousarray(entry.to_hf(value[i], cfg))
        else:
            out[entry.hf] = np.ascontiguousarray(entry.to_hf(value, cfg))
    return out


def _get(hf: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in hf:
        raise ConfigError(f"the checkpoint has no tensor {name!r}; is it a GPT-2 checkpoint of this config.json?")
    return hf[name]


def _walk(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
