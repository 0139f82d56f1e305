import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.model.errors import ConfigError
from meshlm.model.generate import SamplingConfig, generate, sample_token, weights_in_compute_dtype
from meshlm.model.transformer import Transformer
from tests.model.helpers import MODERN, TINY, jit_forward

GREEDY = SamplingConfig(max_new_tokens=6, temperature=0.0)


def _greedy_by_full_forward(model, prompt, n):
    forward, tokens = jit_forward(model), list(prompt)
    for _ in range(n):
        logits_1TV, _ = forward(jnp.asarray([tokens]))
        tokens.append(int(jnp.argmax(logits_1TV[0, -1])))
    return tokens[len(prompt) :]


@pytest.mark.parametrize(
    "cfg", [TINY, MODERN, dataclasses.replace(MODERN, scan_layers=False)], ids=["gpt", "modern", "modern-unrolled"]
)
def test_greedy_batch_of_ragged_prompts_equals_recomputing_each_alone(cfg):
    model = Transformer(cfg, nnx.Rngs(3))
    prompts = [[5, 9, 2], [7, 1, 4, 4, 8, 30, 2], [11]]
    got = generate(model, prompts, GREEDY)
    for prompt, new in zip(prompts, got):
        assert new == _greedy_by_full_forward(model, prompt, 6)


def test_stop_token_ends_a_row_and_is_kept():
    model = Transformer(TINY, nnx.Rngs(3))
    free = generate(model, [[5, 9, 2]], dataclasses.replace(GREEDY, max_new_tokens=8))[0]
    stop = free[2]
    cut = generate(model, [[5, 9, 2]], dataclasses.replace(GREEDY, max_new_tokens=8, stop_tokens=(stop,)))[0]
    assert cut == free[: free.index(stop) + 1]


def test_sampling_is_seeded():
    model = Transformer(TINY, nnx.Rngs(3))
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.0, seed=4)
    a, b = generate(model, [[1, 2]], cfg), generate(model, [[1, 2]], cfg)
    c = generate(model, [[1, 2]], dataclasses.replace(cfg, seed=5))
    assert a == b and a != c


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits_BV = jax.random.normal(jax.random.key(0), (64, 50))
    greedy = np.argmax(logits_BV, -1)
    for cfg in (SamplingConfig(temperature=1.0, top_k=1), SamplingConfig(temperature=1.0, top_p=1e-6)):
        assert np.all(sample_token(logits_BV, jax.random.key(1), cfg) == greedy)


def test_top_k_never_samples_outside_the_k_best():
    logits_BV = jnp.tile(jnp.arange(20.0)[None], (500, 1))
    tokens = sample_token(logits_BV, jax.random.key(1), SamplingConfig(temperature=5.0, top_k=3))
    assert set(np.asarray(tokens).tolist()) == {17, 18, 19}


def test_top_p_keeps_the_smallest_prefix_reaching_the_mass():
    probs = jnp.array([0.5, 0.3, 0.15, 0.05])
    logits_BV = jnp.tile(jnp.log(probs)[None], (2000, 1))
    tokens = np.asarray(sample_token(logits_BV, jax.random.key(1), SamplingConfig(temperature=1.0, top_p=0.7)))
    assert set(tokens.tolist()) == {0, 1}
    assert abs((tokens == 0).mean() - 0.5 / 0.8) < 0.05


def test_prompt_longer_than_context_is_a_clear_error():
    model = Transformer(TINY, nnx.Rngs(0))
    with pytest.raises(ConfigError, match="exceeds the model's n_ctx=32; shorten the prompt"):
        generate(model, [[1] * 30], SamplingConfig(max_new_tokens=8))


def test_vocab_limit_never_samples_padded_ids():
    logits_BV = jnp.zeros((256, 40)).at[:, 30:].set(10.0)  # the padded ids are the most likely
    tokens = sample_token(logits_BV, jax.random.key(0), SamplingConfig(temperature=1.0, vocab_limit=30))
    assert int(jnp.max(tokens)) < 30


def test_decode_weights_cast_once_to_bf16_change_no_logit():
    """The decode loop reads matrices already in the compute dtype; the forward pass would have cast them anyway,
    so the logits are bitwise those of the f32-stored model, while norm scales and biases keep f32."""
    cfg = dataclasses.replace(TINY, dtype="bfloat16")
    model = Transformer(cfg, nnx.Rngs(3))
    graphdef, state = nnx.split(model)
    cast = weights_in_compute_dtype(state, jnp.dtype(jnp.bfloat16))
    dtypes = {x.ndim >= 2: x.dtype for x in jax.tree.leaves(cast) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {True: jnp.bfloat16, False: jnp.float32}
    tokens = jnp.asarray([[5, 9, 2, 7, 1]])
    want, _ = model(tokens)
    got, _ = nnx.merge(graphdef, cast)(tokens)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
