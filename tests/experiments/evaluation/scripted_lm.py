"""A stand-in for LanguageModel whose log-probabilities are chosen by the test, for harness tests of the
bookkeeping around scores (calibration, shot orders) where a real model's numbers would be arbitrary."""

from collections.abc import Callable

from meshlm.experiments.evaluation.requests import Scored
from tests.experiments.evaluation.helpers import PieceTokenizer


class ScriptedLM:
    """loglikelihood_tokens returns score(context text, continuation text) and records every call's requests."""

    def __init__(self, score: Callable[[str, str], float], n_ctx: int = 256):
        self.tokenizer = PieceTokenizer(pieces=("N/A", "[MASK]", "|", "#"))
        self.n_ctx, self.score, self.calls = n_ctx, score, []

    def loglikelihood_tokens(self, pairs):
        self.calls.append(list(pairs))
        decode = self.tokenizer.decode
        return [Scored(self.score(decode(ctx), decode(cont)), False, len(cont)) for ctx, cont in pairs]
