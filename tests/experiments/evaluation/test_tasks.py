import json

import pytest
import wordfreq

from meshlm.experiments.evaluation import tasks
from meshlm.experiments.evaluation.tasks import arithmetic, files, label_mapping, scramble
from meshlm.model.errors import ConfigError


@pytest.mark.parametrize("name", arithmetic.NAMES)
def test_arithmetic_answers_are_right_and_problems_distinct(name):
    task = arithmetic.build(name, seed=0, n_items=300)
    questions = [it.context for it in task.items]
    assert len(set(questions)) == 300
    digits = 1 if name == "arithmetic_1dc" else int(name[len("arithmetic_")])
    for it in task.items:
        expression = it.context.removeprefix("Q: What is ").removesuffix("?\n\nA:")
        expression = expression.replace("plus", "+").replace("minus", "-").replace("times", "*")
        numbers = [int(x) for x in expression.replace("(", " ").replace(")", " ").split() if x.lstrip("-").isdigit()]
        assert all(0 <= n < 10**digits for n in numbers)
        assert int(it.target) == eval(expression)  # noqa: S307  (our own arithmetic strings)
    assert arithmetic.build(name, seed=0, n_items=300) == task
    assert arithmetic.build(name, seed=1, n_items=300) != task


def test_scrambles_follow_gpt3_rules():
    for name in scramble.NAMES:
        task = scramble.build(name, seed=0)
        assert task == scramble.build(name, seed=0) and task != scramble.build(name, seed=1) or name == "reversed_words"
        for it in task.items:
            word, shown = it.target, it.context.removesuffix(" =")
            if name == "cycle_letters":
                assert shown != word and shown in word + word
            elif name == "anagrams1":
                assert shown != word and (shown[0], shown[-1]) == (word[0], word[-1]) and sorted(shown) == sorted(word)
            elif name == "anagrams2":
                assert (shown[:2], shown[-2:]) == (word[:2], word[-2:]) and sorted(shown) == sorted(word)
            elif name == "random_insertion":
                assert shown[::2] == word and set(shown[1::2]) <= set(" ./!")
            else:
                assert shown == word[::-1]


def test_scrambles_draw_from_the_10000_most_frequent_words_of_5_to_14_letters():
    words = scramble.words()
    frequent = [w for w in wordfreq.top_n_list("en", 20_000) if w.isascii() and w.isalpha() and w.islower()]
    assert words == tuple(w for w in frequent if 4 < len(w) < 15)[:10_000]
    assert len(set(words)) == 10_000 and {"about", "people", "because"} <= set(words)
    assert len(scramble.build("anagrams1").items) == 10_000  # A1 takes 5-letter words, the others 6 and up
    assert len(scramble.build("cycle_letters").items) == sum(len(w) >= 6 for w in words) > 8_000


def test_label_mapping_keys_always_carry_their_label():
    task = label_mapping.build(seed=0)
    label_of = {}
    for it in task.items:
        label_of.setdefault(it.context, it.gold)
        assert label_of[it.context] == it.gold
    assert len(label_of) == label_mapping.N_KEYS and set(label_of.values()) == {0, 1}


def test_groups_expand_and_unknown_names_are_refused():
    assert tasks.expand(["arithmetic_2da,unscramble", "arithmetic_2da"]) == ["arithmetic_2da", *scramble.NAMES]
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        tasks.resolve("nope")


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_splits_decide_what_is_evaluated_and_where_shots_come_from(tmp_path):
    rows = [
        {"context": "2+2=", "choices": ["4", "5"], "gold": 0, "split": "train"},
        {"context": "3+3=", "choices": ["6", "7"], "gold": 0, "split": "test", "id": "q1"},
        {"context": "1+1=", "choices": ["3", "2"], "gold": 1, "split": "validation"},
    ]
    task = files.load_jsonl(_write(tmp_path / "mc.jsonl", rows))
    assert task.kind == "multiple_choice" and [it.id for it in task.items] == ["q1"]
    assert task.fewshot_split == "train" and [it.context for it in task.pool] == ["2+2="]
    gen = files.load_jsonl(_write(tmp_path / "gen.jsonl", [{"context": "Q: hi\nA:", "target": "hello"}]))
    assert gen.kind == "generate" and gen.pool == gen.items and gen.items[0].id == "1"


@pytest.mark.parametrize(
    "rows, message",
    [
        (['{"context": "a", "choices": ["x", "y"], "gold": 0}', "{oops"], r"mc.jsonl:2: not valid JSON"),
        ([{"context": "a", "choices": ["x", "y"], "gold": 2}], r"mc.jsonl:1: field 'gold' is 2 but 'choices' has 2"),
        ([{"context": "a", "choices": ["x", "y"], "gold": "0"}], r"mc.jsonl:1: field 'gold' must be an integer"),
        (
            [{"context": "a", "choices": ["x"], "gold": 0}],
            r"mc.jsonl:1: field 'choices' must be a list of at least two",
        ),
        ([{"choices": ["x", "y"], "gold": 0}], r"mc.jsonl:1: field 'context' is missing"),
        (
            [{"context": "a", "choices": ["x", "y"], "gold": 0}, {"context": "b", "target": "c"}],
            r"mc.jsonl:2: line 1 makes this a multiple choice file, but this line lacks field 'choices'",
        ),
        (
            [
                {"context": "a", "choices": ["x", "y"], "gold": 0, "id": 7},
                {"context": "b", "choices": ["x", "y"], "gold": 1, "id": "7"},
            ],
            r"mc.jsonl:2: field 'id' '7' repeats line 1",
        ),
        ([{"context": "a", "target": " "}], r"mc.jsonl:1: field 'target' is empty"),
    ],
)
def test_jsonl_errors_name_the_line_and_the_field(tmp_path, rows, message):
    with pytest.raises(ConfigError, match=message):
        files.load_jsonl(_write(tmp_path / "mc.jsonl", rows))


def test_bigbench_task_json_multiple_choice_and_generation(tmp_path):
    mc = {
        "name": "toy",
        "task_prefix": "Answer the questions.",
        "examples": [
            {"input": "Is ice cold?", "target_scores": {"no": 0, "yes": 1}},
            {"input": "Is fire cold?", "target_scores": {"no": 1, "yes": 0}},
        ],
    }
    (tmp_path / "mc").mkdir()
    task = files.load_bigbench(_write(tmp_path / "mc" / "task.json", [mc]))
    assert task.kind == "multiple_choice" and task.fmt.description == "Answer the questions."
    assert task.items[0].context == "Q: Is ice cold?\nA: " and task.items[0].answer == "yes"
    gen = {"examples": [{"input": "2+2", "target": ["4", "four"]}]}
    (tmp_path / "gen").mkdir()
    task = files.load_bigbench(_write(tmp_path / "gen" / "task.json", [gen]))
    assert task.kind == "generate" and task.items[0].target == "4" and task.name == "gen"
    with pytest.raises(ConfigError, match=r"examples\[0\]: field 'input' must be a string"):
        files.load_bigbench(_write(tmp_path / "bad.json", [{"examples": [{"target": "x"}]}]))


def test_lambada_passages_split_at_the_last_word(tmp_path):
    task = files.load_lambada(_write(tmp_path / "l.jsonl", [{"text": "Alice went to visit her friend Bob"}]))
    assert task.items[0].context == "Alice went to visit her friend" and task.items[0].target == "Bob"
    assert task.primary == "last_word_acc"
