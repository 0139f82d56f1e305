"""The model's typed configuration: every architectural option lives here."""

import dataclasses
from typing import Literal

from meshlm.model import attention
from meshlm.model.errors import ConfigError

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rotary", "alibi")
MLPS = ("gelu", "swiglu")
DTYPES = ("float32", "bfloat16")
REMATS = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 128 so the head matmul tiles well
    n_ctx: int = 2048
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_head: int = 0  # 0 = d_model // n_heads
    d_mlp: int = 0  # 0 = 4 * d_model
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    position: Literal["learned", "rotary", "alibi"] = "learned"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    bias: bool = True
    tie_embeddings: bool = True
    qk_norm: bool = False
    dropout: float = 0.0
    attention: str = "reference"  # the kernel: a registered name, "auto" (per platform), or a module's import path
    attention_layer: str = "mha"  # projections and cache: a registered name or a module's import path
    n_kv_heads: int = 0  # key/value heads of grouped-query layers; 0 = n_heads, 1 = multi-query
    attention_window: int = 0  # sliding_window's width, gpt3_sparse's band (tokens seen, the query included)
    attention_pattern: str = "dense,local"  # gpt3_sparse: the kinds of consecutive layers, repeated over the stack
    mla_latent_dim: int = 0  # mla's shared key/value latent; 0 = 4 x head_dim (DeepSeek-V2's 512 = 4 x 128)
    mla_rope_dim: int = 0  # mla's decoupled rotary key width; 0 = head_dim / 2 with rotary positions
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    remat: Literal["none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"] = "none"
    # False: one traced copy of the block per layer instead of a scan. Compile time grows with depth, but XLA keeps
    # each layer's saved activations apart instead of zero-filling and writing stacked [n_layers, ...] buffers.
    scan_layers: bool = True
    init_std: float = 0.02
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def latent_dim(self) -> int:
        return self.mla_latent_dim or 4 * self.head_dim

    @property
    def latent_rope_dim(self) -> int:
        if self.position != "rotary":
            return 0
        return self.mla_rope_dim or self.head_dim // 2

    @property
    def mlp_dim(self) -> int:
        return self.d_mlp or 4 * self.d_model

    def validate(self) -> "ModelConfig":
        for name, value, allowed in (
            ("norm", self.norm, NORMS),
            ("position", self.position, POSITIONS),
            ("mlp", self.mlp, MLPS),
            ("dtype", self.dtype, DTYPES),
            ("param_dtype", self.param_dtype, DTYPES),
            ("remat", self.remat, REMATS),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"model.{name}={value!r} is not one of {', '.join(allowed)}; set --set model.{name}=<one of them>"
                )
        attention.kernel(self.attention)
        attention.layer(self.attention_layer)
        if self.position == "alibi" and not attention.takes_bias(self.attention):
            raise ConfigError(
                f"model.attention={self.attention} has no logits to add ALiBi's bias to; "
                "choose another model.position or model.attention"
            )
        for name in ("vocab_size", "n_ctx", "n_layers", "d_model", "n_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be positive")
        if not self.d_head and self.d_model % self.n_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} does not divide model.d_model={self.d_model}; "
                f"choose n_heads dividing {self.d_model} or set model.d_head explicitly"
            )
        if self.position == "rotary" and self.head_dim % 2:
            raise ConfigError(
                f"rotary positions need an even head dim, got {self.head_dim}; change model.d_head or model.n_heads"
            )
        attention.layer(self.attention_layer).validate(self)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        return self
