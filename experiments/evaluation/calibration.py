"""Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): a prompt's bias p_cf is the model's answer
distribution when the query is replaced by content-free inputs, and the calibrated prediction is
argmax_i p_i / p_cf_i (the paper's W = diag(p_cf)^-1, b = 0).

p_i is each choice's whole-continuation probability normalised over the choices (the paper takes the first token's,
which for multi-token answers ignores the rest of the answer).
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from meshlm.experiments.evaluation.prompts import Fitted, Item, fit
from meshlm.experiments.evaluation.tasks.base import Task

CONTENT_FREE = ("N/A", "", "[MASK]")  # the paper's inputs
METRIC = "acc_calibrated"


def not_applicable(task: Task) -> str:
    """Why a task cannot be calibrated; "" when it can."""
    if task.kind != "multiple_choice":
        return f"not applicable: a {task.kind} task has no fixed set of answers to calibrate"
    if any(it.partial for it in task.items):
        return "not applicable: partial scoring puts the choices in the context, where the content-free input goes"
    return ""


def choice_probabilities(logprobs: Sequence[float]) -> np.ndarray:
    ll = np.asarray(logprobs, np.float64)
    p = np.exp(ll - ll.max())
    return p / p.sum()


def bias(content_free_logprobs: Sequence[Sequence[float]]) -> np.ndarray:
    """p_cf: the choice probabilities after each content-free input, averaged over the inputs."""
    return np.mean([choice_probabilities(ll) for ll in content_free_logprobs], axis=0)


def calibrated_prediction(logprobs: Sequence[float], p_cf: np.ndarray) -> int:
    """Ties go to the first choice, as in every other accuracy here."""
    return int(np.argmax(choice_probabilities(logprobs) / p_cf))


@dataclasses.dataclass(frozen=True)
class ContentFree:
    """The requests that estimate every item's p_cf, each distinct (context, continuation) listed once."""

    pairs: list[tuple[list[int], list[int]]]
    index_ICA: list[list[list[int]]]  # per item, per content-free input, per choice: its entry of `pairs`

    def biases(self, logprobs: Sequence[float]) -> list[np.ndarray]:
        """Per item p_cf, from the log-probabilities of `pairs`."""
        return [bias([[logprobs[r] for r in choices] for choices in inputs]) for inputs in self.index_ICA]


def content_free(
    tokenizer, task: Task, items: Sequence[Item], fitted: Sequence[Fitted], shots, inputs: Sequence[str], n_ctx: int
) -> ContentFree:
    """Each item's prompt with its whole context replaced by each input, keeping the shots its real prompt kept
    (same order, same format). At K=0 or with shared shots the requests repeat across items; they are scored once."""
    distinct: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    index = []
    for it, f, s in zip(items, fitted, shots):
        continuations = [task.fmt.target_delimiter + c for c in it.choices]
        per_input = []
        for text in inputs:
            cf = fit(tokenizer, task.fmt, s[: f.n_shots], dataclasses.replace(it, context=text), continuations, n_ctx)
            key = tuple(cf.context_ids)
            per_input.append([distinct.setdefault((key, tuple(c)), len(distinct)) for c in cf.continuation_ids])
        index.append(per_input)
    return ContentFree([(list(c), list(x)) for c, x in distinct], index)
