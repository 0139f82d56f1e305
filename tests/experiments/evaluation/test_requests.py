import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.evaluation.requests import LanguageModel, bucket, rolling_windows
from meshlm.model.config import ModelConfig
from meshlm.model.transformer import Transformer
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner
from tests.experiments.evaluation.helpers import PieceTokenizer, tiny_model
from tests.model.helpers import jit_forward

# A model whose log-probabilities have a closed form: blocks and position table zero, token table the identity.
# Every block then adds nothing, the final LayerNorm maps e_i to (e_i - 1/8) / sqrt(7/64 + eps), and the tied
# head scores token j with that vector's j-th entry: a = 7/8 / s for j == i, -1/8 / s otherwise.
IDENTITY = ModelConfig(vocab_size=8, n_ctx=16, n_layers=1, d_model=8, n_heads=2)


def identity_model() -> Transformer:
    model = Transformer(IDENTITY, nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    zeroed = jax.tree.map(jnp.zeros_like, state)
    nnx.update(model, zeroed)
    model.embed[...] = jnp.eye(8)
    model.final_norm.scale[...] = jnp.ones(8)
    return model


def closed_form_logprob(same: bool) -> float:
    s = np.sqrt(7 / 64 + IDENTITY.norm_eps)
    a_same, a_diff = (7 / 8) / s, (-1 / 8) / s
    log_z = np.log(np.exp(a_same) + 7 * np.exp(a_diff))
    return (a_same if same else a_diff) - log_z


@pytest.mark.slow
def test_loglikelihood_equals_the_closed_form_of_a_hand_built_model():
    lm = LanguageModel(identity_model(), PieceTokenizer(alphabet="abcdefg"), batch_size=4)
    # Each target token is scored given the token before it: repeats are "same", changes "different".
    pairs = [([0, 3], [3, 3, 5]), ([0], [1]), ([0, 1, 2, 4], [4])]
    want = [
        2 * closed_form_logprob(True) + closed_form_logprob(False),
        closed_form_logprob(False),
        closed_form_logprob(True),
    ]
    got = lm.loglikelihood_tokens(pairs)
    np.testing.assert_allclose([g.logprob for g in got], want, rtol=1e-6)
    # The argmax always repeats the current token: greedy exactly when every target repeats its predecessor.
    assert [g.is_greedy for g in got] == [False, False, True]
    assert [g.n_tokens for g in got] == [3, 1, 1]


def _requests(rng, n, vocab, n_ctx):
    out = []
    for _ in range(n):
        cont = rng.integers(1, vocab, rng.integers(1, 5)).tolist()
        ctx = [0] + rng.integers(1, vocab, rng.integers(0, n_ctx - len(cont))).tolist()
        out.append((ctx, cont))
    return out


@pytest.mark.slow
def test_scores_do_not_depend_on_batch_size_padding_or_order():
    model, tok = tiny_model(), PieceTokenizer()
    requests = _requests(np.random.default_rng(0), 37, 97, 32)
    one = LanguageModel(model, tok, batch_size=1).loglikelihood_tokens(requests)
    sixteen = LanguageModel(model, tok, batch_size=16).loglikelihood_tokens(requests)
    order = np.random.default_rng(1).permutation(len(requests))
    shuffled = LanguageModel(model, tok, batch_size=5).loglikelihood_tokens([requests[i] for i in order])
    unshuffled = [None] * len(requests)
    for pos, i in enumerate(order):
        unshuffled[i] = shuffled[pos]
    for a, b, c in zip(one, sixteen, unshuffled):
        assert abs(a.logprob - b.logprob) < 1e-5 and abs(a.logprob - c.logprob) < 1e-5
        assert a.is_greedy == b.is_greedy == c.is_greedy


@pytest.mark.slow
def test_packed_rows_with_shared_contexts_score_as_one_request_per_row():
    model, tok = tiny_model(), PieceTokenizer()
    rng = np.random.default_rng(4)
    requests = _requests(rng, 11, 97, 32)
    # Multiple-choice items: one context, several answers (one-token ones too); one with answers enough to need
    # two rows, and a context cut to fit.
    for ctx, _ in requests[:4]:
        requests += [(ctx, rng.integers(1, 97, rng.integers(1, 4)).tolist()) for _ in range(3)]
    requests += [(requests[0][0][:20], rng.integers(1, 97, 4).tolist()) for _ in range(8)]
    requests.append((list(range(1, 40)), [5, 6]))
    packed = LanguageModel(model, tok, batch_size=3).loglikelihood_tokens(requests)
    rows = LanguageModel(model, tok, batch_size=3, pack=False).loglikelihood_tokens(requests)
    for a, b in zip(packed, rows):
        assert abs(a.logprob - b.logprob) < 1e-5
        assert (a.is_greedy, a.n_tokens, a.truncated) == (b.is_greedy, b.n_tokens, b.truncated)
    assert packed[-1].truncated


@pytest.mark.slow
@pytest.mark.parametrize(
    "mesh", [MeshConfig("data=2,tensor=2,fsdp=2"), MeshConfig("data=2,tensor=4", sequence_parallel=True)], ids=str
)
def test_packed_rows_on_a_training_mesh_score_as_unsharded_rows(mesh):
    model, tok = tiny_model(), PieceTokenizer()
    rng = np.random.default_rng(5)
    requests = _requests(rng, 9, 97, 32)
    requests += [(ctx, rng.integers(1, 97, rng.integers(1, 4)).tolist()) for ctx, _ in requests[:5]]
    want = LanguageModel(model, tok, batch_size=4, pack=False).loglikelihood_tokens(requests)
    got = LanguageModel(model, tok, batch_size=4, partitioner=Partitioner.build(mesh)).loglikelihood_tokens(requests)
    for a, b in zip(got, want):
        assert abs(a.logprob - b.logprob) < 1e-5 and a.is_greedy == b.is_greedy


@pytest.mark.slow
def test_scores_equal_a_direct_forward_pass():
    model, tok = tiny_model(seed=3), PieceTokenizer()
    requests = _requests(np.random.default_rng(2), 6, 97, 32)
    got = LanguageModel(model, tok, batch_size=4).loglikelihood_tokens(requests)
    forward = jit_forward(model)
    for (ctx, cont), g in zip(requests, got):
        tokens = jnp.asarray([ctx + cont])
        logprobs = np.asarray(jax.nn.log_softmax(forward(tokens[:, :-1])[0][0]), np.float64)
        want = sum(logprobs[len(ctx) - 1 + i, t] for i, t in enumerate(cont))
        assert g.logprob == pytest.approx(want, abs=1e-4)


def test_too_long_contexts_are_cut_from_the_left_and_flagged():
    model, tok = tiny_model(), PieceTokenizer()
    lm = LanguageModel(model, tok, batch_size=2)
    long_ctx, cont = list(range(1, 41)), [5, 6]
    got = lm.loglikelihood_tokens([(long_ctx, cont), (long_ctx[-31:], cont)])
    assert got[0].truncated and not got[1].truncated
    assert got[0].logprob == pytest.approx(got[1].logprob, abs=1e-6)  # n_ctx + 1 - 2 = 31 context tokens kept


def test_rolling_windows_predict_every_token_once_within_n_ctx():
    tokens = list(range(1, 24))
    windows = rolling_windows(tokens, prefix=0, n_ctx=8)
    predicted = [t for _, cont in windows for t in cont]
    assert predicted == tokens
    for ctx, cont in windows:
        assert len(ctx) + len(cont) - 1 <= 8
        full = [0] + tokens
        start = full.index(cont[0]) - len(ctx)
        assert full[start : start + len(ctx) + len(cont)] == ctx + cont  # the true preceding tokens
    assert [len(ctx) for ctx, _ in windows] == [1, 1, 2]  # 8 + 8 + 7 predictions; the last keeps 8 inputs


def test_rolling_loglikelihood_of_a_short_text_is_one_forward_pass():
    model, tok = tiny_model(seed=1), PieceTokenizer()
    lm = LanguageModel(model, tok, batch_size=2)
    text = tok.encode("the cat sat on a mat")
    logprobs = np.asarray(jax.nn.log_softmax(jit_forward(model)(jnp.asarray([[0] + text[:-1]]))[0][0]), np.float64)
    want = sum(logprobs[i, t] for i, t in enumerate(text))
    assert lm.loglikelihood_rolling([text])[0] == pytest.approx(want, abs=1e-4)
    long = tok.encode("the cat sat on a mat and the dog sat on the log, and then they all went home")
    n_windows = len(rolling_windows(long, 0, 32))
    assert n_windows == 3 and np.isfinite(lm.loglikelihood_rolling([long])[0])


def test_generate_until_equals_greedy_decoding_and_stops_at_the_stop_string():
    model, tok = tiny_model(seed=2), PieceTokenizer()
    lm = LanguageModel(model, tok, batch_size=4)
    prompts = [[0] + tok.encode(p) for p in ("Q: 1+1=", "ab", "x")]
    texts, truncated = lm.generate_until(prompts, until=["\n", "zz"], max_tokens=6)
    assert truncated == [False, False, False]
    forward = jit_forward(model)
    for prompt, text in zip(prompts, texts):
        new = []
        for _ in range(6):  # greedy by hand, recomputing the whole (right-padded) sequence each step, until EOS
            n = len(prompt) + len(new)
            logits = forward(jnp.asarray([prompt + new + [0] * (32 - n)]))[0][0, n - 1, : tok.vocab_size]
            if int(jnp.argmax(logits)) == tok.eos_id:
                break
            new.append(int(jnp.argmax(logits)))
        assert text == tok.decode(new).split("\n")[0].split("zz")[0]


def test_buckets_are_few_and_waste_at_most_a_third():
    assert {bucket(n, 512) for n in range(1, 513)} == {16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512}
    assert all(n <= bucket(n, 512) and (n <= 16 or bucket(n, 512) < 1.5 * n) for n in range(1, 513))
    assert bucket(300, 256) == 256
