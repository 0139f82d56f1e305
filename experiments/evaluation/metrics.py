"""Per-item scores and their aggregates. Definitions in docs/evaluation.md; names say the normalisation."""

import math
import re
import string
from collections.abc import Sequence

import numpy as np


def choice_metrics(
    logprobs: Sequence[float],
    n_tokens: Sequence[int],
    choices: Sequence[str],
    gold: int,
    uncond_logprobs: Sequence[float] | None = None,
    prior_logprobs: Sequence[float] | None = None,
) -> dict[str, float]:
    """One multiple-choice item: 1.0 where the gold choice wins under each normalisation (ties go to the first
    choice, like numpy's argmax in lm-eval). uncond_logprobs: each choice after GPT-3's "Answer:"; prior_logprobs:
    each choice after the empty context (lm-eval's acc_mutual_info)."""
    ll = np.asarray(logprobs, np.float64)
    out = {
        "acc": float(np.argmax(ll) == gold),
        "acc_norm": float(np.argmax(ll / np.array([max(len(c), 1) for c in choices])) == gold),  # lm-eval: chars
        "acc_per_token": float(np.argmax(ll / np.maximum(np.asarray(n_tokens), 1)) == gold),  # GPT-3's default
    }
    if uncond_logprobs is not None:
        out["acc_uncond"] = float(np.argmax(ll - np.asarray(uncond_logprobs, np.float64)) == gold)
    if prior_logprobs is not None:
        out["acc_mutual_info"] = float(np.argmax(ll - np.asarray(prior_logprobs, np.float64)) == gold)
    return out


def normalise_answer(text: str) -> str:
    """Whitespace at either end is not part of an answer (GPT-3 strips the space after "A:")."""
    return text.strip()


def exact_match(generated: str, target: str) -> float:
    return float(normalise_answer(generated) == normalise_answer(target))


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match_aliases(generated: str, aliases: Sequence[str]) -> float:
    """lm-eval's triviaqa exact_match: the generation stripped (its remove_whitespace filter) equals any alias once
    both are lower-cased and their ASCII punctuation deleted (ignore_case, ignore_punctuation). Aliases are not
    stripped; articles and inner spaces count (not SQuAD's normalisation). On NumPy string arrays as lm-eval's, so
    its quirks stay: a letter that lower-cases longer ("İ") is cut to the array's width, trailing NULs dropped."""

    def fold(texts: list[str]) -> np.ndarray:
        return np.char.translate(np.char.lower(np.asarray(texts, dtype=str)), _PUNCTUATION)

    return float(np.any(fold([generated.strip()] * len(aliases)) == fold(list(aliases))))


def last_word_split(text: str) -> tuple[str, str]:
    """(everything before the last word, the last word) of a passage: LAMBADA's context and target."""
    text = text.rstrip()
    match = re.search(r"\S+$", text)
    if match is None or match.start() == 0:
        return "", text
    return text[: match.start()].rstrip(), match.group()


def perplexity(total_logprob: float, count: int) -> float:
    """exp(-sum log p / count): per token, per word or per byte depending on what `count` counts."""
    return math.exp(-total_logprob / max(count, 1))


def bits_per_byte(total_logprob: float, n_bytes: int) -> float:
    return -total_logprob / max(n_bytes, 1) / math.log(2)


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error, sample std / sqrt(n) (lm-eval's mean_stderr; binomial for 0/1 scores)."""
    x = np.asarray(values, np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def across_seeds(per_seed: Sequence[float]) -> dict[str, float]:
    """Spread of a metric over shot seeds: what lm-eval's stderr leaves out (it samples items only)."""
    x = np.asarray(per_seed, np.float64)
    return {
        "mean": float(x.mean()),
        "seed_std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "seed_min": float(x.min()),
        "seed_max": float(x.max()),
    }


def across_orders(per_seed_order: Sequence[Sequence[float]]) -> dict:
    """Spread of a metric over shot orders, taken within each shot selection and averaged over selections, so
    that it measures the order alone; each seed's value is its mean over orders (what `across_seeds` spreads)."""
    x = [np.asarray(v, np.float64) for v in per_seed_order]
    return {
        "order_std": float(np.mean([v.std(ddof=1) if len(v) > 1 else 0.0 for v in x])),
        "order_min": float(np.mean([v.min() for v in x])),
        "order_max": float(np.mean([v.max() for v in x])),
        "per_seed": [float(v.mean()) for v in x],
        "per_order": [[float(a) for a in v] for v in x],
    }


BOOTSTRAP_RESAMPLES = 1000


def bootstrap_stderr(statistic, *columns, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """Standard error of statistic(*columns) over rows resampled with replacement (lm-eval's bootstrap_stderr, for
    statistics such as perplexity that are not a mean of per-row values). `statistic` reduces the last axis."""
    cols = [np.asarray(c, np.float64) for c in columns]
    n = len(cols[0])
    if n < 2:
        return 0.0
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return float(np.std(statistic(*(c[rows] for c in cols)), ddof=1))
