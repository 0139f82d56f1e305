"""What an evaluation will run, counted without a model: `meshlm eval --dry-run`.

The harness runs as it would, on a stand-in language model that records every request and answers with zeros, so
the counts follow every option (K, seeds, orders, formats, calibration) without a second description of them.
"""

import dataclasses

from meshlm.experiments.evaluation import harness, packing
from meshlm.experiments.evaluation.requests import LanguageModel, Scored


@dataclasses.dataclass
class Cost:
    requests: int = 0  # loglikelihood requests (a choice of an item is one)
    contexts: int = 0  # distinct contexts among them: each runs once when packed
    tokens: int = 0  # tokens the packed rows hold (shared contexts once)
    padded: int = 0  # positions the forward passes compute (rows x padded length, batches filled)
    generations: int = 0  # greedy generations
    generated: int = 0  # at most this many tokens generated


class CountingLM(LanguageModel):
    """LanguageModel's request types, counted: what the packed scorer would run, nothing scored."""

    def __init__(self, tokenizer, n_ctx: int, batch_size: int):
        self.tokenizer, self.n_ctx, self.eos, self.batch_size = tokenizer, n_ctx, tokenizer.eos_id, batch_size
        self.cost = Cost()

    def loglikelihood_tokens(self, pairs):
        fitted = [self._fit(ctx, cont) for ctx, cont in pairs]
        if fitted:
            trimmed = [(c, x) for c, x, _ in fitted]
            batches = self.packed_batches(trimmed)
            self.cost.requests += len(trimmed)
            self.cost.contexts += len({tuple(c) for c, _ in trimmed})
            self.cost.tokens += sum(packing.row_length(row) for rows, _, _ in batches for row in rows)
            self.cost.padded += sum(self.batch_size * T for _, T, _ in batches)
        return [Scored(0.0, False, len(x), cut) for _, x, cut in fitted]

    def generate_until(self, contexts, until, max_tokens):
        self.cost.generations += len(contexts)
        self.cost.generated += len(contexts) * max_tokens
        return [""] * len(contexts), [False] * len(contexts)


def count(tokenizer, n_ctx: int, tasks, settings: harness.EvalSettings) -> dict[str, Cost | str]:
    """Per prompt task its Cost; per probe, the rows it scores (a probe's work does not depend on the options)."""
    out = {}
    for task in harness.resolve_tasks(tasks, settings.task_seed):
        if isinstance(task, str):
            out[task] = f"{harness.estimated_rows(task, settings, n_ctx)} rows of at most {n_ctx} tokens"
            continue
        lm = CountingLM(tokenizer, n_ctx, settings.batch_size)
        harness.run_task(lm, task, settings)
        out[task.name] = lm.cost
    return out
