"""Zero-, one- and few-shot prompts: which shots, in which order, how they are joined, encoded and fitted.

A K-shot prompt is `description + D + shot_K + D + ... + D + shot_1 + D + query`, D the few-shot delimiter (the
description and its D are left out when there is none), each shot `context + target_delimiter + answer`. The shots
of an item are the first K of one seeded permutation of the few-shot pool, so the K=4 shots are among the K=16
ones; shot 1 sits next to the query, so dropping the shots farthest from the query turns a K-shot prompt into
exactly the K'-shot one. The evaluated item is never among its own shots (excluded by id).
"""

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Item:
    """One example. Answers are stored without the delimiter that separates them from the context."""

    id: str
    context: str
    target: str = ""  # generation and loglikelihood items
    choices: tuple[str, ...] = ()  # multiple-choice items
    gold: int = -1
    # Partial scoring (Winogrande): the choices are contexts and the target is scored after each; as a shot,
    # `context` (the gold choice) is followed by the target.
    partial: bool = False
    # Generation items with several right answers (TriviaQA's aliases; the target is the one shots show): exact
    # match is lm-eval's over all of them, case and punctuation ignored (metrics.exact_match_aliases).
    aliases: tuple[str, ...] = ()

    @property
    def answer(self) -> str:
        return self.choices[self.gold] if self.choices and not self.partial else self.target


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    # Field names that --formats may restyle (formats.py); None: those that start a line in every context.
    descriptors: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A prompt as token ids, ready to score: the context (EOS first) and one continuation per answer."""

    context_ids: list[int]
    continuation_ids: list[list[int]]
    n_shots: int  # shots that fit (<= the K asked for)
    cut: bool  # even the zero-shot prompt was too long and lost tokens on the left


def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def draw_shots(pool: Sequence[Item], item: Item, k: int, seed: int, task: str) -> list[Item]:
    """The first k of a permutation of the pool (the item itself removed) seeded by (seed, task, item id) only,
    so an item's shots do not depend on the order, batching or sharding of the evaluation."""
    candidates = [s for s in pool if s.id != item.id]
    order = np.random.default_rng([seed, stable_hash(task), stable_hash(item.id)]).permutation(len(candidates))
    return [candidates[i] for i in order[:k]]


def first_shots(pool: Sequence[Item], item: Item, k: int) -> list[Item]:
    """lm-eval's `first_n` sampler: the first k of the pool (the item removed) in pool order, which puts the k-th
    next to the query."""
    return [s for s in pool if s.id != item.id][:k][::-1]


def render(fmt: PromptFormat, shots: Sequence[Item], query: Item) -> str:
    """The prompt text up to the answer; shots[0] is placed next to the query."""
    parts = [fmt.description] if fmt.description else []
    parts += [s.context + fmt.target_delimiter + s.answer for s in reversed(shots)]
    return fmt.fewshot_delimiter.join(parts + [query.context])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a context and its continuation as the model reads them together.

    Trailing whitespace of the context moves to the continuation (a word's leading space belongs to it), the pair
    is encoded jointly and split where its tokens stop agreeing with the context's own encoding: a token that
    spans the boundary ("Ans" + "wer" -> "Answer") goes to the continuation, which is therefore never empty.
    """
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, alone = tokenizer.encode(context + continuation), tokenizer.encode(context)
    k = 0
    while k < min(len(whole), len(alone)) and whole[k] == alone[k]:
        k += 1
    return whole[:k], whole[k:]


def fit(
    tokenizer,
    fmt: PromptFormat,
    shots: Sequence[Item],
    query: Item,
    continuations: Sequence[str],
    n_ctx: int,
    reserve: int = 0,
) -> Fitted:
    """The prompt with as many of `shots` as fit in n_ctx next to every continuation (or next to `reserve`
    generated tokens when there are no continuations); shots farthest from the query go first, then, if the
    zero-shot prompt is still too long, tokens from its left. The query is always kept."""
    eos = tokenizer.eos_id
    for k in range(len(shots), -1, -1):
        text = render(fmt, shots[:k], query)
        # A generation prompt keeps no trailing spaces: the model writes the space before its answer.
        pairs = [encode_pair(tokenizer, text, c) for c in continuations] or [(tokenizer.encode(text.rstrip(" ")), [])]
        # Tokens the model reads: EOS + context + continuation - 1 (the last is only predicted), or the prompt
        # plus the tokens to generate.
        need = max(len(ctx) + len(cont) for ctx, cont in pairs) if continuations else len(pairs[0][0]) + 1 + reserve
        if need <= n_ctx:
            break
    # With one continuation per choice, each choice may split the context differently; they share the context
    # up to the shortest split, and the rest of each joint encoding belongs to its continuation.
    shared = min(len(ctx) for ctx, _ in pairs)
    context_ids = [eos] + pairs[0][0][:shared]
    conts = [ctx[shared:] + cont for ctx, cont in pairs] if continuations else []
    room = n_ctx + 1 - max((len(c) for c in conts), default=reserve + 1)
    cut = len(context_ids) > room
    return Fitted(context_ids[-room:] if cut else context_ids, conts, k, cut)
