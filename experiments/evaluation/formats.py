"""Prompt formats that mean the same thing (Sclar et al. 2023, FormatSpread): the same fields under other casings
and separators, so that a score can be given with its spread over choices that carry no meaning.

A context is restyled line by line: a line that starts with one of the task's descriptors (`Question: ...`, or a
bare `Answer:` before the answer) gets the variant's casing and field separator, and the line break before it
becomes the variant's line separator; every other character is kept. The shot separator varies for every task.
Format 0 is always the task's own, so `--formats 1` is the plain evaluation.
"""

import dataclasses
import itertools
import re
from collections.abc import Sequence

import numpy as np

from meshlm.experiments.evaluation.prompts import Item, render, stable_hash
from meshlm.experiments.evaluation.tasks.base import Task

CASINGS = ("as written", "lower", "upper", "title")
FIELD_SEPARATORS = (": ", " : ", ":: ", " - ")
LINE_SEPARATORS = ("\n", " ", "\n\n", " | ")
SHOT_SEPARATORS = ("\n\n", "\n", "\n\n\n", "\n###\n", " ")
FORMAT_STREAM = 2  # keeps the formats' random stream apart from the shots' and the orders'
# A descriptor: one to three words, the first capitalised, then a colon (`Question:`, `Q:`, `Correct answer:`).
_DESCRIPTOR = re.compile(r"[A-Z][A-Za-z]*(?: [A-Za-z]+){0,2}")


@dataclasses.dataclass(frozen=True)
class Variant:
    casing: str = CASINGS[0]
    field_separator: str = ": "
    line_separator: str = "\n"
    shot_separator: str | None = None  # None: the task's own

    def describe(self, task: Task) -> dict[str, str]:
        if self == OWN:
            return {"format": "the task's own"}
        return {
            "casing": self.casing,
            "field_separator": self.field_separator,
            "line_separator": self.line_separator,
            "shot_separator": task.fmt.fewshot_delimiter if self.shot_separator is None else self.shot_separator,
        }


OWN = Variant()


def descriptors(task: Task) -> tuple[str, ...]:
    """The task's own (PromptFormat.descriptors), else the names that start a line, followed by a colon, in every
    context of the task (so a passage's `Painting: ...` in one item is not taken for a field)."""
    if task.fmt.descriptors is not None:
        return task.fmt.descriptors
    common = None
    for it in task.items + task.pool:
        names = {m.group() for text in _contexts(it) for line in text.split("\n") if (m := _match_descriptor(line))}
        common = names if common is None else common & names
        if not common:
            return ()
    return tuple(sorted(common or ()))


def _match_descriptor(line: str):
    m = _DESCRIPTOR.match(line)
    return m if m and line[m.end() :].startswith(":") and line[m.end() + 1 : m.end() + 2] in ("", " ") else None


def _contexts(item: Item) -> tuple[str, ...]:
    return item.choices if item.partial else (item.context,)


def variants(task: Task, n: int, seed: int = 0) -> list[Variant]:
    """min(n, all distinct) formats: the task's own first, then a seeded sample of the others; the same for every
    model evaluated on the task, so models are compared on the same formats. Formats that give the same text (the
    casing of `Q:`) count once."""
    styles = (
        itertools.product(CASINGS, FIELD_SEPARATORS, LINE_SEPARATORS)
        if descriptors(task)
        else [(OWN.casing, OWN.field_separator, OWN.line_separator)]
    )
    sample = dataclasses.replace(task, items=task.items[:1], pool=task.pool[:2])
    distinct = {
        example(apply(sample, Variant(*style, s))): Variant(*style, s) for style in styles for s in SHOT_SEPARATORS
    }
    distinct.pop(example(sample), None)
    others = list(distinct.values())
    order = np.random.default_rng([seed, stable_hash(task.name), FORMAT_STREAM]).permutation(len(others))
    return [OWN] + [others[i] for i in order[: max(n, 1) - 1]]


def restyle_text(text: str, names: Sequence[str], v: Variant) -> str:
    """`text` with each descriptor line in the variant's casing and separators, the line breaks before it (one or
    more) replaced by the line separator; trailing whitespace kept."""
    body = text.rstrip()
    parts = re.split(r"(\n+)", body)  # lines, with the breaks between them at odd indices
    out = []
    for i in range(0, len(parts), 2):
        line, m = parts[i], _match_descriptor(parts[i])
        if m and m.group() in names:
            value = line[m.end() + 1 :].removeprefix(" ")
            name = _cased(m.group(), v.casing)
            line = name + v.field_separator + value if value else name + v.field_separator.rstrip(" ")
            out.append((v.line_separator if i else "") + line)
        else:
            out.append((parts[i - 1] if i else "") + line)
    return "".join(out) + text[len(body) :]


def _cased(name: str, casing: str) -> str:
    return {"lower": name.lower, "upper": name.upper, "title": name.title}.get(casing, lambda: name)()


def apply(task: Task, v: Variant) -> Task:
    """The task with every context (of items and shots) and its shot separator in format `v`; OWN changes nothing."""
    if v == OWN:
        return task
    names = descriptors(task)

    def item(it: Item) -> Item:
        choices = tuple(restyle_text(c, names, v) for c in it.choices) if it.partial else it.choices
        return dataclasses.replace(it, context=restyle_text(it.context, names, v), choices=choices)

    fmt = task.fmt if v.shot_separator is None else dataclasses.replace(task.fmt, fewshot_delimiter=v.shot_separator)
    return dataclasses.replace(task, items=tuple(map(item, task.items)), pool=tuple(map(item, task.pool)), fmt=fmt)


def example(task: Task) -> str:
    """A one-shot prompt of the task's first item, as the model reads it up to the answer."""
    query = task.items[0]
    shots = [s for s in task.pool if s.id != query.id][:1]
    return render(task.fmt, shots, query)


def spread(per_format: Sequence[float]) -> dict:
    x = np.asarray(per_format, np.float64)
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "per_format": [float(a) for a in x],
    }
