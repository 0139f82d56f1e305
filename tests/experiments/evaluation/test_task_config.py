"""Prompt control for file tasks (task:PATH.yaml), acc_mutual_info, and the separator of the unconditional
requests (a BIG-bench answer's space lives in its context's "A: ")."""

import json

import pytest

from meshlm.experiments.evaluation import harness, tasks
from meshlm.model.errors import ConfigError
from tests.experiments.evaluation.scripted_lm import ScriptedLM

SETTINGS = harness.EvalSettings(shots=(0,))


def _bigbench(tmp_path, **task_fields) -> str:
    examples = [
        {"input": "Which is a mammal", "target_scores": {"whale": 1, "shark": 0}},
        {"input": "Which can fly", "target_scores": {"fish": 0, "bird": 1}},
    ]
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"name": "animals", "examples": examples} | task_fields))
    return str(path)


def _requests(lm: ScriptedLM) -> list[tuple[str, str]]:
    return [(lm.tokenizer.decode(c), lm.tokenizer.decode(x)) for call in lm.calls for c, x in call]


def test_unconditional_requests_score_the_choice_with_the_space_the_prompt_gives_it(tmp_path):
    lm = ScriptedLM(lambda ctx, cont: 0.0)
    harness.run_task(lm, tasks.resolve(f"bigbench:{_bigbench(tmp_path, task_prefix='Animals.')}"), SETTINGS)
    requests = _requests(lm)
    # Conditional: the context ends "A:" and the space before the answer moves to the continuation.
    assert ("Animals.\nQ: Which is a mammal\nA:", " whale") in requests
    # GPT-3's "Answer:" (acc_uncond) and the empty context (acc_mutual_info) score the same " whale", with no
    # task prefix: the answer alone, as the model reads it after the question.
    assert ("Answer:", " whale") in requests and ("", " whale") in requests
    assert {cont for _, cont in requests} == {" whale", " shark", " fish", " bird"}
    assert len(requests) == 3 * 4


def test_mutual_info_subtracts_each_choices_log_probability_after_the_empty_context(tmp_path):
    # Conditional scores favour "shark" (the wrong answer) by 1 nat; after the empty context "shark" is 3 nats
    # likelier than "whale" anyway, so log P(c | x) - log P(c) picks "whale". After "Answer:" both are equal.
    prior = {" whale": -5.0, " shark": -2.0, " fish": -1.0, " bird": -1.0}
    conditional = {" whale": -2.0, " shark": -1.0, " fish": -3.0, " bird": -1.0}

    def score(ctx: str, cont: str) -> float:
        return {"": prior, "Answer:": dict.fromkeys(prior, -1.0)}.get(ctx, conditional)[cont]

    result = harness.run_task(ScriptedLM(score), tasks.resolve(f"bigbench:{_bigbench(tmp_path)}"), SETTINGS)
    got = {name: m["mean"] for name, m in result["shots"]["0"]["metrics"].items()}
    # Item 1: acc 0 (shark), mutual info 1 (-2+5 > -1+2), uncond 0 (same as acc). Item 2: bird wins everywhere.
    assert got["acc"] == 0.5 and got["acc_uncond"] == 0.5 and got["acc_mutual_info"] == 1.0


def _jsonl(tmp_path) -> str:
    rows = [
        {"context": "Q: 2+2?", "choices": ["3", "4"], "gold": 1, "split": "train"},
        {"context": "Q: 1+1?", "choices": ["2", "5"], "gold": 0},
        {"context": "Q: 3+3?", "choices": ["9", "6"], "gold": 1},
    ]
    path = tmp_path / "sums.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path.name


def test_a_task_yaml_sets_the_prompt_the_choices_and_the_baselines(tmp_path):
    (tmp_path / "sums.yaml").write_text(
        f"kind: jsonl\npath: {_jsonl(tmp_path)}\nname: sums\ndescription: Add.\n"
        'target_delimiter: " -> "\nfewshot_delimiter: "\\n---\\n"\nchoice_format: "({letter}) {choice}"\n'
        'uncond_context: ""\nmutual_info: false\n'
    )
    task = tasks.resolve(f"task:{tmp_path / 'sums.yaml'}")
    assert task.name == "sums" and task.items[0].choices == ("(A) 2", "(B) 5")
    lm = ScriptedLM(lambda ctx, cont: -len(cont))
    result = harness.run_task(lm, task, harness.EvalSettings(shots=(1,)))
    requests = _requests(lm)
    # The shot comes from the train split, its answer in the chosen form (the delimiter belongs to the scored
    # continuation); no unconditional request is made.
    assert requests[:2] == [
        ("Add.\n---\nQ: 2+2? -> (B) 4\n---\nQ: 1+1?", " -> (A) 2"),
        ("Add.\n---\nQ: 2+2? -> (B) 4\n---\nQ: 1+1?", " -> (B) 5"),
    ]
    assert len(requests) == 4
    assert set(result["shots"]["1"]["metrics"]) == {"acc", "acc_norm", "acc_per_token"}


def test_a_jsonl_task_without_a_yaml_reports_both_baselines(tmp_path):
    result = harness.run_task(
        ScriptedLM(lambda c, x: 0.0), tasks.resolve(f"jsonl:{tmp_path / _jsonl(tmp_path)}"), SETTINGS
    )
    assert set(result["shots"]["0"]["metrics"]) == {"acc", "acc_norm", "acc_per_token", "acc_uncond", "acc_mutual_info"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: jsonl\npath: sums.jsonl\nprefix: x\n", "unknown key 'prefix'"),
        ("path: sums.jsonl\n", "kind missing"),
        ("kind: jsonl\npath: sums.jsonl\nmutual_info: yes please\n", "mutual_info must be a bool"),
        ("kind: jsonl\npath: sums.jsonl\nchoice_format: '{answer}'\n", "not {answer}"),
        ("kind: jsonl\npath: sums.jsonl\nchoice_format: '{choice'\n", "not a format string"),
        ("kind: jsonl\npath: nowhere.jsonl\n", "nowhere.jsonl does not exist"),
        ("kind: icl_score\npath: sums.jsonl\n", "unknown task"),
        ("- kind\n", "a mapping"),
    ],
)
def test_bad_task_yamls_say_what_is_wrong(tmp_path, text, message):
    _jsonl(tmp_path)
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        tasks.resolve(f"task:{tmp_path / 't.yaml'}")


def test_baselines_are_refused_where_choices_are_not_answers(tmp_path):
    (tmp_path / "gen.jsonl").write_text(json.dumps({"context": "2+2=", "target": "4"}))
    (tmp_path / "t.yaml").write_text("kind: jsonl\npath: gen.jsonl\nmutual_info: true\n")
    with pytest.raises(ConfigError, match="multiple-choice"):
        tasks.resolve(f"task:{tmp_path / 't.yaml'}")
