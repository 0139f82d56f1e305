"""The request cache: a re-run scores nothing and gives the same results, an added task scores only its own
requests, and other weights never read an entry."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from meshlm.experiments.evaluation import harness
from meshlm.experiments.evaluation.cache import FILE, RequestCache, fingerprint
from tests.experiments.evaluation.helpers import PieceTokenizer, tiny_model
from tests.experiments.evaluation.test_harness import _toy_task

HELDOUT = ["the cat sat on the mat. " * 20, "a dog ran to the sea. " * 20]


def _plus_two():
    task = _toy_task()
    items = tuple(dataclasses.replace(it, context=it.context.replace("+ 1", "+ 2")) for it in task.items)
    return dataclasses.replace(task, name="plus_two", items=items, pool=items)


def test_a_rerun_scores_nothing_and_an_added_task_only_its_own(tmp_path):
    model, tok = tiny_model(n_ctx=64), PieceTokenizer()
    tasks = [_toy_task(), _toy_task("generate"), "icl_score"]  # loglikelihood, generation, per-token requests
    options = dict(shots=(0, 2), batch_size=8, heldout=HELDOUT)
    cache = RequestCache(tmp_path / FILE)
    first = harness.evaluate(model, tok, tasks, cache=cache, **options)
    # Found already: the generate task's K=0 target requests, which are the multiple-choice task's first choices.
    assert cache.hits == 12 and cache.misses > 0
    requests = cache.hits + cache.misses
    cache.close()

    cache = RequestCache(tmp_path / FILE)  # a new process: read back from the file
    again = harness.evaluate(model, tok, tasks + [_plus_two()], cache=cache, **options)
    assert {k: again[k] for k in first} == first
    alone = RequestCache(tmp_path / "alone.sqlite")
    added = harness.evaluate(model, tok, [_plus_two()], cache=alone, **options)
    assert again["plus_two"] == added["plus_two"]
    # Also found: the added task's 24 unconditional requests (GPT-3's "Answer:" context, the same choices).
    assert (cache.hits, cache.misses) == (requests + 24, alone.misses - 24)

    other = tiny_model(seed=1, n_ctx=64)
    assert fingerprint(other.cfg, nnx.to_pure_dict(nnx.state(other))) != fingerprint(
        model.cfg, nnx.to_pure_dict(nnx.state(model))
    )
    harness.evaluate(other, tok, [_toy_task()], cache=cache, shots=(0,), batch_size=8)
    assert cache.hits == requests + 24  # other weights: every request scored anew


def test_a_probe_s_numpy_token_rows_are_the_same_requests_as_python_ints(tmp_path):
    cache, computed = RequestCache(tmp_path / FILE), []

    def compute(missing: list[int]) -> list:
        computed.append(missing)
        return [[float(i)] for i in missing]

    assert cache.through("m", "per_token", [[5, 6], [7]], compute) == [[0.0], [1.0]]
    rows = [list(np.array([5, 6], np.int32)), list(np.array([7], np.int64))]  # as the induction probe's rows come
    assert cache.through("m", "per_token", rows, compute) == [[0.0], [1.0]]
    assert computed == [[0, 1]] and (cache.hits, cache.misses) == (2, 2)
    with pytest.raises(TypeError, match="float32"):
        cache.through("m", "per_token", [[np.float32(5)]], compute)
