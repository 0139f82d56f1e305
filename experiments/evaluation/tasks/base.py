"""What a prompt task is: items to evaluate, a declared pool of shots, a prompt format, a kind of scoring."""

import dataclasses
from typing import Literal

from meshlm.experiments.evaluation.prompts import Item, PromptFormat

KINDS = ("multiple_choice", "generate", "loglikelihood")


@dataclasses.dataclass(frozen=True)
class Task:
    """multiple_choice: one loglikelihood per choice; generate: greedy generation scored by exact match (and
    the target's loglikelihood); loglikelihood: the target's loglikelihood only (LAMBADA)."""

    name: str
    kind: Literal["multiple_choice", "generate", "loglikelihood"]
    items: tuple[Item, ...]  # the evaluated split
    pool: tuple[Item, ...]  # the split shots are drawn from (may be the evaluated one: items never see themselves)
    fewshot_split: str
    fmt: PromptFormat = PromptFormat()
    until: tuple[str, ...] = ("\n",)  # generation stops before any of these
    max_gen_tokens: int = 16
    uncond_context: str = "Answer:"  # GPT-3's answer context for unconditional normalisation; "" = not computed
    mutual_info: bool = False  # acc_mutual_info: each choice also scored after the empty context (lm-eval's)
    greedy_metric: str = "acc"  # the name of "every target token was the argmax" (last_word_acc for LAMBADA)

    @property
    def primary(self) -> str:
        """The metric an ICL curve plots."""
        return {"multiple_choice": "acc", "generate": "exact_match", "loglikelihood": self.greedy_metric}[self.kind]
