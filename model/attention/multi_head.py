"""`mha`: multi-head attention as in GPT-2/3, one fused q/k/v projection; the cache holds every head's keys and
values."""

import jax
from flax import nnx

from meshlm.model.attention.kv_cache import LayerCache
from meshlm.model.attention.layer_base import AttentionLayer, project_to_heads
from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.position import apply_position
from meshlm.model.attention.qk_norm import HeadNorm
from meshlm.model.attention.registry import register_layer
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.model.param import param


@register_layer("mha")
class MultiHead(AttentionLayer):
    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        if cfg.n_kv_heads not in (0, cfg.n_heads):
            raise ConfigError(
                f"model.n_kv_heads={cfg.n_kv_heads} needs a grouped-query layer; set model.attention_layer=gqa"
            )

    @classmethod
    def cache_shapes(cls, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        return {"k": (cfg.n_heads, cfg.head_dim), "v": (cfg.n_heads, cfg.head_dim)}

    matmul_formula = "4 d_model d_attn"

    @classmethod
    def matmul_weights(cls, cfg: ModelConfig) -> int:
        return 4 * cfg.d_model * cfg.n_heads * cfg.head_dim  # queries, keys, values, output

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        H, K, D = cfg.n_heads, cfg.head_dim, cfg.d_model
        self.w_qkv = param(rngs, (D, 3, H, K), ("embed", "qkv", "heads", "kv"), cfg, cfg.init_std)
        self.b_qkv = param(rngs, (3, H, K), ("qkv", "heads", "kv"), cfg) if cfg.bias else None
        self.init_output(cfg, rngs)
        self.q_norm = HeadNorm(cfg) if cfg.qk_norm else None
        self.k_norm = HeadNorm(cfg) if cfg.qk_norm else None

    def __call__(
        self, x_BTD: jax.Array, positions_BT: jax.Array, mask: AttentionMask, cache: LayerCache | None, layer_index
    ) -> tuple[jax.Array, LayerCache | None]:
        dtype = x_BTD.dtype
        qkv_3BHTK = project_to_heads(x_BTD, self.w_qkv[...].astype(dtype), "dchk->cbhtk")
        if self.b_qkv is not None:
            qkv_3BHTK = qkv_3BHTK + self.b_qkv[...].astype(dtype)[:, None, :, None]
        q_BHTK, k_BHTK, v_BHTK = qkv_3BHTK[0], qkv_3BHTK[1], qkv_3BHTK[2]
        if self.q_norm is not None:
            q_BHTK, k_BHTK = self.q_norm(q_BHTK), self.k_norm(k_BHTK)
        q_BHTK, k_BHTK, mask = apply_position(self.cfg, q_BHTK, k_BHTK, positions_BT, mask)
        kv, cache = self.through_cache({"k": k_BHTK, "v": v_BHTK}, cache, dtype)
        out_BHTK = self.attend(q_BHTK, kv["k"], kv["v"], self.layer_mask(mask, layer_index))
        return self.project_out(out_BHTK), cache

    def layer_mask(self, mask: AttentionMask, layer_index: jax.Array) -> AttentionMask:
        """The mask of this layer of the stack (a sparse pattern narrows some layers)."""
        return mask
