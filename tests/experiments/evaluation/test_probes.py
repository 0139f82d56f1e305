import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.experiments.evaluation.tasks import probes
from tests.experiments.evaluation.helpers import PieceTokenizer, tiny_model
from tests.model.helpers import MODERN, jit_forward


@pytest.mark.parametrize("modern", [False, True])
def test_recomputed_attention_reproduces_the_model_and_is_causal(modern):
    changes = {f: getattr(MODERN, f) for f in ("norm", "position", "mlp", "bias", "tie_embeddings", "qk_norm")}
    model = tiny_model(seed=4, **(changes if modern else {}))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 20)))
    probs_LBHTS, logits_BTV = probes.attention_probs(*nnx.split(model), tokens)
    np.testing.assert_allclose(np.asarray(logits_BTV), np.asarray(jit_forward(model)(tokens)[0]), atol=1e-4)
    probs = np.asarray(probs_LBHTS)
    assert probs.shape == (2, 2, 4, 20, 20)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(probs, k=1) == 0)


def test_repeated_random_tokens_repeat_exactly():
    tokens = probes.repeated_random_tokens(list(range(5, 50)), rows=3, length=10, eos=0, seed=1)
    assert tokens.shape == (3, 21) and (tokens[:, 0] == 0).all()
    assert (tokens[:, 1:11] == tokens[:, 11:]).all() and all(len(set(r[1:11])) == 10 for r in tokens)


def test_probes_on_an_untrained_model_show_no_in_context_learning():
    model, tok = tiny_model(n_ctx=32), PieceTokenizer()
    lm = LanguageModel(model, tok, batch_size=16)
    result = probes.induction(lm, token_pool=list(range(1, tok.vocab_size)))
    assert result["recompute_max_abs_diff"] < 1e-4
    # Random weights: both copies cost about log(vocab) nats, and no head prefers the induction target.
    assert abs(result["loss_repeat"] - result["loss_first_copy"]) < 0.2
    assert result["prefix_matching_max"] < 0.3 and np.array(result["prefix_matching"]).shape == (2, 4)
    text = " ".join(["the cat sat on the mat"] * 30)
    ppl = probes.perplexity(lm, [text])
    assert ppl["bits_per_byte"] == pytest.approx(np.log2(ppl["byte_perplexity"]))
    assert ppl["bytes"] == len(text)
