"""The model's typed configuration: every architectural option lives here."""

import dataclasses
from typing import Literal, get_args

from meshlm.model.errors import ConfigError

# Each option list once: the field types (which --set and saved configs are checked against) and the tuples that
# validate, the model code and the CLI help read.
NormName = Literal["layernorm", "rmsnorm"]
PositionName = Literal["learned", "rotary", "alibi"]
MlpName = Literal["gelu", "swiglu"]
DtypeName = Literal["float32", "bfloat16"]
RematName = Literal["none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"]
NORMS: tuple[str, ...] = get_args(NormName)
POSITIONS: tuple[str, ...] = get_args(PositionName)
MLPS: tuple[str, ...] = get_args(MlpName)
DTYPES: tuple[str, ...] = get_args(DtypeName)
REMATS: tuple[str, ...] = get_args(RematName)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 128 so the head matmul tiles well
    n_ctx: int = 2048
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_head: int = 0  # 0 = d_model // n_heads
    d_mlp: int = 0  # 0 = 4 * d_model
    norm: NormName = "layernorm"
    position: PositionName = "learned"
    mlp: MlpName = "gelu"
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
    dtype: DtypeName = "float32"  # compute dtype
    param_dtype: DtypeName = "float32"
    remat: RematName = "none"
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
        """The checks that need no registry; `attention.check` then checks the attention variants."""
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
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        return self
