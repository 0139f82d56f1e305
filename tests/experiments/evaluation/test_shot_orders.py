"""--orders: distinct seeded orders of the same shots, and their spread kept apart from the spread over seeds."""

import zlib

from meshlm.experiments.evaluation import harness, report, shot_orders
from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks.base import Task
from tests.experiments.evaluation.scripted_lm import ScriptedLM

SHOTS = [Item(id=str(i), context=f"s{i}", target="t") for i in range(4)]


def test_orders_are_distinct_seeded_permutations_of_the_same_shots():
    assert shot_orders.orders(SHOTS, 1, 0, "task", "q") == [SHOTS]
    assert shot_orders.orders(SHOTS[:1], 5, 0, "task", "q") == [SHOTS[:1]]
    three = shot_orders.orders(SHOTS, 3, 0, "task", "q")
    assert three[0] == SHOTS and len({tuple(s.id for s in o) for o in three}) == 3
    assert all(sorted(o, key=lambda s: s.id) == SHOTS for o in three)
    assert three == shot_orders.orders(SHOTS, 3, 0, "task", "q")
    assert three != shot_orders.orders(SHOTS, 3, 1, "task", "q")
    assert len({tuple(s.id for s in o) for o in shot_orders.orders(SHOTS[:3], 10, 0, "task", "q")}) == 6  # 3!


def _task() -> Task:
    items = tuple(Item(id=str(i), context=f"q{i}", choices=("a", "b"), gold=i % 2) for i in range(16))
    return Task("toy", "multiple_choice", items, items, "test", PromptFormat(fewshot_delimiter="\n"), uncond_context="")


def _order_sensitive() -> ScriptedLM:
    """Prefers "a" or "b" by a hash of the whole prompt, so the order of the shots changes the answer."""
    return ScriptedLM(lambda context, continuation: float(zlib.crc32((context + continuation).encode()) % 7))


def test_the_order_spread_is_zero_with_one_order_or_at_most_one_shot():
    settings = harness.EvalSettings(shots=(0, 1, 3), seeds=2).validate()
    result = harness.run_task(_order_sensitive(), _task(), settings)["shots"]
    for k in ("0", "1", "3"):
        acc = result[k]["metrics"]["acc"]
        assert result[k]["orders"] == 1 and acc["order_std"] == 0.0
        assert acc["per_seed"] == [v for (v,) in acc["per_order"]]
    many = harness.run_task(_order_sensitive(), _task(), harness.EvalSettings(shots=(0, 1), orders=4))["shots"]
    assert many["1"]["orders"] == 1 and many["1"]["metrics"]["acc"]["order_std"] == 0.0


def test_several_orders_differ_are_reproducible_and_stay_apart_from_seeds():
    settings = harness.EvalSettings(shots=(3,), seeds=2, orders=4).validate()
    lm = _order_sensitive()
    first = harness.run_task(lm, _task(), settings)["shots"]["3"]
    assert first == harness.run_task(_order_sensitive(), _task(), settings)["shots"]["3"]
    acc = first["metrics"]["acc"]
    assert first["orders"] == 4 and len(acc["per_order"]) == 2 and all(len(v) == 4 for v in acc["per_order"])
    assert acc["order_std"] > 0 and acc["order_min"] < acc["order_max"]
    # Each seed's value is its mean over orders; the seed spread is taken over those means.
    assert acc["per_seed"] == [sum(v) / 4 for v in acc["per_order"]]
    assert acc["mean"] == sum(acc["per_seed"]) / 2
    # Four calls per seed, each with the same items' prompts in a different order.
    contexts = [sorted(tuple(ctx) for ctx, _ in call) for call in lm.calls]
    assert len(contexts) == 8 and len({tuple(c) for c in contexts}) == 8
    models = [{"name": "m", "params": 1, "results": {"toy": {"primary": "acc", "n_items": 16, "shots": {"3": first}}}}]
    assert "### toy: acc over shot orders" in report.markdown(models, [3])
