"""A K-shot task that can only be learned in context: words mapped to two arbitrary labels at random.

Eight key words each get one of two label words (both drawn from the word list by the task seed), so nothing
learned in pre-training tells which label a key has. Each key appears in many items; a query's shots are other
items, so once K is large enough its key shows up among them with its label and a model that copies from its
context answers right. At K=0 the best possible accuracy is chance (50%).
"""

import random

from meshlm.experiments.evaluation.prompts import Item, PromptFormat
from meshlm.experiments.evaluation.tasks.base import Task
from meshlm.experiments.evaluation.tasks.scramble import words

NAME = "label_mapping"
N_KEYS, COPIES = 8, 32
FORMAT = PromptFormat(description="", target_delimiter=" ", fewshot_delimiter="\n")


def build(seed: int = 0) -> Task:
    rng = random.Random(f"{NAME}:{seed}")
    drawn = rng.sample(words(), N_KEYS + 2)
    keys, labels = drawn[:N_KEYS], tuple(drawn[N_KEYS:])
    gold = {key: rng.randrange(2) for key in keys}
    items = [
        Item(id=f"{key}:{c}", context=f"{key} ->", choices=labels, gold=gold[key])
        for c in range(COPIES)
        for key in keys
    ]
    rng.shuffle(items)
    items = tuple(items)
    return Task(
        name=NAME, kind="multiple_choice", items=items, pool=items, fewshot_split="test", fmt=FORMAT, uncond_context=""
    )
