"""Standard benchmarks under lm-eval's task names, in their upstream schemas, prompted and scored as lm-eval's
tasks of the same name (lm_eval/tasks/{hellaswag,arc,piqa,winogrande,openbookqa,super_glue,lambada,race,storycloze,
triviaqa}).

`NAME:PATH[:SHOTS_PATH]` evaluates a file exported by HF datasets (shots from SHOTS_PATH, else from the file
itself, never the item); `NAME:tfds` reads lm-eval's evaluated split and its shot split (the training split; the
validation or the evaluated one where lm-eval's dataset has no training split) from the TFDS catalog.
"""

import ast
import dataclasses
import re
from collections.abc import Callable

from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks import records
from meshlm.experiments.evaluation.tasks.base import Task
from meshlm.model.errors import ConfigError


def _hellaswag_text(text: str) -> str:
    """lm-eval's hellaswag `preprocess`: WikiHow's " [title]" and bracketed artifacts out, double spaces single."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def hellaswag(doc: dict) -> Item:
    query = _hellaswag_text(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())
    return Item("", query, choices=tuple(_hellaswag_text(e) for e in doc["endings"]), gold=int(doc["label"]))


def arc(doc: dict) -> Item:
    labels = list(doc["choices"]["label"])
    question = f"Question: {doc['question']}\nAnswer:"
    return Item("", question, choices=tuple(doc["choices"]["text"]), gold=labels.index(doc["answerKey"]))


def openbookqa(doc: dict) -> Item:
    labels = list(doc["choices"]["label"])
    gold = labels.index(doc["answerKey"].lstrip())
    return Item("", doc["question_stem"], choices=tuple(doc["choices"]["text"]), gold=gold)


def piqa(doc: dict) -> Item:
    return Item("", f"Question: {doc['goal']}\nAnswer:", choices=(doc["sol1"], doc["sol2"]), gold=int(doc["label"]))


def winogrande(doc: dict) -> Item:
    """Partial scoring: each option fills the blank as a context, the text after the blank is scored after it."""
    blank = doc["sentence"].index("_")
    contexts = tuple(doc["sentence"][:blank] + option for option in (doc["option1"], doc["option2"]))
    gold = {"1": 0, "2": 1}[str(doc["answer"])]
    target = doc["sentence"][blank + 1 :].strip()
    return Item("", contexts[gold], target=target, choices=contexts, gold=gold, partial=True)


def copa(doc: dict) -> Item:
    """Choices keep lm-eval's leading space, so the continuation is two spaces then the choice, as in lm-eval."""
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    choices = tuple(" " + c[0].lower() + c[1:] for c in (doc["choice1"], doc["choice2"]))
    return Item("", doc["premise"].strip()[:-1] + f" {connector}", choices=choices, gold=int(doc["label"]))


def boolq(doc: dict) -> Item:
    context = f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
    return Item("", context, choices=("no", "yes"), gold=int(doc["label"]))


def lambada_openai(doc: dict) -> Item:
    words = doc["text"].split(" ")
    return Item("", " ".join(words[:-1]), target=words[-1])


_RACE_ANSWERS = {"A": 0, "B": 1, "C": 2, "D": 3}


def _race_answer(problem: dict) -> str:
    return problem["options"][_RACE_ANSWERS[problem["answer"]]]


def race(doc: dict) -> Item:
    """One item per article (lm-eval's preprocess_race): its last question, after the article and the earlier
    questions answered; a cloze question (ending "  _  .") is written with its answer in place of the blank."""
    if not isinstance(doc["problems"], str):
        raise TypeError("`problems` must be a string holding a Python list of dicts, as EleutherAI/race stores it")
    *earlier, last = ast.literal_eval(doc["problems"])
    text = "Article: " + doc["article"] + "\n\n"
    for problem in earlier:
        if problem["question"][-6:] == "  _  .":
            text += problem["question"][:-5] + _race_answer(problem) + "\n"
        else:
            text += "Question: " + problem["question"] + "\nAnswer: " + _race_answer(problem) + "\n"
    choices = tuple(last["options"][i] for i in range(4))
    return Item("", text + last["question"], choices=choices, gold=_RACE_ANSWERS[last["answer"]])


STORY = tuple(f"input_sentence_{i}" for i in range(1, 5))


def storycloze(doc: dict) -> Item:
    gold = {1: 0, 2: 1}[int(doc["answer_right_ending"])]
    story = " ".join(doc[field] for field in STORY)
    return Item("", story, choices=(doc["sentence_quiz1"], doc["sentence_quiz2"]), gold=gold)


def triviaqa(doc: dict) -> Item:
    """The question mark is lm-eval's, added after the question's own; shots show the first alias."""
    aliases = tuple(doc["answer"]["aliases"])
    return Item("", f"Question: {doc['question']}?\nAnswer:", target=aliases[0], aliases=aliases)


@dataclasses.dataclass(frozen=True)
class Spec:
    to_item: Callable[[dict], Item]
    kind: str = "multiple_choice"
    tfds: str = ""  # the TFDS catalog name ("" = not in the catalog)
    splits: tuple[str, str] = ("validation", "train")  # lm-eval's evaluated split and shot split, as TFDS names
    from_tfds: Callable[[dict], dict] = lambda row: row  # TFDS fields -> the upstream (HF) schema
    descriptors: tuple[str, ...] = ()  # field names --formats may restyle: none where the prompt has no fields
    until: tuple[str, ...] = Task.until  # generation tasks: lm-eval's generation_kwargs
    max_gen_tokens: int = Task.max_gen_tokens


