"""Log-likelihoods of continuations given contexts, in batches: what few-shot evaluation and perplexity need."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer


def score(
    model: Transformer, contexts: list[list[int]], continuations: list[list[int]], length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the summed log-probability of the continuation tokens given the context, and whether every
    continuation token was the greedy choice (lm-evaluation-harness's `is_greedy`). Rows are right-padded to
    `length` (default: the longest pair) so one compiled function serves many batches."""
    pairs = [c + x for c, x in zip(contexts, continuations)]
    if any(not x for x in continuations) or any(not c for c in contexts):
        raise ConfigError("every context and continuation needs at least one token (start contexts with the EOS token)")
    T = length or max(map(len, pairs)) - 1
    if max(map(len, pairs)) - 1 > min(T, model.cfg.n_ctx):
        raise ConfigError(
            f"a context + continuation of {max(map(len, pairs))} tokens exceeds n_ctx={model.cfg.n_ctx}; truncate the "
            "context from the left"
        )
    B = len(pairs)
    inputs_BT, targets_BT, weight_BT = (
        np.zeros((B, T), np.int32),
        np.zeros((B, T), np.int32),
        np.zeros((B, T), np.float32),
    )
    for b, (pair, cont) in enumerate(zip(pairs, continuations)):
        n = len(pair) - 1
        inputs_BT[b, :n], targets_BT[b, :n] = pair[:-1], pair[1:]
        weight_BT[b, n - len(cont) : n] = 1.0
    graphdef, state = nnx.split(model)
    logprob_B, greedy_B = _score(graphdef, state, inputs_BT, targets_BT, weight_BT)
    return np.asarray(logprob_B), np.asarray(greedy_B)


@functools.partial(jax.jit, static_argnums=0)
def _score(graphdef, state, inputs_BT, targets_BT, weight_BT):
    logits_BTV, _ = nnx.merge(graphdef, state)(inputs_BT)  # right padding never influences earlier positions
    logprobs_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
    target_BT = jnp.take_along_axis(logprobs_BTV, targets_BT[..., None], axis=-1)[..., 0]
    is_greedy_BT = jnp.argmax(logits_BTV, axis=-1) == targets_BT
    return jnp.sum(target_BT * weight_BT, axis=-1), jnp.all(is_greedy_BT | (weight_BT == 0), axis=-1)
