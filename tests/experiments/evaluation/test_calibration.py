"""Contextual calibration: the paper's formula on a hand-made bias, the content-free requests, and the harness."""

import math

import numpy as np
import pytest

from meshlm.experiments.evaluation import calibration, harness
from meshlm.experiments.evaluation.prompts import Item, PromptFormat, draw_shots, fit, render
from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.experiments.evaluation.tasks.base import Task
from tests.experiments.evaluation.helpers import PieceTokenizer, tiny_model
from tests.experiments.evaluation.scripted_lm import ScriptedLM

FMT = PromptFormat(fewshot_delimiter="\n")


def _polarity_task(n: int = 12) -> Task:
    """Items "pos I :" (gold yes) and "neg I :" (gold no): the scripted scores tell them apart by the first word."""
    items = tuple(
        Item(id=str(i), context=f"{'pos' if i % 2 == 0 else 'neg'} {i} :", choices=("yes", "no"), gold=i % 2)
        for i in range(n)
    )
    return Task("polarity", "multiple_choice", items, items, "test", FMT, uncond_context="")


def test_calibration_flips_a_biased_prediction_as_the_papers_formula_does():
    # The model favours choice 0 everywhere: p = (0.6, 0.4) for a query whose gold is 1.
    logprobs = np.log([0.6, 0.4]) - 3.0  # unnormalised: only the ratio between choices counts
    # Two content-free inputs give (0.9, 0.1) and (0.7, 0.3) once normalised: p_cf = (0.8, 0.2).
    content_free = [np.log([0.45, 0.05]), np.log([0.07, 0.03])]
    p_cf = calibration.bias(content_free)
    np.testing.assert_allclose(p_cf, [0.8, 0.2])
    p = np.array([0.6, 0.4])
    W, b = np.diag(1 / p_cf), np.zeros(2)  # Zhao et al. 2021, section 4: W = diag(p_cf)^-1, b = 0
    assert np.argmax(p) == 0 and np.argmax(W @ p + b) == 1  # (0.75, 2.0)
    assert calibration.calibrated_prediction(logprobs, p_cf) == 1
    # A uniform p_cf changes nothing.
    assert calibration.calibrated_prediction(logprobs, np.array([0.5, 0.5])) == 0


def test_content_free_prompts_keep_the_kept_shots_and_are_listed_once():
    tok, task = PieceTokenizer(pieces=("N/A", "[MASK]")), _polarity_task()
    items = task.items[:4]
    shots = [draw_shots(task.pool, it, 2, 0, task.name) for it in items]
    fitted = [fit(tok, FMT, s, it, [" yes", " no"], 64) for s, it in zip(shots, items)]
    cf = calibration.content_free(tok, task, items, fitted, shots, calibration.CONTENT_FREE, 64)
    for s, inputs in zip(shots, cf.index_ICA):
        for text, requests in zip(calibration.CONTENT_FREE, inputs):
            got = [tok.decode(cf.pairs[r][0] + cf.pairs[r][1]) for r in requests]
            assert got == [render(FMT, s, Item("q", text)) + " yes", render(FMT, s, Item("q", text)) + " no"]
    # Shots that do not fit are left out of the content-free prompt too: n_ctx leaves room for one shot here.
    small = fit(tok, FMT, shots[0], items[0], [" yes", " no"], 28)
    assert small.n_shots == 1
    cf = calibration.content_free(tok, task, items[:1], [small], shots[:1], ("N/A",), 28)
    assert tok.decode(cf.pairs[0][0]) == render(FMT, shots[0][:1], Item("q", "N/A")).rstrip()
    # At K=0 every item's content-free prompts are the same: 3 inputs x 2 choices.
    zero = [fit(tok, FMT, [], it, [" yes", " no"], 64) for it in task.items]
    cf = calibration.content_free(tok, task, task.items, zero, [[]] * len(zero), calibration.CONTENT_FREE, 64)
    assert len(cf.pairs) == 6


def _scripted(p_cf: tuple[float, float]) -> ScriptedLM:
    """Real prompts: (0.9, 0.1) for "pos" items, (0.6, 0.4) for "neg" ones, so raw argmax always says yes (half
    right); content-free prompts: p_cf."""

    def score(context: str, continuation: str) -> float:
        # The last line of the whole text: an empty content-free input leaves the delimiter in the continuation.
        query = (context + continuation).split("\n")[-1].split(" ")[0]
        probs = {"pos": (0.9, 0.1), "neg": (0.6, 0.4)}.get(query, p_cf)
        return math.log(probs[["yes", "no"].index(continuation.strip())])

    return ScriptedLM(score)


