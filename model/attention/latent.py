"""`mla`: multi-head latent attention (DeepSeek-V2, DeepSeek-AI 2024). Keys and values of every head are
up-projected from one shared low-rank latent (mla_latent_dim wide); with rotary positions a small decoupled key
(mla_rope_dim wide, shared by the heads) carries the rotation, since a rotated key cannot be rebuilt from the
latent. The cache holds the latent and that key: mla_latent_dim + mla_rope_dim numbers per token and layer
instead of mha's 2 x n_heads x head_dim. Keys and values are rebuilt from the cache for every step (the paper's
absorption of the up-projections into the queries and the output is a decode-speed optimisation left for later).
Queries are projected at full rank, as in DeepSeek-V2-Lite; there are no biases."""

import jax
import jax.numpy as jnp
from flax import nnx

from meshlm.model.attention.kv_cache import LayerCache
from meshlm.model.attention.layer_base import AttentionLayer, project_to_heads
from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.position import rotary
from meshlm.model.attention.registry import register_layer
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError
from meshlm.model.param import param


@register_layer("mla")
class LatentAttention(AttentionLayer):
    example = {"mla_latent_dim": 16, "mla_rope_dim": 4, "qk_norm": False}

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        if cfg.qk_norm:
            raise ConfigError("model.attention_layer=mla normalises its latent instead; set model.qk_norm=false")
        R = cfg.latent_rope_dim
        if cfg.position == "rotary" and (R % 2 or not 0 < R < cfg.head_dim):
            raise ConfigError(
                f"model.mla_rope_dim={R} must be even and below the head dim {cfg.head_dim}; change model.mla_rope_dim"
            )

    @classmethod
    def cache_shapes(cls, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        shapes = {"latent": (1, cfg.latent_dim)}
        if cfg.latent_rope_dim:
            shapes["k_rope"] = (1, cfg.latent_rope_dim)
        return shapes

    matmul_formula = "2 d_model d_attn + d_model (latent + rope) + latent n_heads (2 d_head - rope)"

    @classmethod
    def matmul_weights(cls, cfg: ModelConfig) -> int:
        H, K, D, C, R = cfg.n_heads, cfg.head_dim, cfg.d_model, cfg.latent_dim, cfg.latent_rope_dim
        # Queries and output at full rank, the latent and the rotary key from x; in training every token's keys
        # and values are rebuilt from its latent once, so the up-projections count once per token too.
        return 2 * D * H * K + D * (C + R) + C * H * (K - R) + C * H * K

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        H, K, D, C, R = cfg.n_heads, cfg.head_dim, cfg.d_model, cfg.latent_dim, cfg.latent_rope_dim
        self.w_q = param(rngs, (D, H, K), ("embed", "heads", "kv"), cfg, cfg.init_std)
        self.w_down = param(rngs, (D, C), ("embed", "latent"), cfg, cfg.init_std)
        self.latent_scale = nnx.Param(jnp.ones((C,), cfg.param_dtype), axes=("latent",))
        self.w_k_rope = param(rngs, (D, R), ("embed", "kv"), cfg, cfg.init_std) if R else None
        self.w_up_k = param(rngs, (C, H, K - R), ("latent", "heads", "kv"), cfg, cfg.init_std)
        self.w_up_v = param(rngs, (C, H, K), ("latent", "heads", "kv"), cfg, cfg.init_std)
        self.init_output(cfg, rngs)

    def __call__(
        self, x_BTD: jax.Array, positions_BT: jax.Array, mask: AttentionMask, cache: LayerCache | None, layer_index
    ) -> tuple[jax.Array, LayerCache | None]:
        dtype, R = x_BTD.dtype, self.cfg.latent_rope_dim
        q_BHTK = project_to_heads(x_BTD, self.w_q[...].astype(dtype), "dhk->bhtk")
        new = {"latent": self._latent_BTC(x_BTD)[:, None]}
        if R:
            q_rope_BHTR = rotary(q_BHTK[..., -R:], positions_BT, self.cfg.rope_theta)
            q_BHTK = jnp.concatenate([q_BHTK[..., :-R], q_rope_BHTR], axis=-1)
            k_rope_B1TR = (x_BTD @ self.w_k_rope[...].astype(dtype))[:, None]
            new["k_rope"] = rotary(k_rope_B1TR, positions_BT, self.cfg.rope_theta)
        if self.cfg.position == "alibi":
            mask = mask.with_alibi()
        kv, cache = self.through_cache(new, cache, dtype)
        latent_BSC = kv["latent"][:, 0]
        k_BHSK = jnp.einsum("bsc,chk->bhsk", latent_BSC, self.w_up_k[...].astype(dtype))
        if R:
            k_rope_BHSR = jnp.broadcast_to(kv["k_rope"], k_BHSK.shape[:3] + (R,))
            k_BHSK = jnp.concatenate([k_BHSK, k_rope_BHSR], axis=-1)
        v_BHSK = jnp.einsum("bsc,chk->bhsk", latent_BSC, self.w_up_v[...].astype(dtype))
        return self.project_out(self.attend(q_BHTK, k_BHSK, v_BHSK, mask)), cache

    def _latent_BTC(self, x_BTD: jax.Array) -> jax.Array:
        """The down-projection, RMS-normalised (DeepSeek-V2 normalises the compressed latent)."""
        c = (x_BTD @ self.w_down[...].astype(x_BTD.dtype)).astype(jnp.float32)
        c = c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + self.cfg.norm_eps) * self.latent_scale[...]
        return c.astype(x_BTD.dtype)
