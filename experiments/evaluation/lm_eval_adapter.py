"""The `meshlm` model type for EleutherAI's lm-evaluation-harness, on meshlm's request primitives.

    meshlm lm-eval --model meshlm --model_args run_dir=runs/x --tasks hellaswag --include_path my_tasks/

lm-eval 0.4.x finds model types only in its own registry, so this module registers `meshlm` when imported:
`meshlm lm-eval ...` is lm-eval's command line with it imported, and from Python `import` this module before
`lm_eval.simple_evaluate(model="meshlm", ...)`. Model arguments: run_dir (required), step (default: latest),
mesh (default data=-1: rows split over every device), batch_size, eos_prefix (default true: every context
starts with EOS, as every document did in training; false scores the bare context, as lm-eval's `hf` does).
"""

from collections import defaultdict

import lm_eval.models  # noqa: F401  (lm-eval lists its own model types only while its registry is empty: first)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.model.errors import ConfigError
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner
from meshlm.training.run_dir import load_run

DEFAULT_BATCH = 16
DEFAULT_MAX_GEN_TOKS = 256


@register_model("meshlm")
class MeshLM(TemplateLM):
    def __init__(
        self,
        run_dir: str,
        step: int | str | None = None,
        mesh: str = "data=-1",
        batch_size: int | str | None = None,
        eos_prefix: bool | str = True,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        **_lm_eval_extras,  # device, max_batch_size: lm-eval passes them to every model type
    ):
        super().__init__()
        partitioner = Partitioner.build(MeshConfig(shape=mesh))
        run = load_run(run_dir, mesh=MeshConfig(shape=mesh), step=None if step is None else int(step))
        rows = _rows(batch_size, partitioner.sizes["data"])
        self.run, self.tokenizer_ = run, run.tokenizer
        self.lm = LanguageModel(run.model, run.tokenizer, batch_size=rows, partitioner=partitioner)
        self.eos_prefix = str(eos_prefix).lower() in ("true", "1", "yes")
        self.max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer_.eos_id

    @property
    def max_length(self) -> int:
        return self.run.config.model.n_ctx

    @property
    def tokenizer_name(self) -> str:
        return str(self.run.path)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer_.encode(string)

    def _context(self, ids: list[int]) -> list[int]:
        """The context as the model reads it: after EOS (a document start) unless told otherwise."""
        if self.eos_prefix and ids[:1] != [self.eot_token_id]:
            return [self.eot_token_id] + ids
        return ids

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        scored = self.lm.loglikelihood_tokens([(self._context(ctx), cont) for _, ctx, cont in requests])
        out = []
        for (key, _, _), s in zip(requests, scored):
            result = (s.logprob, s.is_greedy)
            self.cache_hook.add_partial("loglikelihood", key, result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Disjoint windows of n_ctx predictions, the first conditioned on EOS (lm-eval's rolling windows)."""
        texts = [req.args[0] for req in requests]
        out = self.lm.loglikelihood_rolling([self.tok_encode(t) for t in texts])
        for text, value in zip(texts, out):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), value)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first `until` string; requests with the same settings share batches."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[_generation_key(req.args[1], self.max_gen_toks)].append(i)
        out: list[str | None] = [None] * len(requests)
        for (until, max_toks), indices in groups.items():
            contexts = [self._context(self.tok_encode(requests[i].args[0])) for i in indices]
            texts, _ = self.lm.generate_until(contexts, list(until), max_toks)
            for i, text in zip(indices, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out


def _rows(batch_size, data_devices: int) -> int:
    """lm-eval's --batch_size (an int, 'auto' or absent), raised to a multiple of the devices rows are split over."""
    rows = DEFAULT_BATCH if batch_size in (None, "auto") or str(batch_size).startswith("auto") else int(batch_size)
    return -(-rows // data_devices) * data_devices


def _generation_key(gen_kwargs: dict, default_max: int) -> tuple[tuple[str, ...], int]:
    kwargs = dict(gen_kwargs)
    if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0:
        raise ConfigError("the meshlm lm-eval model decodes greedily; drop do_sample/temperature from gen_kwargs")
    until = kwargs.pop("until", None) or []
    until = (until,) if isinstance(until, str) else tuple(until)
    return until, int(kwargs.pop("max_gen_toks", default_max))
