"""Tasks read from files: JSONL in meshlm's schema, LAMBADA-style passages, BIG-bench task.json.

JSONL, one object per line (docs/evaluation.md):
  multiple choice  {"context": str, "choices": [str, ...], "gold": int}
  generation       {"context": str, "target": str}
  optional         "id" (unique; default: the line number), "split" (e.g. "train", "validation", "test")
Answers are stored without the space that separates them from the context; the task adds it.
"""

import json
import pathlib

from meshlm.experiments.evaluation.metrics import last_word_split
from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks.base import Task
from meshlm.model.errors import ConfigError

EVAL_SPLITS = ("test", "validation")  # the first present is evaluated
FEWSHOT_SPLITS = ("train", "validation")  # shots come from the first present that is not evaluated


def _read_jsonl(path: pathlib.Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass jsonl:PATH with the path of a JSONL file")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{n}: a line must be a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    if not rows:
        raise ConfigError(f"{path} holds no examples; write one JSON object per line")
    return rows


def _field(path, n: int, row: dict, name: str, kind: type, what: str):
    if name not in row:
        raise ConfigError(f"{path}:{n}: field {name!r} is missing; {what}")
    value = row[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{path}:{n}: field {name!r} must be {what}, got {type(value).__name__} {value!r:.40}")
    return value


def _item(path, n: int, row: dict, multiple_choice: bool) -> Item:
    context = _field(path, n, row, "context", str, "a string (the prompt before the answer)")
    item_id = str(row.get("id", n))
    if multiple_choice:
        choices = _field(path, n, row, "choices", list, "a list of at least two strings")
        if len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise ConfigError(f"{path}:{n}: field 'choices' must be a list of at least two strings")
        gold = _field(path, n, row, "gold", int, f"an integer index into 'choices' (0 to {len(choices) - 1})")
        if not 0 <= gold < len(choices):
            raise ConfigError(
                f"{path}:{n}: field 'gold' is {gold} but 'choices' has {len(choices)} entries; "
                f"use 0 to {len(choices) - 1}"
            )
        return Item(id=item_id, context=context, choices=tuple(choices), gold=gold)
    target = _field(path, n, row, "target", str, "a non-empty string (the expected answer)")
    if not target.strip():
        raise ConfigError(f"{path}:{n}: field 'target' is empty; write the expected answer")
    return Item(id=item_id, context=context, target=target)


def _split_items(path, numbered: list[tuple[int, dict, Item]]) -> tuple[tuple[Item, ...], tuple[Item, ...], str]:
    seen: dict[str, int] = {}
    for n, _, item in numbered:
        if item.id in seen:
            raise ConfigError(f"{path}:{n}: field 'id' {item.id!r} repeats line {seen[item.id]}; ids must be unique")
        seen[item.id] = n
    by_split: dict[str, list[Item]] = {}
    for n, row, item in numbered:
        split = row.get("split", "test")
        if not isinstance(split, str):
            raise ConfigError(f'{path}:{n}: field \'split\' must be a string such as "train" or "test"')
        by_split.setdefault(split, []).append(item)
    evaluated = next((s for s in EVAL_SPLITS if s in by_split), None)
    if evaluated is None:
        raise ConfigError(
            f'{path} has splits {sorted(by_split)} but none to evaluate; mark evaluated lines "split": "test" '
            "(or validation)"
        )
    fewshot = next((s for s in FEWSHOT_SPLITS if s in by_split and s != evaluated), evaluated)
    return tuple(by_split[evaluated]), tuple(by_split[fewshot]), fewshot


def load_jsonl(path: str | pathlib.Path) -> Task:
    """A multiple-choice or generation task, by the fields of its first line."""
    path = pathlib.Path(path)
    rows = _read_jsonl(path)
    multiple_choice = "choices" in rows[0][1]
    for n, row in rows:
        if ("choices" in row) != multiple_choice:
            first = "multiple choice" if multiple_choice else "generation"
            raise ConfigError(
                f"{path}:{n}: line 1 makes this a {first} file, but this line "
                + ("lacks" if multiple_choice else "has")
                + " field 'choices'; keep one kind per file"
            )
    numbered = [(n, row, _item(path, n, row, multiple_choice)) for n, row in rows]
    items, pool, fewshot = _split_items(path, numbered)
    return Task(
        name=path.stem,
        kind="multiple_choice" if multiple_choice else "generate",
        items=items,
        pool=pool,
        fewshot_split=fewshot,
        mutual_info=multiple_choice,
    )


def load_lambada(path: str | pathlib.Path) -> Task:
    """LAMBADA-style JSONL {"text": passage}: predict each passage's last word (lm-eval's lambada_openai)."""
    path = pathlib.Path(path)
    numbered = []
    for n, row in _read_jsonl(path):
        text = _field(path, n, row, "text", str, "a string (a passage whose last word is predicted)")
        context, word = last_word_split(text)
        if not context:
            raise ConfigError(f"{path}:{n}: field 'text' has a single word; a passage needs context and a last word")
        numbered.append((n, row, Item(id=str(row.get("id", n)), context=context, target=word)))
    items, pool, fewshot = _split_items(path, numbered)
    return Task(
        name=path.stem,
        kind="loglikelihood",
        items=items,
        pool=pool,
        fewshot_split=fewshot,
        greedy_metric="last_word_acc",
    )


def load_bigbench(path: str | pathlib.Path) -> Task:
    """A BIG-bench task.json: multiple choice where examples carry target_scores, generation otherwise. Prompts
    use the file's task_prefix, example_input_prefix and example_output_prefix (BIG-bench's defaults otherwise)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass bigbench:PATH with the path of a BIG-bench task.json")
    try:
        task = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    examples = task.get("examples") if isinstance(task, dict) else None
    if not isinstance(examples, list) or not examples:
        raise ConfigError(f"{path}: field 'examples' must be a non-empty list; is this a BIG-bench task.json?")
    before = task.get("example_input_prefix", "\nQ: ")
    after = task.get("example_output_prefix", "\nA: ")
    multiple_choice = "target_scores" in examples[0]
    items = []
    for i, ex in enumerate(examples):
        where = f"{path}: examples[{i}]"
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise ConfigError(f"{where}: field 'input' must be a string")
        context = (before + ex["input"] + after).lstrip("\n")
        if multiple_choice:
            scores = ex.get("target_scores")
            if not isinstance(scores, dict) or len(scores) < 2:
                raise ConfigError(f"{where}: field 'target_scores' must map at least two choices to scores")
            choices = tuple(scores)
            items.append(
                Item(
                    id=str(i),
                    context=context,
                    choices=choices,
                    gold=max(range(len(choices)), key=lambda j: scores[choices[j]]),
                )
            )
        else:
            target = ex.get("target")
            target = target[0] if isinstance(target, list) and target else target
            if not isinstance(target, str) or not target.strip():
                raise ConfigError(f"{where}: field 'target' must be a non-empty string or list of strings")
            items.append(Item(id=str(i), context=context, target=target))
    fmt = PromptFormat(
        description=task.get("task_prefix", "").strip(),
        target_delimiter="",  # example_output_prefix ends the context, with its space if it has one
        fewshot_delimiter=task.get("few_shot_example_separator", "\n"),
    )
    items = tuple(items)
    return Task(
        name=str(task.get("name", path.parent.name)),
        kind="multiple_choice" if multiple_choice else "generate",
        items=items,
        pool=items,
        fewshot_split="examples",
        fmt=fmt,
        mutual_info=multiple_choice,
    )
