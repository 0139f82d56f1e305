import math

import numpy as np
import pytest

from meshlm.experiments.evaluation import metrics


def test_each_normalisation_picks_its_own_winner():
    # Choice 0: short text, many tokens; choice 1: long text, few tokens; choice 2 is likely a priori.
    choices = ["ab", "a much longer answer", "c"]
    logprobs = [-4.0, -6.0, -5.0]
    n_tokens = [8, 2, 1]
    uncond = [-6.0, -7.0, -1.0]
    got = metrics.choice_metrics(logprobs, n_tokens, choices, gold=1, uncond_logprobs=uncond)
    # acc: argmax(-4, -6, -5) = 0; per char: (-2, -0.3, -5) -> 1; per token: (-0.5, -3, -5) -> 0;
    # unconditional: (-4+6, -6+7, -5+1) = (2, 1, -4) -> 0.
    assert got == {"acc": 0.0, "acc_norm": 1.0, "acc_per_token": 0.0, "acc_uncond": 0.0}
    assert metrics.choice_metrics(logprobs, n_tokens, choices, gold=0, uncond_logprobs=uncond)["acc_uncond"] == 1.0


def test_exact_match_ignores_surrounding_whitespace_only():
    assert metrics.exact_match(" 124", "124") == 1.0
    assert metrics.exact_match("124\n", "124") == 1.0
    assert metrics.exact_match("1 24", "124") == 0.0
    assert metrics.exact_match("Casino", "casino") == 0.0


def test_last_word_split():
    assert metrics.last_word_split("He opened the door and saw his friend Bob.") == (
        "He opened the door and saw his friend",
        "Bob.",
    )
    assert metrics.last_word_split("word") == ("", "word")


def test_bits_per_byte_and_perplexities():
    ll = -math.log(2) * 24  # 24 bits over 8 bytes
    assert metrics.bits_per_byte(ll, 8) == pytest.approx(3.0)
    assert metrics.perplexity(ll, 8) == pytest.approx(8.0)  # 2 ** 3 per byte


def test_stderr_is_the_binomial_one_for_zero_one_scores():
    values = [1.0] * 30 + [0.0] * 70
    mean, stderr = metrics.mean_stderr(values)
    assert mean == pytest.approx(0.3)
    assert stderr == pytest.approx(math.sqrt(0.3 * 0.7 * 100 / 99 / 100))


def test_spread_across_seeds():
    got = metrics.across_seeds([0.2, 0.4, 0.6])
    assert got["mean"] == pytest.approx(0.4) and got["seed_std"] == pytest.approx(0.2)
    assert (got["seed_min"], got["seed_max"]) == (0.2, 0.6)


def test_bootstrap_stderr_agrees_with_the_analytic_ones():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, 400)
    # Of a mean: the sample std / sqrt(n), within the bootstrap's own noise (1,000 resamples: ~2 %).
    se = metrics.bootstrap_stderr(lambda x: x.mean(-1), x)
    assert se == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=0.08)
    # Of a ratio of sums (what bits per byte is): the delta method's sqrt(var(y - r b) / n) / mean(b).
    ll, n_bytes = -rng.gamma(4.0, 50.0, 400), rng.integers(100, 400, 400).astype(float)
    r = ll.sum() / n_bytes.sum()
    delta = np.std(ll - r * n_bytes, ddof=1) / math.sqrt(len(ll)) / n_bytes.mean()
    assert metrics.bootstrap_stderr(lambda y, b: y.sum(-1) / b.sum(-1), ll, n_bytes) == pytest.approx(delta, rel=0.08)
    assert metrics.bootstrap_stderr(lambda x: x.mean(-1), [1.0]) == 0.0  # one document: no spread to measure
