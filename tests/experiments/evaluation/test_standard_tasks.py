"""Standard benchmarks read in their upstream schemas: lm-eval's preprocessing and prompts, partial scoring,
JSON lines = Parquet, first_n shots, the TFDS adapters and the errors. Parity with lm-eval itself:
test_standard_lm_eval.py."""

import ast

import pytest

from meshlm.experiments.evaluation import metrics, tasks
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


def test_race_prompt_is_the_article_then_its_earlier_questions_answered(tmp_path):
    task = standard.build("race", _write(tmp_path, fx.RACE, "race.parquet"))
    lucy, recycling, museum = task.items
    assert lucy.context == (
        "Article: Lucy was afraid of water when she was young. Her father took her to the pool every Sunday and"
        " taught her to float. After two summers she could swim across the lake near her grandmother's house.\n\n"
        "Question: Who taught Lucy to swim?\nAnswer: Her father.\n"
        "At first Lucy was afraid of water\n"  # a cloze question: its answer in place of the blank
        "What can we learn from the passage?"
    )
    assert lucy.choices[lucy.gold] == "Practice helps." and len(lucy.choices) == 4
    # The evaluated question is written as it is, a cloze one with its blank.
    assert recycling.context.endswith("\n\nThe passage is mainly about recycling\nRecycling  _  than burying rubbish.")
    assert museum.context.endswith("sign at the door.\n\nHow much does a ticket cost for a child of four?")
    assert [it.gold for it in task.items] == [0, 2, 0] and task.kind == "multiple_choice"


def test_storycloze_joins_the_four_sentences_and_offers_both_endings(tmp_path):
    for name in ("storycloze_2016", "storycloze_2018"):
        task = standard.build(name, _write(tmp_path, fx.STORYCLOZE, "story.jsonl"))
        item = task.items[2]
        assert item.context == (
            "Sarah had been dreaming of visiting Europe for years. She had finally saved enough for the trip. She"
            " landed in Spain and traveled east across the continent. She didn't like how different everything was."
        )
        assert item.answer == "Sarah decided that she preferred her home over Europe."
        assert [it.gold for it in task.items] == [0, 0, 1, 1]


def test_triviaqa_generates_to_lm_evals_stops_and_keeps_every_alias(tmp_path):
    task = standard.build("triviaqa", _write(tmp_path, fx.TRIVIAQA, "t.jsonl"))
    item = task.items[2]
    # lm-eval's "?" follows the question as written; "&" and quotes are not escaped.
    assert item.context == 'Question: In which city is the "Little Mermaid" statue & harbour?\nAnswer:'
    assert task.items[0].context.endswith("1993??\nAnswer:")
    assert item.answer == "Copenhagen" and item.aliases == (
        "Copenhagen",
        "København",
        "Kobenhavn",
        "Copenhagen, Denmark",
    )
    assert (task.kind, task.until, task.max_gen_tokens, task.fmt.descriptors) == (
        "generate",
        ("\n", ".", ","),
        256,
        ("Question", "Answer"),
    )


def test_triviaqa_exact_match_ignores_case_and_punctuation_not_articles():
    aliases = ("Albany", "Albany, NY")
    assert metrics.exact_match_aliases(" albany.", aliases) == 1.0
    assert metrics.exact_match_aliases("ALBANY NY", aliases) == 1.0  # the comma of the alias is dropped too
    assert metrics.exact_match_aliases("the Albany", aliases) == 0.0
    assert metrics.exact_match_aliases("Albany  NY", aliases) == 0.0


def test_race_and_storycloze_tfds_rows_map_to_the_upstream_schema():
    race = standard.SPECS["race"]
    assert race.to_item(race.from_tfds(_tfds_race(fx.RACE[0]))) == race.to_item(fx.RACE[0])
    story = standard.SPECS["storycloze_2016"]
    row = fx.STORYCLOZE[3]
    context = " ".join(row[f] for f in standard.STORY)
    tfds_row = {"context": context, "endings": [row["sentence_quiz1"], row["sentence_quiz2"]], "label": 2}
    assert story.to_item(story.from_tfds(tfds_row)) == story.to_item(row)


def test_race_from_tfds_draws_shots_from_the_evaluated_split_never_the_item(monkeypatch):
    """EleutherAI/race has only a test split, so lm-eval's shots come from it; TFDS's train split is not used."""
    read = []

    def read_tfds(name, split):
        read.append((name, split))
        return [_tfds_race(row) for row in fx.RACE]

    monkeypatch.setattr(records, "read_tfds", read_tfds)
    task = tasks.resolve("race:tfds")
    assert read == [("race/high", "test")] and task.pool == task.items and task.fewshot_split == "test"
    assert [s.id for s in first_shots(task.pool, task.items[0], 2)] == ["2", "1"]


def _tfds_race(row: dict) -> dict:
    """A RACE row as TFDS's race/high holds it: the questions, answers and options in parallel lists."""
    problems = ast.literal_eval(row["problems"])
    fields = {"questions": "question", "answers": "answer", "options": "options"}
    return {"article": row["article"], "example_id": "high1.txt"} | {
        key: [p[field] for p in problems] for key, field in fields.items()
    }


def test_race_storycloze_and_triviaqa_rows_outside_the_schema_are_named(tmp_path):
    race = dict(fx.RACE[0])
    cases = {
        "race": [
            (race | {"problems": ast.literal_eval(race["problems"])}, r"TypeError: `problems` must be a string"),
            (race | {"problems": race["problems"].replace("'B'", "'E'", 1)}, r"KeyError: 'E'"),
            (race | {"problems": race["problems"][:-1]}, r"SyntaxError: "),
            (race | {"problems": "[]"}, r"ValueError: not enough values to unpack"),
        ],
        "storycloze_2016": [(fx.STORYCLOZE[0] | {"answer_right_ending": 3}, r"KeyError: 3")],
        "triviaqa": [
            ({k: v for k, v in fx.TRIVIAQA[0].items() if k != "answer"}, r"KeyError: 'answer'"),
            (fx.TRIVIAQA[0] | {"answer": {"aliases": []}}, r"IndexError: "),
        ],
    }
    for name, rows in cases.items():
        for row, why in rows:
            path = _write(tmp_path, [row], f"{name}.jsonl")
            with pytest.raises(ConfigError, match=rf"{name}.jsonl: row 1 is not in {name}'s upstream schema \({why}"):
                standard.build(name, path)
