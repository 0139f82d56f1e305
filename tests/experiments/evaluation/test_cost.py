"""meshlm eval --dry-run: the counts equal the requests the harness makes, and the packed tokens come out as written
out by hand."""

from meshlm.experiments.evaluation import cost, harness
from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks.base import Task
from tests.experiments.evaluation.scripted_lm import ScriptedLM
from tests.experiments.evaluation.test_formats import _qa_task


def test_the_counts_are_the_requests_the_harness_sends_with_every_option():
    task = _qa_task()
    settings = harness.EvalSettings(shots=(0, 2), seeds=2, orders=2, formats=3, calibrate=True).validate()
    lm = ScriptedLM(lambda context, continuation: 0.0)
    harness.run_task(lm, task, settings)
    counted = cost.count(lm.tokenizer, lm.n_ctx, [task], settings)["qa"]
    assert counted.requests == sum(len(call) for call in lm.calls)
    assert counted.contexts == sum(len({tuple(c) for c, _ in call}) for call in lm.calls)
    # K=0 runs once however many seeds; each K=2 seed runs 2 orders; 3 formats; calibration's shared requests.
    per_prompt_set = 2 * len(task.items)
    assert counted.requests > 3 * (1 + 2 * 2) * per_prompt_set


def test_packed_tokens_count_a_shared_context_once():
    items = (Item("0", "ab", choices=("c", "dd"), gold=0),)
    task = Task("toy", "multiple_choice", items, items, "test", PromptFormat(), uncond_context="")
    lm = ScriptedLM(lambda context, continuation: 0.0)
    got = cost.count(lm.tokenizer, 64, [task], harness.EvalSettings(batch_size=4).validate())["toy"]
    # EOS "a" "b" once, then " c" and " dd" less their last tokens (predicted only): 3 + 1 + 2 tokens.
    assert (got.requests, got.contexts, got.tokens) == (2, 1, 6)
    assert got.padded == 4 * 16  # one call: 4 rows (the batch filled) of the shortest bucket
