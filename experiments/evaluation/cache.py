"""A request cache, so that re-running an evaluation or adding a task re-scores nothing already scored.

Keyed by the model's fingerprint (its config and the bytes of every parameter) and the request as the model reads
it (token ids after fitting to n_ctx, and the generation settings): other weights, another kernel or another
context length never read an entry. SQLite in the output folder; one transaction per scoring call, so a killed
evaluation keeps every call it finished. Requests scored together with others are packed differently than when
scored alone, so a cached number may differ from a fresh one by float rounding (not more: every request is
masked to itself).
"""

import dataclasses
import hashlib
import json
import pathlib
import sqlite3
from collections.abc import Callable, Sequence

import jax
import numpy as np

from meshlm.experiments.evaluation.requests import LanguageModel, Scored
from meshlm.model.errors import ConfigError

FILE = "requests.sqlite"


def fingerprint(cfg, params) -> str:
    """sha256 of the model config and of every parameter's dtype, shape and bytes, in tree order."""
    if jax.process_count() > 1:
        raise ConfigError("the request cache needs a single process (it hashes every parameter); pass --no-cache")
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class RequestCache:
    def __init__(self, path: pathlib.Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS requests (model TEXT, key TEXT, value TEXT, PRIMARY KEY (model, key))"
        )
        self.hits = self.misses = 0

    def through(
        self, model: str, kind: str, keys: Sequence, compute: Callable[[list[int]], list], progress=lambda n: None
    ) -> list:
        """The value of every key, from the cache or from compute(indices of the missing keys) (JSON values);
        progress(n) counts the ones found."""
        hashed = [hashlib.sha256(json.dumps([kind, k], default=_token_id).encode()).hexdigest() for k in keys]
        found = {}
        for start in range(0, len(hashed), 500):  # SQLite's limit on bound parameters
            chunk = hashed[start : start + 500]
            rows = self.db.execute(
                f"SELECT key, value FROM requests WHERE model = ? AND key IN ({','.join('?' * len(chunk))})",
                [model, *chunk],
            )
            found.update(rows)
        missing = [i for i, h in enumerate(hashed) if h not in found]
        self.hits += len(hashed) - len(missing)
        progress(len(hashed) - len(missing))
        self.misses += len(missing)
        if missing:
            values = compute(missing)
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO requests VALUES (?, ?, ?)",
                    [(model, hashed[i], json.dumps(v)) for i, v in zip(missing, values)],
                )
            found.update((hashed[i], json.dumps(v)) for i, v in zip(missing, values))
        return [json.loads(found[h]) for h in hashed]

    def close(self) -> None:
        self.db.close()


def _token_id(value) -> int:
    """A NumPy integer in a request (a probe's token rows) as the Python int it equals: the same request, one key."""
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"a request holds a {type(value).__name__}, which has no JSON form")


class CachedLanguageModel(LanguageModel):
    """LanguageModel whose requests go through a RequestCache; only the missing ones are run."""

    def __init__(self, model, tokenizer, cache: RequestCache, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        self.cache, self.model_key = cache, fingerprint(model.cfg, self.params)

    def loglikelihood_tokens(self, pairs):
        fitted = [self._fit(ctx, cont) for ctx, cont in pairs]

        def compute(missing: list[int]) -> list:
            scored = super(CachedLanguageModel, self).loglikelihood_tokens([fitted[i][:2] for i in missing])
            return [[s.logprob, s.is_greedy] for s in scored]

        keys = [[c, x] for c, x, _ in fitted]
        values = self.cache.through(self.model_key, "loglikelihood", keys, compute, self.progress)
        return [Scored(lp, greedy, len(x), cut) for (lp, greedy), (_, x, cut) in zip(values, fitted)]

    def per_token_logprobs(self, rows):
        def compute(missing: list[int]) -> list:
            out = super(CachedLanguageModel, self).per_token_logprobs([rows[i] for i in missing])
            return [a.tolist() for a in out]

        values = self.cache.through(self.model_key, "per_token", [list(r) for r in rows], compute, self.progress)
        return [np.asarray(v) for v in values]

    def generate_until(self, contexts, until, max_tokens):
        if max_tokens >= self.n_ctx:  # the model's own error
            return super().generate_until(contexts, until, max_tokens)
        keep = self.n_ctx - max_tokens

        def compute(missing: list[int]) -> list:
            texts, _ = super(CachedLanguageModel, self).generate_until(
                [contexts[i] for i in missing], until, max_tokens
            )
            return texts

        keys = [[(ctx or [self.eos])[-keep:], list(until), max_tokens] for ctx in contexts]
        texts = self.cache.through(self.model_key, "generate", keys, compute, self.progress)
        return texts, [len(ctx) > keep for ctx in contexts]
