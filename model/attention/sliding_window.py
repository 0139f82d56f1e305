"""`sliding_window`: each token sees itself and the attention_window - 1 tokens before it (Mistral-style local
attention), on grouped-query projections. The cache is a ring buffer of attention_window slots: it stops growing."""

import jax

from meshlm.model.attention.grouped_query import GroupedQuery
from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.registry import register_layer
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError


@register_layer("sliding_window")
class SlidingWindow(GroupedQuery):
    ring = True
    example = {"attention_window": 5, "n_kv_heads": 2}
    reduces_to_mha = {"attention_window": 1 << 20, "n_kv_heads": 0}  # a window longer than any sequence

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        super().validate(cfg)
        if cfg.attention_window <= 0:
            raise ConfigError("model.attention_layer=sliding_window needs model.attention_window=W (tokens), W > 0")

    @classmethod
    def cache_slots(cls, cfg: ModelConfig, length: int) -> int:
        return min(cfg.attention_window, length)

    def layer_mask(self, mask: AttentionMask, layer_index: jax.Array) -> AttentionMask:
        return mask.with_window(self.cfg.attention_window)
