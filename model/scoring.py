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


def continuation_index(weight_BT: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(index_BK, weight_BK): the positions of each row's continuation targets (its run of weight 1), padded to K
    by repeating the last one at weight 0."""
    n_B = weight_BT.sum(-1).astype(np.int32)
    if n_B.max(initial=0) > K:
        raise ValueError(f"a continuation of {n_B.max()} tokens does not fit K={K} scored positions")
    first_B = np.argmax(weight_BT > 0, axis=-1)
    k_K = np.arange(K)
    index_BK = first_B[:, None] + np.minimum(k_K[None, :], np.maximum(n_B - 1, 0)[:, None])
    return index_BK.astype(np.int32), (k_K[None, :] < n_B[:, None]).astype(np.float32)


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
    # K rounded up to a power of two (at most T), so batches of different continuation lengths share compilations.
    index_BK, weight_BK = continuation_index(weight_BT, min(T, 1 << (max(map(len, continuations)) - 1).bit_length()))
    graphdef, state = nnx.split(model)
    logprob_BK, greedy_BK = continuation_logprobs(
        graphdef, state, inputs_BT, index_BK, np.take_along_axis(targets_BT, index_BK, -1)
    )
    logprob_BK, greedy_BK = np.asarray(logprob_BK, np.float64), np.asarray(greedy_BK)
    return np.sum(logprob_BK * weight_BK, axis=-1), np.all(greedy_BK | (weight_BK == 0), axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def token_logprobs(graphdef, state, inputs_BT, targets_BT) -> tuple[jax.Array, jax.Array]:
    """log p(target | inputs up to here) at every position (log-softmax in f32), and whether the target was the
    argmax. Sums are left to the caller, so padding never enters a reduction."""
    logits_BTV, _ = nnx.merge(graphdef, state)(inputs_BT)
    return _target_logprobs(logits_BTV, targets_BT)


@functools.partial(jax.jit, static_argnums=0)
def continuation_logprobs(graphdef, state, inputs_BT, index_BK, targets_BK) -> tuple[jax.Array, jax.Array]:
    """token_logprobs at K chosen positions of each row (its continuation's). The head and the log-softmax, about a
    quarter of a small model's forward FLOPs and most of its memory traffic, run at those positions only."""
    model = nnx.merge(graphdef, state)
    x_BTD, _ = model(inputs_BT, return_hidden=True)
    x_BKD = jnp.take_along_axis(x_BTD, index_BK[..., None], axis=1)
    return _target_logprobs(model.head(x_BKD), targets_BK)


@functools.partial(jax.jit, static_argnums=0)
def packed_logprobs(
    graphdef, state, tokens_BT, positions_BT, segments_BT, branches_BT, index_BK, targets_BK
) -> tuple[jax.Array, jax.Array]:
    """continuation_logprobs for packed rows: segments of a context and its continuations as branches
    (`AttentionMask.shared_prefix`), each scored slot read at its own position."""
    model = nnx.merge(graphdef, state)
    x_BTD, _ = model(tokens_BT, positions_BT, segments_BT, return_hidden=True, branch_ids_BT=branches_BT)
    x_BKD = jnp.take_along_axis(x_BTD, index_BK[..., None], axis=1)
    return _target_logprobs(model.head(x_BKD), targets_BK)


def _target_logprobs(logits_BXV: jax.Array, targets_BX: jax.Array) -> tuple[jax.Array, jax.Array]:
    logprobs_BXV = jax.nn.log_softmax(logits_BXV.astype(jnp.float32), axis=-1)
    target_BX = jnp.take_along_axis(logprobs_BXV, targets_BX[..., None], axis=-1)[..., 0]
    return target_BX, jnp.argmax(logits_BXV, axis=-1) == targets_BX
