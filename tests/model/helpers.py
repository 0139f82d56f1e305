"""Small model configs shared by the model tests."""

from meshlm.model.config import ModelConfig

TINY = ModelConfig(vocab_size=97, n_ctx=32, n_layers=2, d_model=32, n_heads=4)
MODERN = ModelConfig(
    vocab_size=97,
    n_ctx=32,
    n_layers=2,
    d_model=32,
    n_heads=4,
    norm="rmsnorm",
    position="rotary",
    mlp="swiglu",
    bias=False,
    tie_embeddings=False,
    qk_norm=True,
)


def jit_forward(model):
    """The model's __call__ under one jax.jit (eager calls would compile the layer scan every time)."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(tokens_BT, positions_BT=None, segment_ids_BT=None, cache=None):
        return nnx.merge(graphdef, state)(tokens_BT, positions_BT, segment_ids_BT, cache)

    return forward
