"""`gqa`: grouped-query attention (Ainslie et al. 2023): n_kv_heads key/value heads, each shared by a group of
n_heads / n_kv_heads query heads; n_kv_heads=1 is multi-query attention (Shazeer 2019). The cache holds only the
key/value heads, so it is smaller than `mha`'s by the group factor."""

import jax
import jax.numpy as jnp
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


@register_layer("gqa")
class GroupedQuery(AttentionLayer):
    example = {"n_kv_heads": 2}
    reduces_to_mha = {"n_kv_heads": 0}

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        if cfg.n_kv_heads < 0 or cfg.n_heads % cfg.kv_heads:
            raise ConfigError(
                f"model.n_kv_heads={cfg.n_kv_heads} does not divide model.n_heads={cfg.n_heads}; "
                "choose a divisor (1 = multi-query)"
            )

    @classmethod
    def cache_shapes(cls, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        return {"k": (cfg.kv_heads, cfg.head_dim), "v": (cfg.kv_heads, cfg.head_dim)}

    matmul_formula = "2 d_model d_head (n_heads + n_kv_heads)"

    @classmethod
    def matmul_weights(cls, cfg: ModelConfig) -> int:
        # Queries and output at every head; keys and values at the key/value heads only.
        return 2 * cfg.d_model * cfg.head_dim * (cfg.n_heads + cfg.kv_heads)

    @staticmethod
    def mha_params(params: dict) -> dict:
        # Axes counted from the end, so stacked parameters (a leading layers axis) map alike.
        out = {k: v for k, v in params.items() if k not in ("w_q", "w_kv", "b_q", "b_kv")}
        out["w_qkv"] = jnp.concatenate([jnp.expand_dims(params["w_q"], -3), params["w_kv"]], axis=-3)
        if "b_q" in params:
            out["b_qkv"] = jnp.concatenate([jnp.expand_dims(params["b_q"], -3), params["b_kv"]], axis=-3)
        return out

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        H, G, K, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.d_model
        self.w_q = param(rngs, (D, H, K), ("embed", "heads", "kv"), cfg, cfg.init_std)
        self.w_kv = param(rngs, (D, 2, G, K), ("embed", "qkv", "kv_heads", "kv"), cfg, cfg.init_std)
        self.b_q = param(rngs, (H, K), ("heads", "kv"), cfg) if cfg.bias else None
        self.b_kv = param(rngs, (2, G, K), ("qkv", "kv_heads", "kv"), cfg) if cfg.bias else None
        self.init_output(cfg, rngs)
        self.q_norm = HeadNorm(cfg) if cfg.qk_norm else None
        self.k_norm = HeadNorm(cfg) if cfg.qk_norm else None

    def __call__(
        self, x_BTD: jax.Array, positions_BT: jax.Array, mask: AttentionMask, cache: LayerCache | None, layer_index
    ) -> tuple[jax.Array, LayerCache | None]:
        dtype = x_BTD.dtype
        q_BHTK = project_to_heads(x_BTD, self.w_q[...].astype(dtype), "dhk->bhtk")
        kv_2BGTK = project_to_heads(x_BTD, self.w_kv[...].astype(dtype), "dcgk->cbgtk")
        if self.b_q is not None:
            q_BHTK = q_BHTK + self.b_q[...].astype(dtype)[:, None]
            kv_2BGTK = kv_2BGTK + self.b_kv[...].astype(dtype)[:, None, :, None]
        k_BGTK, v_BGTK = kv_2BGTK[0], kv_2BGTK[1]
        if self.q_norm is not None:
            q_BHTK, k_BGTK = self.q_norm(q_BHTK), self.k_norm(k_BGTK)
        q_BHTK, k_BGTK, mask = apply_position(self.cfg, q_BHTK, k_BGTK, positions_BT, mask)
        kv, cache = self.through_cache({"k": k_BGTK, "v": v_BGTK}, cache, dtype)
        out_BHTK = self.attend(q_BHTK, kv["k"], kv["v"], self.layer_mask(mask, layer_index))
        return self.project_out(out_BHTK), cache

    def layer_mask(self, mask: AttentionMask, layer_index: jax.Array) -> AttentionMask:
        return mask