@pytest.mark.parametrize("p_cf, calibrated", [((0.5, 0.5), 0.5), ((0.8, 0.2), 1.0)])
def test_the_harness_reports_calibrated_beside_raw_accuracy(p_cf, calibrated):
    lm, task = _scripted(p_cf), _polarity_task()
    settings = harness.EvalSettings(shots=(0, 2), calibrate=True).validate()
    result = harness.run_task(lm, task, settings)
    for k in ("0", "2"):
        got = result["shots"][k]["metrics"]
        assert got["acc"]["mean"] == 0.5
        # Uniform p_cf: calibrated = raw; (0.8, 0.2): yes wins only where p(yes) > 0.8, the "pos" items.
        assert got["acc_calibrated"]["mean"] == calibrated
    assert result["calibration"] == {"metric": "acc_calibrated", "content_free": ["N/A", "", "[MASK]"]}
    # K=0: the content-free prompts coincide across items and are scored once, in the real prompts' call.
    assert len(lm.calls[0]) == 2 * len(task.items) + 3 * 2


def test_calibration_skips_tasks_it_does_not_apply_to():
    gen_items = tuple(Item(id=str(i), context=f"{i} + 1 =", target=str(i + 1)) for i in range(4))
    gen = Task("toy_generate", "generate", gen_items, gen_items, "test", max_gen_tokens=2)
    partial = Item(id="0", context="x", target="y", choices=("a", "b"), gold=0, partial=True)
    wino = Task("wino", "multiple_choice", (partial,), (partial,), "test")
    assert calibration.not_applicable(gen).startswith("not applicable: a generate task")
    assert calibration.not_applicable(wino).startswith("not applicable: partial scoring")
    assert calibration.not_applicable(_polarity_task()) == ""
    model, tok = tiny_model(n_ctx=64), PieceTokenizer(pieces=("N/A", "[MASK]"))
    results = harness.evaluate(model, tok, [gen, "perplexity"], calibrate=True, batch_size=4)
    assert results["toy_generate"]["calibration"] == calibration.not_applicable(gen)
    assert "acc_calibrated" not in results["toy_generate"]["shots"]["0"]["metrics"]
    assert results["perplexity"]["calibration"].startswith("not applicable")


@pytest.mark.slow
def test_calibrated_accuracy_on_a_tiny_model_matches_the_formula_on_direct_scores():
    model, tok = tiny_model(n_ctx=64), PieceTokenizer(pieces=("N/A", "[MASK]"))
    items = tuple(
        Item(id=str(i), context=f"{i} + 1 =", choices=(str(i + 1), str(i + 2), "x"), gold=i % 3) for i in range(24)
    )
    task = Task("toy", "multiple_choice", items, items, "test", FMT, uncond_context="")
    got = harness.evaluate(model, tok, [task], shots=(2,), calibrate=True, batch_size=8)["toy"]["shots"]["2"]
    # Independently: one request per row (no packing), the paper's argmax of p / p_cf written out here.
    lm = LanguageModel(model, tok, batch_size=8, pack=False)
    hits = []
    for it in items:
        shots = draw_shots(items, it, 2, 0, "toy")
        conts = [" " + c for c in it.choices]

        p_cf = np.mean(
            [_probabilities(lm, shots, Item("cf", text), conts) for text in calibration.CONTENT_FREE], axis=0
        )
        hits.append(np.argmax(_probabilities(lm, shots, it, conts) / p_cf) == it.gold)
    np.testing.assert_allclose(got["metrics"]["acc_calibrated"]["mean"], np.mean(hits))
    assert got["metrics"]["acc_calibrated"]["mean"] != got["metrics"]["acc"]["mean"]  # calibration changed answers


def _probabilities(lm: LanguageModel, shots, query: Item, continuations) -> np.ndarray:
    f = fit(lm.tokenizer, FMT, shots, query, continuations, lm.n_ctx)
    lls = np.array([s.logprob for s in lm.loglikelihood_tokens([(f.context_ids, c) for c in f.continuation_ids])])
    return np.exp(lls) / np.exp(lls).sum()
