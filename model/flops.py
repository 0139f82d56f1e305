"""Parameter counts and training FLOPs per token, from shapes alone (nothing allocated)."""

import dataclasses
import math

import jax
from flax import nnx

from meshlm.model import attention
from meshlm.model.config import ModelConfig
from meshlm.model.transformer import abstract_model


@dataclasses.dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int  # token and position embeddings (the tied head shares the token table)

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def count_params(cfg: ModelConfig) -> ParamCount:
    abstract = abstract_model(cfg)
    params = nnx.state(abstract, nnx.Param)
    total = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    embedding = cfg.vocab_size * cfg.d_model + (cfg.n_ctx * cfg.d_model if cfg.position == "learned" else 0)
    return ParamCount(total, embedding)


@dataclasses.dataclass(frozen=True)
class FlopsPerToken:
    """Training FLOPs per token = 3 x forward (backward costs twice the forward), as in PaLM (Chowdhery et al.
    2022, App. B)."""

    matmul: float  # 6 x (weights every token multiplies: blocks and output head)
    attention: float  # 6 x 2 x n_layers x seq_len x d_attn: QK^T and AV, counted for the full (unmasked) square

    @property
    def total(self) -> float:
        return self.matmul + self.attention


ATTENTION_FORMULA = "6 x 2 x n_layers x seq_len x d_attn"


def matmul_formula(cfg: ModelConfig) -> str:
    """flops_per_token's matmul term as text, with the attention layer's own projection count."""
    projections = attention.layer(cfg.attention_layer).matmul_formula
    return f"6 x (n_layers x ({projections} + {3 if cfg.mlp == 'swiglu' else 2} d_model d_mlp) + d_model vocab)"


def formula(cfg: ModelConfig) -> str:
    return f"{matmul_formula(cfg)} + {ATTENTION_FORMULA}"


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> FlopsPerToken:
    T = seq_len or cfg.n_ctx
    D, L, F, A = cfg.d_model, cfg.n_layers, cfg.mlp_dim, cfg.n_heads * cfg.head_dim
    per_layer = attention.layer(cfg.attention_layer).matmul_weights(cfg) + (3 if cfg.mlp == "swiglu" else 2) * D * F
    matmul_weights = L * per_layer + D * cfg.vocab_size
    # A, not the key/value width: every query head scores and mixes all T keys and values, however few key/value
    # heads (gqa) or however narrow a latent (mla) they are built from.
    return FlopsPerToken(matmul=6.0 * matmul_weights, attention=6.0 * 2 * L * T * A)
