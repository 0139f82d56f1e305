"""Named model shapes: the eight GPT-3 models of Brown et al. (2020), Table 2.1, and tiny CPU presets."""

import dataclasses

from meshlm.model.config import ModelConfig
from meshlm.model.errors import ConfigError

# name: (n_layers, d_model, n_heads, d_head, the paper's parameter count)
GPT3_TABLE = {
    "gpt3-small": (12, 768, 12, 64, 125e6),
    "gpt3-medium": (24, 1024, 16, 64, 350e6),
    "gpt3-large": (24, 1536, 16, 96, 760e6),
    # The paper prints 24 heads of 128 (3,072 wide, 1.5B parameters); 16 x 128 = d_model gives its 1.3B.
    "gpt3-xl": (24, 2048, 16, 128, 1.3e9),
    "gpt3-2.7b": (32, 2560, 32, 80, 2.7e9),
    "gpt3-6.7b": (32, 4096, 32, 128, 6.7e9),
    "gpt3-13b": (40, 5120, 40, 128, 13.0e9),  # the paper prints d_model 5140, a typo: 40 x 128 = 5120
    "gpt3-175b": (96, 12288, 96, 128, 175.0e9),
}

PRESETS: dict[str, ModelConfig] = {
    name: ModelConfig(vocab_size=50304, n_ctx=2048, n_layers=L, d_model=D, n_heads=H, d_head=K)
    for name, (L, D, H, K, _) in GPT3_TABLE.items()
}
# GPT-3 as the paper trained it: layers alternate dense and locally banded sparse attention (section 2.1). The
# paper gives no band width; 256 is the window of GPT-Neo, EleutherAI's replication of GPT-3. Same weights as the
# dense presets.
SPARSE_BAND = 256
PRESETS.update(
    {
        f"{name}-sparse": dataclasses.replace(
            PRESETS[name], attention_layer="gpt3_sparse", attention_pattern="dense,local", attention_window=SPARSE_BAND
        )
        for name in GPT3_TABLE
    }
)
PRESETS.update(
    {
        # Minutes on 2 CPU cores: the demo and the tests.
        "tiny": ModelConfig(vocab_size=4096, n_ctx=256, n_layers=4, d_model=128, n_heads=4),
        "tiny-modern": ModelConfig(
            vocab_size=4096,
            n_ctx=256,
            n_layers=4,
            d_model=128,
            n_heads=4,
            norm="rmsnorm",
            position="rotary",
            mlp="swiglu",
            bias=False,
            tie_embeddings=False,
            qk_norm=True,
        ),
        # The CPU benchmark shape, with the attention and remat measured fastest on 2 cores (docs/performance.md).
        "cpu-small": ModelConfig(
            vocab_size=8192, n_ctx=256, n_layers=6, d_model=384, n_heads=6, attention="blocked", remat="dots_saveable"
        ),
    }
)


def get(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (meshlm info --list)")
    return PRESETS[name]


def paper_params(name: str) -> float | None:
    row = GPT3_TABLE.get(name)
    return None if row is None else row[-1]


def with_overrides(cfg: ModelConfig, **changes) -> ModelConfig:
    return dataclasses.replace(cfg, **changes)
