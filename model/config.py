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
ParametrizationName = Literal["standard", "mup"]
NORMS: tuple[str, ...] = get_args(NormName)
POSITIONS: tuple[str, ...] = get_args(PositionName)
MLPS: tuple[str, ...] = get_args(MlpName)
DTYPES: tuple[str, ...] = get_args(DtypeName)
REMATS: tuple[str, ...] = get_args(RematName)
PARAMETRIZATIONS: tuple[str, ...] = get_args(ParametrizationName)


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
    # mup (model/mup.py): init, Adam LRs, attention and logits scaled with d_model / mup_base_width, so that the
    # hyper-parameters tuned at the base width carry over to other widths; at the base width it is `standard`.
    parametrization: ParametrizationName = "standard"
    mup_base_width: int = 0  # mup: the d_model the hyper-parameters were tuned at
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

    @property
    def width_mult(self) -> float:
        """muP's m = d_model / mup_base_width; 1 under the standard parametrization."""
        return self.d_model / self.mup_base_width if self.parametrization == "mup" else 1.0

    @property
    def query_mult(self) -> float:
        """The factor on the queries over the kernels' 1/sqrt(d_head): muP's logits are q.k sqrt(d_head at the base
        width) / d_head. A d_head given explicitly stays fixed as heads are added, so its scale does not change."""
        return self.width_mult**-0.5 if self.parametrization == "mup" and not self.d_head else 1.0

    @property
    def output_mult(self) -> float:
        """The factor on the logits: muP's 1 / m."""
        return 1.0 / self.width_mult if self.parametrization == "mup" else 1.0

    def validate(self) -> "ModelConfig":
        """The checks that need no registry; `attention.check` then checks the attention variants."""
        for name, value, allowed in (
            ("norm", self.norm, NORMS),
            ("position", self.position, POSITIONS),
            ("mlp", self.mlp, MLPS),
            ("dtype", self.dtype, DTYPES),
            ("param_dtype", self.param_dtype, DTYPES),
            ("remat", self.remat, REMATS),
            ("parametrization", self.parametrization, PARAMETRIZATIONS),
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
        if self.parametrization == "mup":
            self._validate_mup()
        return self

    def _validate_mup(self) -> None:
        if self.mup_base_width <= 0:
            raise ConfigError(
                "model.parametrization=mup needs the width its hyper-parameters were tuned at: set "
                f"model.mup_base_width=W, e.g. {self.d_model}"
            )
        # One width multiplier serves every hidden matrix only if every hidden width follows d_model.
        for name in ("d_mlp", "mla_latent_dim"):
            if getattr(self, name):
                raise ConfigError(
                    f"model.parametrization=mup scales every hidden width with d_model, but model.{name}="
                    f"{getattr(self, name)} is fixed; set model.{name}=0 (derived from d_model)"
                )
