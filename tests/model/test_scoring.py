import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.model.errors import ConfigError
from meshlm.model.scoring import continuation_index, continuation_logprobs, right_padded, score, token_logprobs
from meshlm.model.transformer import Transformer
from tests.model.helpers import TINY, jit_forward


def test_batched_scores_equal_a_direct_computation_for_each_pair():
    model = Transformer(TINY, nnx.Rngs(0))
    forward = jit_forward(model)
    contexts, continuations = [[1, 5, 7], [2], [3, 3, 3, 3, 9]], [[4, 4], [8, 1, 6], [2]]
    logprob_B, greedy_B = score(model, contexts, continuations, length=12)
    for b, (ctx, cont) in enumerate(zip(contexts, continuations)):
        tokens = ctx + cont
        logits_1TV, _ = forward(jnp.asarray([tokens[:-1]]))
        logprobs_TV = jax.nn.log_softmax(logits_1TV[0])
        want = sum(float(logprobs_TV[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
        assert logprob_B[b] == pytest.approx(want, abs=1e-4)
        greedy = all(int(jnp.argmax(logprobs_TV[len(ctx) - 1 + i])) == t for i, t in enumerate(cont))
        assert bool(greedy_B[b]) == greedy


def test_a_greedy_continuation_is_flagged_greedy():
    model = Transformer(TINY, nnx.Rngs(0))
    logits_1TV, _ = jit_forward(model)(jnp.asarray([[1, 5, 7]]))
    best = int(jnp.argmax(logits_1TV[0, -1]))
    _, greedy_B = score(model, [[1, 5, 7], [1, 5, 7]], [[best], [(best + 1) % TINY.vocab_size]])
    assert greedy_B.tolist() == [True, False]


def test_too_long_pairs_are_refused():
    with pytest.raises(ConfigError, match="exceeds n_ctx=32"):
        score(Transformer(TINY, nnx.Rngs(0)), [[1] * 30], [[2] * 5])


def test_scoring_continuation_positions_only_equals_scoring_every_position():
    model = Transformer(TINY, nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    contexts, continuations = [[1, 5, 7], [2], [3, 3, 3, 3, 9], [6]], [[4, 4], [8, 1, 6, 2, 2, 7], [2], [5]]
    inputs_BT, targets_BT, weight_BT = right_padded(contexts, continuations, 16)
    index_BK, weight_BK = continuation_index(weight_BT, 8)  # K above every continuation: padded slots at weight 0
    assert weight_BK.sum(-1).tolist() == [len(c) for c in continuations]
    every_BT, greedy_BT = token_logprobs(graphdef, state, inputs_BT, targets_BT)
    at_BK, greedy_BK = continuation_logprobs(
        graphdef, state, inputs_BT, index_BK, np.take_along_axis(targets_BT, index_BK, -1)
    )
    np.testing.assert_allclose(
        np.sum(np.asarray(at_BK) * weight_BK, -1), np.sum(np.asarray(every_BT) * weight_BT, -1), rtol=1e-6
    )
    np.testing.assert_array_equal(
        np.all(np.asarray(greedy_BK) | (weight_BK == 0), -1), np.all(np.asarray(greedy_BT) | (weight_BT == 0), -1)
    )
    with pytest.raises(ValueError, match="does not fit K=4"):
        continuation_index(weight_BT, 4)
