"""Prompt formats (--formats): restyled text written out by hand, which names count as fields, the sampled formats,
and the spread the harness reports over them on a scripted model whose answers depend on the format."""

import dataclasses
import math

import numpy as np

from meshlm.experiments.evaluation import formats, harness, report
from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks import standard
from meshlm.experiments.evaluation.tasks.base import Task
from tests.experiments.evaluation.scripted_lm import ScriptedLM


def _qa_task(n: int = 8) -> Task:
    items = tuple(
        Item(
            id=str(i), context=f"Passage {i} here.\nQuestion: is {i} even?\nAnswer:", choices=("yes", "no"), gold=i % 2
        )
        for i in range(n)
    )
    return Task("qa", "multiple_choice", items, items, "test", uncond_context="")


def test_a_context_is_restyled_field_by_field_and_free_text_is_kept():
    text = "Passage: one\ntwo lines.\nQuestion: is it?\nAnswer:"
    v = formats.Variant("upper", " - ", " | ", "\n")
    assert formats.restyle_text(text, ("Passage", "Question", "Answer"), v) == (
        "PASSAGE - one\ntwo lines. | QUESTION - is it? | ANSWER -"
    )
    v = formats.Variant("lower", ":: ", "\n\n")
    assert formats.restyle_text("Q: 2 plus 2?\nA: ", ("Q", "A"), v) == "q:: 2 plus 2?\n\na:: "  # trailing space kept
    assert formats.restyle_text(text, (), v) == text
    # GPT-3's arithmetic puts a blank line before "A:": the breaks before a field are one separator.
    v = formats.Variant("as written", ": ", " ")
    assert formats.restyle_text("Q: What is 4 plus 5?\n\nA:", ("Q", "A"), v) == "Q: What is 4 plus 5? A:"


def test_fields_are_the_names_that_start_a_line_in_every_context():
    assert formats.descriptors(_qa_task()) == ("Answer", "Question")  # "Passage 0 here." names nothing
    labels = tuple(
        Item(str(i), f"{w}: a man sits.", choices=("a", "b"), gold=0) for i, w in enumerate(["Painting", "Fishing"])
    )
    assert formats.descriptors(Task("hs", "multiple_choice", labels, labels, "test")) == ()
    # A task's declared fields win: hellaswag's activity label is never one, ARC's question is.
    assert standard.SPECS["hellaswag"].descriptors == () and standard.SPECS["arc_easy"].descriptors == standard.QA
    declared = dataclasses.replace(_qa_task(), fmt=PromptFormat(descriptors=("Question",)))
    assert formats.descriptors(declared) == ("Question",)


def test_the_sampled_formats_start_with_the_tasks_own_and_are_distinct_and_seeded():
    task = _qa_task()
    chosen = formats.variants(task, 12)
    assert chosen[0] == formats.OWN and len(chosen) == 12
    assert chosen == formats.variants(task, 12)  # the same for every model
    examples = [formats.example(formats.apply(task, v)) for v in chosen]
    assert len(set(examples)) == 12
    assert (
        examples[0]
        == "Passage 1 here.\nQuestion: is 1 even?\nAnswer: no\n\nPassage 0 here.\nQuestion: is 0 even?\nAnswer:"
    )
    # Without fields only the shot separator varies: 4 others besides the task's own "\n\n".
    free = dataclasses.replace(task, fmt=PromptFormat(descriptors=()))
    assert len(formats.variants(free, 50)) == 5
    assert formats.variants(task, 1) == [formats.OWN]


def _format_sensitive_lm() -> ScriptedLM:
    """Right on every item when fields are separated by " | ", always "yes" (half right) otherwise."""

    def score(context: str, continuation: str) -> float:
        query = context.split("\n\n")[-1] if " | " not in context else context.split("|")[-2]
        gold = "yes" if any(f"is {i} even" in query for i in range(0, 8, 2)) else "no"
        if " | " in context:
            return math.log(0.9 if continuation.strip() == gold else 0.1)
        return math.log(0.6 if continuation.strip() == "yes" else 0.4)

    return ScriptedLM(score)


def test_the_harness_reports_the_spread_over_formats_and_the_best_and_worst():
    task = _qa_task()
    one = harness.run_task(_format_sensitive_lm(), task, harness.EvalSettings(shots=(0,)).validate())
    assert "formats" not in one
    settings = harness.EvalSettings(shots=(0,), formats=16).validate()
    result = harness.run_task(_format_sensitive_lm(), task, settings)
    assert result["shots"] == one["shots"]  # format 0 is the plain evaluation
    spread = result["formats"]["shots"]["0"]
    acc = spread["metrics"]["acc"]
    chosen = formats.variants(task, 16)
    expected = [1.0 if v.line_separator == " | " else 0.5 for v in chosen]
    assert acc["per_format"] == expected and 1.0 in expected
    assert acc["mean"] == sum(expected) / 16 and (acc["min"], acc["max"]) == (0.5, 1.0)
    assert math.isclose(acc["std"], float(np.std(expected, ddof=1)))
    best, worst = result["formats"]["variants"][spread["best"]], result["formats"]["variants"][spread["worst"]]
    assert best["format"]["line_separator"] == " | " and " | " in best["example"]
    assert worst["format"] == {"format": "the task's own"}  # the first of the worst


def test_results_md_shows_the_spread_and_the_best_and_worst_format_and_the_plot_its_band(tmp_path):
    settings = harness.EvalSettings(shots=(0,), formats=16).validate()
    result = harness.run_task(_format_sensitive_lm(), _qa_task(), settings)
    models = [{"name": "m", "params": 10, "results": {"qa": result}}]
    md = report.markdown(models, [0])
    acc = result["formats"]["shots"]["0"]["metrics"]["acc"]
    assert f"| m | 10 | {acc['mean']:.3f} [0.500, 1.000] +- {acc['std']:.3f} |" in md
    best = result["formats"]["variants"][result["formats"]["shots"]["0"]["best"]]
    f = best["format"]
    assert (
        f"m, best format at K=0: casing {f['casing']!r}, field separator {f['field_separator']!r}, "
        f"line separator ' | ', shot separator {f['shot_separator']!r}\n\n```\n{best['example']}\n```" in md
    )
    assert report.plot_icl_curves(models, tmp_path) == [tmp_path / "icl_qa.png"]
    assert report.sensitivity(result, "0") == {"format": acc["std"]}  # one seed, one order: no other spread
    assert report.plot_sensitivity(models, tmp_path) == []  # one model: nothing to plot against size
    small = {"name": "s", "params": 5, "results": {"qa": result}}
    assert report.plot_sensitivity([small] + models, tmp_path) == [tmp_path / "sensitivity_qa.png"]
