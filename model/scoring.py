"""Log-likelihoods of continuations given contexts, in batches: what few-shot evaluation and perplexity need."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer


def right_padded(
    contexts: list[list[int]], continuations: list[list[int]], length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, weights) [B, length]: each pair's tokens from position 0, weight 1 on the continuation's
    targets. Right padding never influences earlier positions under the causal mask, so a row's scores do not
    depend on how long the batch is padded."""
    B = len(contexts)
    inputs_BT, targets_BT = np.zeros((B, length), np.int32), np.zeros((B, length), np.int32)
    weight_BT = np.zeros((B, length), np.float32)
    for b, (ctx, cont) in enumerate(zip(contexts, continuations)):
        pair = ctx + cont
        n = len(pair) - 1
        inputs_BT[b, :n], targets_BT[b, :n] = pair[:-1], pair[1:]
        weight_BT[b, n - len(cont) : n] = 1.0
    return inputs_BT, targets_BT, weight_BT


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
            f"a context + continuation of {max(map(len, pairs))} tokens exceeds n_ctx={model.cfg.n_ctx}; "
            "truncate the context from the left"
        )
    inputs_BT, targets_BT, weight_BT = right_padded(contexts, continuations, T)
    graphdef, state = nnx.split(model)
    logprob_BT, greedy_BT = token_logprobs(graphdef, state, inputs_BT, targets_BT)
    logprob_BT, greedy_BT = np.asarray(logprob_BT, np.float64), np.asarray(greedy_BT)
    return np.sum(logprob_BT * weight_BT, axis=-1), np.all(greedy_BT | (weight_BT == 0), axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def token_logprobs(graphdef, state, inputs_BT, targets_BT) -> tuple[jax.Array, jax.Array]:
    """log p(target | inputs up to here) at every position (log-softmax in f32), and whether the target was the
    argmax. Sums are left to the caller, so padding never enters a reduction."""
    logits_BTV, _ = nnx.merge(graphdef, state)(inputs_BT)
    logprobs_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    target_BT = jnp.take_along_axis(logprobs_BTV, targets_BT[..., None], axis=-1)[..., 0]
    return target_BT, jnp.argmax(logits_BTV, axis=-1) == targets_BT
