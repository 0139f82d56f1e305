import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.experiments.evaluation.tasks import probes
from meshlm.model.transformer import Transformer
from tests.experiments.evaluation.helpers import TINY, PieceTokenizer, tiny_model
from tests.model.helpers import MODERN, jit_forward


@pytest.mark.parametrize("modern", [False, True])
def test_recomputed_attention_reproduces_the_model_and_is_causal(modern):
    changes = {f: getattr(MODERN, f) for f in ("norm", "position", "mlp", "bias", "tie_embeddings", "qk_norm")}
    model = tiny_model(seed=4, **(changes if modern else {}))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 20)))
    heads = probes.head_activations(*nnx.split(model), tokens)
    np.testing.assert_allclose(np.asarray(heads.logits_BTV), np.asarray(jit_forward(model)(tokens)[0]), atol=1e-4)
    probs = np.asarray(heads.probs_LBHTS)
    assert probs.shape == (2, 2, 4, 20, 20)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(probs, k=1) == 0)


def test_repeated_random_tokens_repeat_exactly():
    tokens = probes.repeated_random_tokens(list(range(5, 50)), rows=3, length=10, eos=0, seed=1)
    assert tokens.shape == (3, 21) and (tokens[:, 0] == 0).all()
    assert (tokens[:, 1:11] == tokens[:, 11:]).all() and all(len(set(r[1:11])) == 10 for r in tokens)


@pytest.mark.slow
def test_probes_on_an_untrained_model_show_no_in_context_learning():
    model, tok = tiny_model(n_ctx=32), PieceTokenizer()
    lm = LanguageModel(model, tok, batch_size=16)
    result = probes.induction(lm, token_pool=list(range(1, tok.vocab_size)))
    assert result["recompute_max_abs_diff"] < 1e-4
    # Random weights: both copies cost about log(vocab) nats, and no head prefers the induction target.
    assert abs(result["loss_repeat"] - result["loss_first_copy"]) < 0.2
    assert result["prefix_matching_max"] < 0.3 and np.array(result["prefix_matching"]).shape == (2, 4)
    assert np.abs(result["copying"]).max() < 0.5 and np.array(result["copying"]).shape == (2, 4)
    text = " ".join(["the cat sat on the mat"] * 30)
    ppl = probes.perplexity(lm, [text])
    assert ppl["bits_per_byte"] == pytest.approx(np.log2(ppl["byte_perplexity"]))
    assert ppl["bytes"] == len(text)
    assert ppl["bits_per_byte_stderr"] == 0.0 and ppl["documents"] == 1  # one document: nothing to resample
    docs = [text, "a dog ran to the sea " * 10, "the mat sat on the cat " * 5]
    ppl = probes.perplexity(lm, docs)
    per_doc = np.array(lm.loglikelihood_rolling([tok.encode(d) for d in docs]))
    n_bytes = np.array([len(d) for d in docs], float)
    rows = np.random.default_rng(0).integers(0, 3, size=(1000, 3))  # the documents resampled, by hand
    by_hand = np.std(-per_doc[rows].sum(-1) / n_bytes[rows].sum(-1) / np.log(2), ddof=1)
    assert ppl["bits_per_byte_stderr"] == pytest.approx(by_hand) and by_hand > 0