def _hellaswag_from_tfds(row: dict) -> dict:
    """TFDS keeps only `ctx` (ctx_a + " " + ctx_b), so ctx_b's first letter stays as written where lm-eval
    capitalises it."""
    return row | {"ctx_a": row["context"], "ctx_b": "", "label": str(row["label"])}


def _arc_from_tfds(row: dict) -> dict:
    letters = "ABCDE"  # TFDS stores ARC's labels as class indices over A-E (numeric labels mapped to letters)
    choices = {"text": row["choices"]["text"], "label": [letters[i] for i in row["choices"]["label"]]}
    return row | {"choices": choices, "answerKey": letters[row["answerKey"]]}


def _race_from_tfds(row: dict) -> dict:
    """TFDS has one row per RACE file, its questions in parallel lists; EleutherAI/race one per article, its
    problems a Python literal."""
    problems = zip(row["questions"], row["answers"], row["options"])
    return {
        "article": row["article"],
        "problems": repr([{"answer": a, "options": o, "question": q} for q, a, o in problems]),
    }


def _storycloze_from_tfds(row: dict) -> dict:
    """TFDS keeps the story's four sentences joined by spaces; the prompt only joins them, so any four pieces
    that join back (split at the first three spaces) give lm-eval's text."""
    pieces = dict(zip(STORY, row["context"].split(" ", 3)))
    endings = dict(zip(("sentence_quiz1", "sentence_quiz2"), row["endings"]))
    return pieces | endings | {"answer_right_ending": row["label"]}


QA = ("Question", "Answer")
SPECS = {
    "hellaswag": Spec(hellaswag, tfds="hellaswag", from_tfds=_hellaswag_from_tfds),
    "arc_easy": Spec(arc, tfds="ai2_arc/ARC-Easy", splits=("test", "train"), from_tfds=_arc_from_tfds, descriptors=QA),
    "arc_challenge": Spec(
        arc, tfds="ai2_arc/ARC-Challenge", splits=("test", "train"), from_tfds=_arc_from_tfds, descriptors=QA
    ),
    "piqa": Spec(piqa, tfds="piqa", descriptors=QA),
    "winogrande": Spec(
        winogrande,
        tfds="winogrande",
        splits=("validation", "train_xl"),
        from_tfds=lambda row: row | {"answer": str(row["label"] + 1)},
    ),
    "openbookqa": Spec(openbookqa),
    "copa": Spec(copa, tfds="super_glue/copa"),
    "boolq": Spec(boolq, tfds="super_glue/boolq", descriptors=QA),
    "lambada_openai": Spec(lambada_openai, kind="loglikelihood"),
    # EleutherAI/race has only the test split: lm-eval's shots come from it (never the item itself).
    "race": Spec(race, tfds="race/high", splits=("test", "test"), from_tfds=_race_from_tfds),
    "storycloze_2016": Spec(
        storycloze, tfds="story_cloze/2016", splits=("test", "validation"), from_tfds=_storycloze_from_tfds
    ),
    "storycloze_2018": Spec(
        storycloze, tfds="story_cloze/2018", splits=("test", "validation"), from_tfds=_storycloze_from_tfds
    ),
    # lm-eval's hf model generates up to 256 tokens when the task does not say (max_gen_toks).
    "triviaqa": Spec(
        triviaqa,
        kind="generate",
        tfds="trivia_qa/rc.nocontext",
        descriptors=QA,
        until=("\n", ".", ","),
        max_gen_tokens=256,
    ),
}


def _items(name: str, rows: list[dict], where: str, prefix: str = "") -> tuple[Item, ...]:
    items = []
    for i, row in enumerate(rows):
        try:
            item = SPECS[name].to_item(row)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError, SyntaxError) as e:
            why = f"{type(e).__name__}: {e}"
            raise ConfigError(f"{where}: row {i + 1} is not in {name}'s upstream schema ({why})") from None
        items.append(dataclasses.replace(item, id=f"{prefix}{i}"))
    return tuple(items)


def build(name: str, source: str) -> Task:
    """The task `name` on `source`: PATH, PATH:SHOTS_PATH or tfds."""
    spec = SPECS[name]
    if source == "tfds":
        if not spec.tfds:
            raise ConfigError(f"{name} is not in the TFDS catalog; pass {name}:PATH with a local file")
        evaluated, fewshot_split = spec.splits
        items = _items(name, _tfds_rows(spec, evaluated), f"{spec.tfds}[{evaluated}]")
        # Shots from the evaluated split itself share the items' ids, so no item is its own shot.
        pool = (
            items
            if fewshot_split == evaluated
            else _items(name, _tfds_rows(spec, fewshot_split), f"{spec.tfds}[{fewshot_split}]", prefix="shots:")
        )
    else:
        path, _, shots_path = source.partition(":")
        items = _items(name, records.read_file(path), path)
        # Ids are positions; a separate shots file gets its own, so no shot is taken for the evaluated item.
        pool = _items(name, records.read_file(shots_path), shots_path, prefix="shots:") if shots_path else items
        fewshot_split = shots_path or "evaluated"
    fmt = PromptFormat(descriptors=spec.descriptors)
    return Task(
        name,
        spec.kind,
        items,
        pool,
        fewshot_split,
        fmt,
        until=spec.until,
        max_gen_tokens=spec.max_gen_tokens,
        uncond_context="",
    )


def _tfds_rows(spec: Spec, split: str) -> list[dict]:
    return [spec.from_tfds(row) for row in records.read_tfds(spec.tfds, split)]
