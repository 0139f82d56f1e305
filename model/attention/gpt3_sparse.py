"""`gpt3_sparse`: GPT-3's layers alternate dense and locally banded sparse attention (Brown et al. 2020, section
2.1, after the Sparse Transformer of Child et al. 2019). model.attention_pattern lists the kinds of consecutive
layers ("dense,local" repeats over the stack); a local layer sees the attention_window most recent tokens. The
per-layer choice is made from the layer index the scan over layers passes in, so one compiled block serves both
kinds. Parameters are `mha`'s: the gpt3-*-sparse presets have exactly the dense models' weights."""

import jax
import jax.numpy as jnp

from meshlm.model.attention.mask import AttentionMask
from meshlm.model.attention.multi_head import MultiHead
from meshlm.model.attention.registry import register_layer
from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError

KINDS = ("dense", "local")


def pattern(cfg: ModelConfig) -> tuple[str, ...]:
    return tuple(kind.strip() for kind in cfg.attention_pattern.split(","))


@register_layer("gpt3_sparse")
class Gpt3Sparse(MultiHead):
    example = {"attention_window": 3}
    reduces_to_mha = {"attention_window": 1 << 20}  # a band wider than any sequence

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        super().validate(cfg)
        if cfg.attention_window <= 0:
            raise ConfigError("model.attention_layer=gpt3_sparse needs the band width: model.attention_window=W > 0")
        if not set(pattern(cfg)) <= set(KINDS):
            raise ConfigError(
                f"model.attention_pattern={cfg.attention_pattern!r}: list the layers' kinds, "
                f"each one of {' and '.join(KINDS)}, e.g. dense,local"
            )

    def layer_mask(self, mask: AttentionMask, layer_index: jax.Array) -> AttentionMask:
        local_P = jnp.asarray([kind == "local" for kind in pattern(self.cfg)])
        band = jnp.where(local_P[layer_index % local_P.shape[0]], self.cfg.attention_window, 0)
        return mask.with_window(band)
