"""Standard benchmarks read in their upstream schemas: lm-eval's preprocessing and prompts, partial scoring,
JSON lines = Parquet, first_n shots, the TFDS adapters and the errors. Parity with lm-eval itself:
test_standard_lm_eval.py."""

import pytest

from meshlm.experiments.evaluation import tasks
from meshlm.experiments.evaluation.prompts import PromptFormat, first_shots, render
from meshlm.experiments.evaluation.tasks import records, standard
from meshlm.model.errors import ConfigError
from tests.experiments.evaluation import standard_fixtures as fx


def _write(tmp_path, rows, name):
    fx.write(rows, tmp_path / name)
    return str(tmp_path / name)


def test_hellaswag_preprocessing_is_lm_evals(tmp_path):
    task = tasks.resolve(f"hellaswag:{_write(tmp_path, fx.HELLASWAG, 'val.jsonl')}")
    first, wikihow = task.items[0], task.items[1]
    assert first.context.startswith("Removing ice from car: Then, the man") and first.context.endswith("smiles. Then")
    assert (
        wikihow.context == "Home and Garden: How to grow tomatoes. Pick a sunny spot. tomatoes need six hours of sun."
    )
    assert wikihow.choices == (
        " Water them. every day.",
        "Plant them in the dark.",
        "Paint the pots blue.",
        "Dig a hole. twice as deep.",
    )
    assert [it.gold for it in task.items] == [3, 0, 1] and task.kind == "multiple_choice"


def test_parquet_and_jsonl_give_the_same_task(tmp_path):
    a = standard.build("arc_easy", _write(tmp_path, fx.ARC, "arc.parquet"))
    b = standard.build("arc_easy", _write(tmp_path, fx.ARC, "arc.jsonl"))
    assert a.items == b.items
    assert a.items[0].context == "Question: Which is a mammal?\nAnswer:"
    assert [it.gold for it in a.items] == [0, 0, 1, 0]  # numeric labels ("1") are looked up as written


def test_winogrande_scores_the_text_after_the_blank_given_each_option(tmp_path):
    task = standard.build(
        "winogrande",
        _write(tmp_path, fx.WINOGRANDE, "w.jsonl") + ":" + _write(tmp_path, fx.WINOGRANDE_TRAIN, "t.jsonl"),
    )
    item = task.items[1]
    assert item.partial and item.gold == 1 and item.target == "is too small."
    assert item.choices == (
        "The trophy does not fit into the suitcase because the trophy",
        "The trophy does not fit into the suitcase because the suitcase",
    )
    shot = task.pool[0]
    # As a shot, the gold option's context is followed by the target (lm-eval's multiple-input few-shot text).
    assert render(PromptFormat(), [shot], item) == (
        "The cup broke when it hit the floor because the floor was hard.\n\n" + item.context
    )


def test_first_n_shots_are_the_pool_in_order_without_the_item(tmp_path):
    task = standard.build("piqa", _write(tmp_path, fx.PIQA, "piqa.parquet"))
    shots = first_shots(task.pool, task.items[0], 2)
    assert [s.id for s in shots] == ["2", "1"]  # the first two other rows; the second sits next to the query
    text = render(task.fmt, shots, task.items[0])
    assert text.startswith("Question: To open a jar\nAnswer: twist the lid hard.\n\nQuestion: Keep bread fresh")


def test_a_separate_shots_file_never_loses_a_shot_to_an_id_clash(tmp_path):
    task = standard.build(
        "piqa", _write(tmp_path, fx.PIQA, "v.jsonl") + ":" + _write(tmp_path, fx.PIQA_TRAIN, "t.jsonl")
    )
    assert [s.context for s in first_shots(task.pool, task.items[0], 2)] == [
        "Question: Light a room\nAnswer:",
        "Question: Cut paper\nAnswer:",
    ]


def test_tfds_rows_map_to_the_upstream_schema():
    arc_tfds = {"id": "x", "question": "Q?", "choices": {"text": ["a", "b", "c"], "label": [0, 1, 2]}, "answerKey": 2}
    arc_hf = {
        "id": "x",
        "question": "Q?",
        "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]},
        "answerKey": "C",
    }
    spec = standard.SPECS["arc_easy"]
    assert spec.to_item(spec.from_tfds(arc_tfds)) == spec.to_item(arc_hf)
    wino = standard.SPECS["winogrande"]
    row = fx.WINOGRANDE[1]
    assert wino.to_item(wino.from_tfds({k: v for k, v in row.items() if k != "answer"} | {"label": 1})) == wino.to_item(
        row
    )


def test_tfds_errors_say_how_to_get_the_data(tmp_path):
    with pytest.raises(ConfigError, match=r"'piqa' is not prepared in .*; run `tfds build piqa`"):
        records.read_tfds("piqa", "validation", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"TFDS has no dataset 'no_such_set' \(DatasetNotFoundError: [^\n]*\)$"):
        records.read_tfds("no_such_set", "validation", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="openbookqa is not in the TFDS catalog; pass openbookqa:PATH"):
        tasks.resolve("openbookqa:tfds")


def test_rows_outside_the_schema_are_named(tmp_path):
    bad = [dict(fx.PIQA[0]), {"goal": "x", "sol1": "y", "label": 0}]
    with pytest.raises(ConfigError, match=r"bad.jsonl: row 2 is not in piqa's upstream schema \(KeyError: 'sol2'\)"):
        standard.build("piqa", _write(tmp_path, bad, "bad.jsonl"))
    with pytest.raises(ConfigError, match="expected a JSON lines or Parquet file"):
        standard.build("piqa", str(tmp_path / "x.csv"))


def test_other_tasks_follow_lm_evals_templates():
    copa = standard.copa(
        {
            "premise": "The man broke his toe.",
            "choice1": "He dropped a hammer.",
            "choice2": "He sang.",
            "question": "cause",
            "label": 0,
        }
    )
    assert copa.context == "The man broke his toe because" and copa.choices == (" he dropped a hammer.", " he sang.")
    boolq = standard.boolq({"passage": "P.", "question": "is it", "label": 1})
    assert boolq.context == "P.\nQuestion: is it?\nAnswer:" and boolq.answer == "yes"
    obqa = standard.openbookqa(
        {"question_stem": "Sun is", "choices": {"text": ["hot", "cold"], "label": ["A", "B"]}, "answerKey": " A"}
    )
    assert obqa.context == "Sun is" and obqa.gold == 0
    lambada = standard.lambada_openai({"text": "he opened the  door"})
    assert (lambada.context, lambada.target) == ("he opened the ", "door")