def induction_circuit_model():
    """A two-layer model wired by hand as Olsson et al.'s induction circuit, in residual subspaces of +-one-hot
    codes (zero mean, so LayerNorm only rescales): TOK (the current token), POS (the position), PREV (the previous
    token). Layer 0, head 0 attends from t to t-1 and copies that token into PREV; layer 1, head 0 attends from t
    to every s whose PREV equals t's token and writes s's token into TOK, which the tied head reads out."""
    V, T = 16, 32
    cfg = dataclasses.replace(TINY, vocab_size=V, n_ctx=T, d_model=128, n_heads=2, d_head=32)
    model = Transformer(cfg, nnx.Rngs(0))
    nnx.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
    tok, pos, prev = 0, 2 * V, 2 * V + 2 * T  # where each subspace starts; each holds (+code, -code)
    embed = np.zeros((V, 128))
    embed[np.arange(V), tok + np.arange(V)], embed[np.arange(V), tok + V + np.arange(V)] = 1, -1
    pos_embed = np.zeros((T, 128))
    pos_embed[np.arange(T), pos + np.arange(T)], pos_embed[np.arange(T), pos + T + np.arange(T)] = 1, -1
    w_qkv, w_out = np.zeros((2, 128, 3, 2, 32)), np.zeros((2, 2, 32, 128))
    for p in range(T - 1):
        w_qkv[0, pos + p, 0, 0, p] = 3.0  # query: my position
        w_qkv[0, pos + p, 1, 0, p + 1] = 1.0  # key: the position after mine
    for i in range(V):
        w_qkv[0, tok + i, 2, 0, i] = 1.0  # value: my token ...
        w_out[0, 0, i, prev + i], w_out[0, 0, i, prev + V + i] = 1 / 5.66, -1 / 5.66  # ... into PREV
        w_qkv[1, tok + i, 0, 0, i] = 5.0  # query: my token
        w_qkv[1, prev + i, 1, 0, i] = 1.0  # key: the token before me
        w_qkv[1, tok + i, 2, 0, i] = 1.0  # value: my token ...
        w_out[1, 0, i, tok + i], w_out[1, 0, i, tok + V + i] = 3 / 4.62, -3 / 4.62  # ... predicted next
    model.embed[...], model.pos_embed[...] = jnp.asarray(embed), jnp.asarray(pos_embed)
    model.blocks.attn.w_qkv[...], model.blocks.attn.w_out[...] = jnp.asarray(w_qkv), jnp.asarray(w_out)
    for norm in (model.blocks.attn_norm, model.blocks.mlp_norm):
        norm.scale[...] = jnp.ones_like(norm.scale[...])
    model.final_norm.scale[...] = jnp.ones(128)
    return model


@pytest.mark.slow
def test_the_induction_probe_finds_a_hand_built_induction_head():
    tok = PieceTokenizer(alphabet="abcdefghijklmno")
    lm = LanguageModel(induction_circuit_model(), tok, batch_size=16)
    result = probes.induction(lm, token_pool=list(range(1, tok.vocab_size)))
    assert result["recompute_max_abs_diff"] < 1e-4 and result["sequence_length"] == 15
    assert result["loss_repeat"] < 0.05 < 2.0 < result["loss_first_copy"]
    assert result["prefix_matching_argmax"] == [1, 0] and result["prefix_matching_max"] > 0.95
    assert result["prefix_matching"][0][0] < 0.1  # the previous-token head attends elsewhere
    # The induction head writes the attended token into what the head reads; the previous-token head writes into
    # PREV, which the unembedding cannot read, and the second heads write nothing.
    assert result["copying_argmax"] == [1, 0] and result["copying_max"] > 0.9
    assert result["copying"][0] == [0.0, 0.0] and result["copying"][1][1] == 0.0


def _codes(n: int, start: int, width: int = 128) -> np.ndarray:
    """[n, width]: row i is +1 at start + i and -1 at start + n + i, a code of zero mean."""
    codes = np.zeros((n, width))
    codes[np.arange(n), start + np.arange(n)], codes[np.arange(n), start + n + np.arange(n)] = 1, -1
    return codes


def previous_token_heads_model(norm: str = "layernorm") -> Transformer:
    """One attention-only layer of four heads, each attending from t to t-1, in residual subspaces of +-one-hot
    codes: EMB (the token), POS (the position) and OUT, the only one the untied unembedding reads. The OV circuits
    write the attended token's code into OUT as it is (head 0), negated (head 1), as the next token id's (head 2),
    or not at all (head 3)."""
    V, T, D, H = 16, 32, 128, 4
    cfg = dataclasses.replace(
        TINY, vocab_size=V, n_ctx=T, n_layers=1, d_model=D, n_heads=H, d_head=32, tie_embeddings=False, norm=norm
    )
    model = Transformer(cfg, nnx.Rngs(0))
    nnx.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
    emb, pos, out = 0, 2 * V, 2 * V + 2 * T
    w_qkv, w_out = np.zeros((1, D, 3, H, 32)), np.zeros((1, H, 32, D))
    for p in range(T - 1):
        w_qkv[0, pos + p, 0, :, p] = 3.0  # query: my position
        w_qkv[0, pos + p, 1, :, p + 1] = 1.0  # key: the position after mine
    w_qkv[0, emb + np.arange(V), 2, :, np.arange(V)] = 1.0  # value: my token
    copy = _codes(V, out)
    w_out[0, 0, :V], w_out[0, 1, :V], w_out[0, 2, :V] = copy, -copy, copy[(np.arange(V) + 1) % V]
    model.embed[...], model.pos_embed[...], model.unembed[...] = map(
        jnp.asarray, (_codes(V, emb), _codes(T, pos), copy.T)
    )
    model.blocks.attn.w_qkv[...], model.blocks.attn.w_out[...] = jnp.asarray(w_qkv), jnp.asarray(w_out)
    model.blocks.attn_norm.scale[...] = jnp.ones((1, D))
    model.final_norm.scale[...] = jnp.ones(D)
    return model


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_the_heads_direct_paths_add_up_to_the_logits_when_nothing_else_reaches_them(norm):
    # Random OV circuits (writes of non-zero mean, which LayerNorm centres), final-norm scale and unembedding rows of
    # OUT: the embeddings sit in subspaces the unembedding does not read, so the logits are the heads' sum.
    model, rng = previous_token_heads_model(norm), np.random.default_rng(0)
    model.blocks.attn.w_out[...] = jnp.asarray(rng.normal(size=(1, 4, 32, 128)))
    model.final_norm.scale[...] = jnp.asarray(rng.normal(size=128))
    model.unembed[...] = model.unembed[...].at[96:].set(jnp.asarray(rng.normal(size=(32, 16))))
    tokens = jnp.asarray(rng.integers(0, 16, (3, 20)))
    heads = probes.head_activations(*nnx.split(model), tokens)
    logits_BTS = np.take_along_axis(np.asarray(jit_forward(model)(tokens)[0]), np.asarray(tokens)[:, None, :], -1)
    np.testing.assert_allclose(np.asarray(heads.direct_LBHTS).sum(axis=(0, 2)), logits_BTS, atol=1e-3)


