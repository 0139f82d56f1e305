"""muP (Yang et al. 2022, Tensor Programs V): the Adam column of its Table 3, for model.parametrization=mup.

With m = model.width_mult = d_model / mup_base_width:

- hidden weights (every matrix between two widths that grow with d_model): init std / sqrt(m), Adam LR / m;
- token and position embeddings, biases and norm scales: init and LR as at the base width;
- the unembedding: Table 3's output row (init variance / m^2, Adam LR / m) written as Table 8 writes it: init and
  LR as at the base width and the logits times 1/m (`ModelConfig.output_mult`). Under Adam the two are one model,
  since the effective weight W/m moves by lr/m per step either way; only this form lets a tied head share the
  embedding's table, which then needs one init and one LR for both uses, so model.tie_embeddings works under muP;
- attention logits q.k / d_head, times sqrt(d_head at the base width) (`ModelConfig.query_mult`).

At m = 1 every factor is exactly 1, so the base width is the standard model. Adam's eps is left unscaled. Where each
factor acts: `param.param` (init, and each hidden weight's LR multiplier as `lr_scale` metadata),
`AttentionLayer.init_output` (queries), `Transformer.head` (logits), training/optimizer.py (the multipliers).
"""

import jax
from flax import nnx

# A weight with one of these axes maps the vocabulary or the positions in or out: its fan-in or fan-out is fixed.
FIXED_AXES = frozenset({"vocab", "ctx"})


def is_hidden(axes: tuple[str | None, ...]) -> bool:
    """Whether a weight matrix (not a bias) with these logical axes is hidden: both its sides grow with d_model."""
    return not FIXED_AXES & set(axes)


def lr_scales(model: nnx.Module) -> dict | None:
    """Each parameter's Adam LR multiplier as a nested dict like the parameters; None if no parameter has one
    (the standard parametrization)."""
    state = nnx.state(model, nnx.Param)
    is_variable = lambda x: isinstance(x, nnx.Variable)
    if not any("lr_scale" in v.get_metadata() for v in jax.tree.leaves(state, is_leaf=is_variable)):
        return None
    return nnx.to_pure_dict(jax.tree.map(lambda v: v.get_metadata().get("lr_scale", 1.0), state, is_leaf=is_variable))
