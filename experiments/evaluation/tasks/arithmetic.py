"""GPT-3 section 3.9.1 arithmetic, regenerated: 2,000 distinct problems per task, GPT-3's Q/A format.

The released files' conventions are followed where they differ from the paper's text: operands uniform in
[0, 10^n) (not forced to n digits); 1DC uses digits 1-9 with the parentheses around the first two numbers.
"""

import random

from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks.base import Task

N_ITEMS = 2000
# GPT-3's format: "Q: What is 48 plus 76?\n\nA: 124", examples separated by a blank line, no task description.
FORMAT = PromptFormat(description="", target_delimiter=" ", fewshot_delimiter="\n\n")

# name: (digits, operator word); lm-evaluation-harness's task names.
TWO_OPERAND = {
    "arithmetic_2da": (2, "plus"),
    "arithmetic_2ds": (2, "minus"),
    "arithmetic_3da": (3, "plus"),
    "arithmetic_3ds": (3, "minus"),
    "arithmetic_4da": (4, "plus"),
    "arithmetic_4ds": (4, "minus"),
    "arithmetic_5da": (5, "plus"),
    "arithmetic_5ds": (5, "minus"),
    "arithmetic_2dm": (2, "times"),
}
NAMES = tuple(TWO_OPERAND) + ("arithmetic_1dc",)
_APPLY = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
_SYMBOL = {"+": "plus", "-": "minus", "*": "times"}


def _two_operand(rng: random.Random, digits: int, op: str) -> tuple[str, str]:
    a, b = rng.randrange(10**digits), rng.randrange(10**digits)
    return f"What is {a} {op} {b}?", str(_APPLY[op](a, b))


def _one_digit_composite(rng: random.Random) -> tuple[str, str]:
    a, b, c = (rng.randint(1, 9) for _ in range(3))
    o1, o2 = rng.choice("+-*"), rng.choice("+-*")
    inner = _APPLY[_SYMBOL[o1]](a, b)
    return f"What is ({a} {o1} {b}) {o2} {c}?", str(_APPLY[_SYMBOL[o2]](inner, c))


def build(name: str, seed: int = 0, n_items: int = N_ITEMS) -> Task:
    """Distinct problems drawn with Random((name, seed)); shots come from the same 2,000 (never the item)."""
    rng = random.Random(f"{name}:{seed}")
    seen, items = set(), []
    while len(items) < n_items:
        question, answer = (
            _one_digit_composite(rng) if name == "arithmetic_1dc" else _two_operand(rng, *TWO_OPERAND[name])
        )
        if question not in seen:
            seen.add(question)
            items.append(Item(id=str(len(items)), context=f"Q: {question}\n\nA:", target=answer))
    items = tuple(items)
    return Task(
        name=name, kind="generate", items=items, pool=items, fewshot_split="test", fmt=FORMAT, max_gen_tokens=10
    )
