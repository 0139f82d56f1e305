"""The three request types of few-shot evaluation, batched by length, jitted, with rows sharded over the mesh.

Every request is scored alone: the attention mask lets it see its own context and continuation only, whether
rows hold one request right-padded (pack=False, and rolling windows), several packed with their shared contexts
run once (experiments/evaluation/packing.py), or one prompt left-padded with explicit positions (generation). A
request's numbers therefore depend on its batch, batch size or padding only by float rounding.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from meshlm.experiments.evaluation import packing
from meshlm.model.errors import ConfigError
from meshlm.model.generate import SamplingConfig, generate
from meshlm.model.scoring import (
    continuation_index,
    continuation_logprobs,
    packed_logprobs,
    right_padded,
    token_logprobs,
)
from meshlm.model.transformer import Transformer
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner, model_axes

MIN_BUCKET = 16  # the shortest padded length: shorter rows share one shape


@dataclasses.dataclass(frozen=True)
class Scored:
    logprob: float  # summed over the continuation's tokens
    is_greedy: bool  # every continuation token was the argmax
    n_tokens: int  # continuation tokens scored
    truncated: bool = False  # the context was cut from the left to fit n_ctx


def bucket(length: int, limit: int) -> int:
    """The padded length of a row: the next of 16, 24, 32, 48, 64, 96, ... (powers of two and 1.5 times them: at most
    a third of a row is padding, against half with powers of two alone), at most `limit`."""
    power = max(MIN_BUCKET, 1 << math.ceil(math.log2(max(length, 1))))
    return min(limit, power * 3 // 4 if power * 3 // 4 >= max(length, MIN_BUCKET) else power)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Request indices, longest first (lm-eval's order: the padded length of a batch is its first row's), in
    batches of batch_size; ties keep their input order, so the batches are a function of the lengths alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class LanguageModel:
    """A model, its tokenizer, a mesh: loglikelihood, loglikelihood_rolling and generate_until on token ids."""

    def __init__(
        self,
        model: Transformer,
        tokenizer,
        batch_size: int = 16,
        partitioner: Partitioner | None = None,
        progress: Callable[[int], None] = lambda n: None,
        pack: bool = True,
    ):
        """`pack`: loglikelihood requests go into packed rows, each distinct context run once for all its
        continuations; False gives one right-padded request per row, in lm-evaluation-harness's batches."""
        if batch_size < 1:
            raise ConfigError(f"--batch-size {batch_size} must be at least 1")
        self.cfg, self.tokenizer, self.batch_size, self.progress = model.cfg, tokenizer, batch_size, progress
        self.pack = pack
        self.n_ctx, self.eos = model.cfg.n_ctx, tokenizer.eos_id
        self.partitioner = partitioner or Partitioner.build(MeshConfig(shape="data=-1"))
        self.graphdef, params = nnx.split(model)
        params = nnx.to_pure_dict(params)
        # Parameters placed by the partitioner's rules (replicated on a data-only mesh), rows split over `data`.
        self.params = self.partitioner.place_params(params, model_axes(model.cfg))
        self._logprobs = self.partitioner.under_rules(token_logprobs)
        self._continuation_logprobs = self.partitioner.under_rules(continuation_logprobs)
        self._packed_logprobs = self.partitioner.under_rules(packed_logprobs)

    # --- loglikelihood -------------------------------------------------------------------------------------
    def loglikelihood_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[Scored]:
        """(context ids, continuation ids) -> Scored. Contexts longer than n_ctx allows are cut from the left
        (and flagged); a continuation must fit by itself."""
        fitted = [self._fit(ctx, cont) for ctx, cont in pairs]
        if self.pack:
            return self._loglikelihood_packed(fitted)
        out: list[Scored | None] = [None] * len(pairs)
        lengths = [len(c) + len(x) - 1 for c, x, _ in fitted]
        for batch in sorted_batches(lengths, self.batch_size):
            T = bucket(lengths[batch[0]], self.n_ctx)
            rows = [fitted[i] for i in batch]
            logprob_B, greedy_B = self._score_rows([c for c, _, _ in rows], [x for _, x, _ in rows], T)
            for i, b in zip(batch, range(len(batch))):
                out[i] = Scored(float(logprob_B[b]), bool(greedy_B[b]), len(fitted[i][1]), fitted[i][2])
            self.progress(len(batch))
        return out

    def packed_batches(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[list, int, int]]:
        """(rows, T, K) of each call that scores fitted `pairs` packed: its rows of groups (packing.Group), its
        padded length and its scored slots per row."""
        # Rows no longer than the longest request needs: a longer row would only add attention over padding.
        capacity = bucket(max(len(c) + len(x) - 1 for c, x in pairs), self.n_ctx)
        rows = packing.fill_rows(packing.by_context(pairs, capacity), capacity)
        out = []
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            T = bucket(max(map(packing.row_length, batch)), capacity)
            slots = max(packing.scored_slots(row, pairs) for row in batch)  # may exceed T: no limit but the bucket
            out.append((batch, T, bucket(slots, 1 << 30)))
        return out

    def _loglikelihood_packed(self, fitted: list[tuple[list[int], list[int], bool]]) -> list[Scored]:
        pairs = [(c, x) for c, x, _ in fitted]
        if not pairs:
            return []
        logprob, greedy = np.zeros(len(pairs)), np.ones(len(pairs), bool)
        for batch, T, K in self.packed_batches(pairs):
            # Padding rows (empty) fill the batch so every batch of a (T, K) has one shape.
            p = packing.layout(list(batch) + [[]] * (self.batch_size - len(batch)), pairs, T, K)
            rows = (p.tokens_RT, p.positions_RT, p.segments_RT, p.branches_RT, p.index_RK, p.targets_RK)
            logprob_BK, greedy_BK = self._packed_logprobs(self.graphdef, self.params, *self._on_rows(*rows))
            real = p.request_RK >= 0
            request = p.request_RK[real]
            np.add.at(logprob, request, np.asarray(logprob_BK, np.float64)[real])
            np.logical_and.at(greedy, request, np.asarray(greedy_BK)[real])
            self.progress(sum(len(g.requests) for row in batch for g in row))
        return [Scored(float(logprob[i]), bool(greedy[i]), len(x), cut) for i, (_, x, cut) in enumerate(fitted)]

    def _on_rows(self, *arrays_B: np.ndarray) -> list[jax.Array]:
        """[B, ...] host arrays placed on the mesh, rows split over the data axes."""
        return self.partitioner.place_rows(*arrays_B)

    def _fit(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int], bool]:
        if not cont:
            raise ConfigError("a continuation encodes to no tokens; every request needs something to score")
        if len(cont) > self.n_ctx:
            raise ConfigError(f"a continuation of {len(cont)} tokens exceeds n_ctx={self.n_ctx}; shorten the target")
        keep = self.n_ctx + 1 - len(cont)
        ctx = ctx or [self.eos]
        return (ctx[-keep:], cont, True) if len(ctx) > keep else (ctx, cont, False)

    def _score_rows(self, contexts, continuations, T: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(contexts)
        # Padding rows (empty) fill the batch so every batch of a bucket has one shape.
        contexts = list(contexts) + [[self.eos]] * (self.batch_size - n)
        continuations = list(continuations) + [[self.eos]] * (self.batch_size - n)
        inputs_BT, targets_BT, weight_BT = right_padded(contexts, continuations, T)
        # Only the continuations' positions go through the head: K of them per row, bucketed like T.
        index_BK, weight_BK = continuation_index(weight_BT, bucket(max(map(len, continuations)), T))
        targets_BK = np.take_along_axis(targets_BT, index_BK, -1)
        logprob_BK, greedy_BK = self._continuation_logprobs(
            self.graphdef, self.params, *self._on_rows(inputs_BT, index_BK, targets_BK)
        )
        logprob_BK, greedy_BK = np.asarray(logprob_BK, np.float64)[:n], np.asarray(greedy_BK)[:n]
        weight_BK = weight_BK[:n]
        return np.sum(logprob_BK * weight_BK, axis=-1), np.all(greedy_BK | (weight_BK == 0), axis=-1)

    def per_token_logprobs(self, rows: Sequence[list[int]]) -> list[np.ndarray]:
        """For token rows (each at most n_ctx + 1 long): log p(row[t+1] | row[:t+1]) for every t."""
        pairs = [(row[:1], row[1:]) for row in rows]
        out: list[np.ndarray | None] = [None] * len(rows)
        lengths = [len(r) - 1 for r in rows]
        for batch in sorted_batches(lengths, self.batch_size):
            T = bucket(lengths[batch[0]], self.n_ctx)
            padded = [pairs[i] for i in batch] + [([self.eos], [self.eos])] * (self.batch_size - len(batch))
            inputs_BT, targets_BT, _ = right_padded([c for c, _ in padded], [x for _, x in padded], T)
            logprob_BT, _ = self._logprobs(self.graphdef, self.params, *self._on_rows(inputs_BT, targets_BT))
            logprob_BT = np.asarray(logprob_BT, np.float64)
            for b, i in enumerate(batch):
                out[i] = logprob_BT[b, : lengths[i]]
            self.progress(len(batch))
        return out

    # --- rolling (perplexity) ------------------------------------------------------------------------------
    def loglikelihood_rolling(self, token_lists: Sequence[list[int]]) -> list[float]:
        """Whole-document log-likelihood: disjoint windows of n_ctx predictions, each token predicted once, the
        first conditioned on EOS (lm-eval's get_rolling_token_windows with context_len=1)."""
        windows = [rolling_windows(tokens, self.eos, self.n_ctx) for tokens in token_lists]
        flat = [w for ws in windows for w in ws]
        scored = iter(self.loglikelihood_tokens(flat))
        return [sum(next(scored).logprob for _ in ws) for ws in windows]

    # --- generation ----------------------------------------------------------------------------------------
    def generate_until(
        self, contexts: Sequence[list[int]], until: Sequence[str], max_tokens: int
    ) -> tuple[list[str], list[bool]]:
        """Greedy continuations of token contexts, cut before the first stop string (EOS always stops), and
        whether each context was cut from the left to leave room for max_tokens."""
        if max_tokens >= self.n_ctx:
            raise ConfigError(f"max_tokens={max_tokens} leaves no room for a prompt in n_ctx={self.n_ctx}")
        keep = self.n_ctx - max_tokens
        fitted = [(ctx or [self.eos])[-keep:] for ctx in contexts]
        truncated = [len(ctx) > keep for ctx in contexts]
        stop_ids = tuple(sorted({self.eos} | {ids[0] for s in until if len(ids := self.tokenizer.encode(s)) == 1}))
        sampling = SamplingConfig(
            max_new_tokens=max_tokens, temperature=0.0, stop_tokens=stop_ids, vocab_limit=self.tokenizer.vocab_size
        )
        out: list[str | None] = [None] * len(contexts)
        for batch in sorted_batches([len(c) for c in fitted], self.batch_size):
            P = min(bucket(len(fitted[batch[0]]), self.n_ctx), keep)
            prompts = [fitted[i] for i in batch] + [[self.eos]] * (self.batch_size - len(batch))
            with self.partitioner.activate():
                new = generate(self._with_params(), prompts, sampling, length=P)
            for b, i in enumerate(batch):
                out[i] = cut_at_stop(self._decode_after(fitted[i], new[b]), until)
            self.progress(len(batch))
        return out, truncated

    def _with_params(self) -> Transformer:
        return nnx.merge(self.graphdef, self.params)

    def _decode_after(self, prompt: list[int], new: list[int]) -> str:
        """The new text, decoded together with its prompt so that a leading space is never lost."""
        new = [t for t in new if t != self.eos]
        head = self.tokenizer.decode(prompt)
        whole = self.tokenizer.decode(prompt + new)
        return whole[len(head) :] if whole.startswith(head) else self.tokenizer.decode(new)


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    cut = min((text.find(s) for s in until if s and s in text), default=len(text))
    return text[:cut]


def rolling_windows(tokens: list[int], prefix: int, n_ctx: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs that predict every token of `tokens` exactly once, each window's input at
    most n_ctx tokens; the last window keeps a full context and scores only its new tokens."""
    if not tokens:
        return []
    first = min(n_ctx, len(tokens))
    windows = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, n_ctx)
        end = done + n
        inputs = ([prefix] + tokens)[max(0, end - n_ctx) : end]  # the n_ctx tokens before each target
        windows.append((inputs[: len(inputs) - (n - 1)], tokens[end - n : end]))
        done = end
    return windows