@pytest.mark.slow
def test_copying_is_one_for_a_head_that_raises_what_it_attends_to_and_minus_one_for_its_negation():
    lm = LanguageModel(previous_token_heads_model(), PieceTokenizer(alphabet="abcdefghijklmno"), batch_size=16)
    pool = list(range(1, 16))
    result = probes.induction(lm, token_pool=pool)
    copying = result["copying"][0]
    # By hand from the attention: head 0 adds k A(v) to the logit of each token v, A(v) its attention to v's
    # positions, so over the n sample tokens d(v) = k (A(v) - 1/n) and the score is
    # (sum_v A(v)^2 - 1/n) / sum_v relu(A(v) - 1/n).
    tokens = probes.repeated_random_tokens(pool, probes.INDUCTION_ROWS, 15, eos=0, seed=0)
    probs_BTS = np.asarray(probes.head_activations(lm.graphdef, lm.params, jnp.asarray(tokens)).probs_LBHTS)[0, :, 0]
    by_hand = []
    for row, probs_TS in zip(tokens, probs_BTS):
        for t in range(16, 31):
            attention = np.array([probs_TS[t, : t + 1][row[: t + 1] == v].sum() for v in row[:16]])
            by_hand.append((np.sum(attention**2) - 1 / 16) / np.maximum(attention - 1 / 16, 0).sum())
    assert copying[0] == pytest.approx(np.mean(by_hand), abs=1e-4) and copying[0] > 0.99
    assert copying[1] == pytest.approx(-copying[0], abs=1e-4)  # lowers exactly what head 0 raises
    assert abs(copying[2]) < 0.1  # raises a token it does not attend to: no better than any other
    assert copying[3] == 0.0 and result["copying_argmax"] == [0, 0]


def test_icl_score_is_negative_exactly_when_the_model_uses_its_context():
    tok = PieceTokenizer(alphabet="abcdefghijklmno")
    rng = np.random.default_rng(0)
    # Ten distinct letters, repeated: from the second period on, the induction circuit predicts every letter.
    texts = ["".join(rng.permutation(list("abcdefghijklmno"))[:10]) * 4 for _ in range(8)]
    induction = probes.icl_score(LanguageModel(induction_circuit_model(), tok, batch_size=8), texts)
    assert (induction["early_index"], induction["late_index"], induction["rows"]) == (3, 32, 8)
    # A 32-token context has no token 500: the score is another measure, and its name says which.
    assert induction["measure"] == "icl_score@32-3" and "icl_score" not in induction
    assert induction["note"] == "not the standard icl_score@500-50, which needs n_ctx >= 500 (this model's is 32)"
    assert induction["icl_score@32-3"] < -2.0 and induction["loss_late"] < 0.05
    untrained = probes.icl_score(LanguageModel(tiny_model(vocab_size=16, n_ctx=32), tok, batch_size=8), texts)
    assert abs(untrained["icl_score@32-3"]) < 0.3
    standard = probes.icl_score(LanguageModel(tiny_model(vocab_size=16, n_ctx=512), tok), ["abcdefghij" * 60])
    assert standard["measure"] == "icl_score@500-50" and "icl_score@500-50_stderr" in standard
    assert "note" not in standard and standard["rows"] == 1
