"""Evaluate one model on prompt tasks (every K, every shot seed) and probes: `evaluate`, and the trainer hook."""

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from flax import nnx

from meshlm.experiments.evaluation import calibration, formats, metrics, shot_orders
from meshlm.experiments.evaluation import tasks as tasks_lib
from meshlm.experiments.evaluation.cache import CachedLanguageModel, RequestCache
from meshlm.experiments.evaluation.prompts import Fitted, PromptFormat, draw_shots, first_shots, fit
from meshlm.experiments.evaluation.requests import LanguageModel
from meshlm.experiments.evaluation.tasks import probes
from meshlm.experiments.evaluation.tasks.base import Task
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer
from meshlm.parallel.sharding import Partitioner
from meshlm.training import sources

SAMPLERS = ("seeded", "first_n")  # per-item seeded permutations; lm-eval's first_n (the pool's first K)
HELDOUT_CHARS = 1_000_000  # validation text read for the probes (they use at most ~65k tokens)


def heldout_texts(config) -> list[str]:
    """The run's validation documents, up to HELDOUT_CHARS characters: text the model was not trained on."""
    texts, total = [], 0
    for text in sources.open_splits(config.data)["validation"]:
        texts.append(text)
        total += len(text)
        if total >= HELDOUT_CHARS:
            break
    return texts


def parse_shots(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise ConfigError(f"--shots {text!r}: give comma-separated integers, e.g. 0,1,4,16") from None


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    shots: tuple[int, ...] = (0,)
    seeds: int = 1  # shot seeds 0..seeds-1; K=0 prompts have no shots and are scored once
    batch_size: int = 16
    limit: int = 0  # items evaluated per task (the first ones); 0 = all
    task_seed: int = 0  # the seed of generated tasks (arithmetic problems, scrambles, label mapping)
    sampler: str = "seeded"  # how shots are chosen: SAMPLERS
    orders: int = 1  # orders of each item's shots (at most K!), the drawn one first
    formats: int = 1  # prompt formats (formats.py), the task's own first
    log_samples: bool = False  # every scored item's prompt, answers, scores and prediction, in results["samples"]
    calibrate: bool = False  # contextual calibration of multiple-choice tasks (calibration.py)
    content_free: tuple[str, ...] = calibration.CONTENT_FREE

    def validate(self) -> "EvalSettings":
        if not self.shots or min(self.shots) < 0:
            raise ConfigError(f"--shots {','.join(map(str, self.shots))}: give non-negative K values, e.g. 0,1,4,16")
        if self.seeds < 1:
            raise ConfigError(f"--seeds {self.seeds} must be at least 1")
        if self.limit < 0:
            raise ConfigError(f"--limit {self.limit} must be 0 (all items) or positive")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--fewshot-sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if self.orders < 1:
            raise ConfigError(f"--orders {self.orders} must be at least 1")
        if self.formats < 1:
            raise ConfigError(f"--formats {self.formats} must be at least 1")
        if self.calibrate and not self.content_free:
            raise ConfigError("--calibrate needs at least one content-free input, e.g. --content-free N/A")
        return self

    def settings(self, k: int) -> range:
        return range(1 if k == 0 or self.sampler == "first_n" else self.seeds)


def resolve_tasks(specs: Sequence[str | Task], task_seed: int = 0) -> list[Task | str]:
    """Tasks and probe names from specs (names, groups, jsonl:PATH, ...); Task objects pass through."""
    names = tasks_lib.expand([s for s in specs if isinstance(s, str)])
    return [s for s in specs if isinstance(s, Task)] + [tasks_lib.resolve(n, task_seed) for n in names]


def evaluate(
    model: Transformer,
    tokenizer,
    tasks: Sequence[str | Task],
    shots: Sequence[int] = (0,),
    seeds: int = 1,
    batch_size: int = 16,
    limit: int = 0,
    heldout: Sequence[str] = (),
    partitioner: Partitioner | None = None,
    progress: Callable[[int], None] = lambda n: None,
    task_seed: int = 0,
    sampler: str = "seeded",
    orders: int = 1,
    calibrate: bool = False,
    content_free: Sequence[str] = calibration.CONTENT_FREE,
    formats: int = 1,
    cache: RequestCache | None = None,
    log_samples: bool = False,
) -> dict:
    """{task name: results} for one model. `heldout` texts feed the icl_score, induction and perplexity probes;
    with a `cache`, requests it holds for this model are not scored again."""
    settings = EvalSettings(
        shots=tuple(shots),
        seeds=seeds,
        batch_size=batch_size,
        limit=limit,
        task_seed=task_seed,
        sampler=sampler,
        orders=orders,
        formats=formats,
        calibrate=calibrate,
        content_free=tuple(content_free),
        log_samples=log_samples,
    ).validate()
    options = dict(batch_size=batch_size, partitioner=partitioner, progress=progress)
    lm = (
        LanguageModel(model, tokenizer, **options)
        if cache is None
        else CachedLanguageModel(model, tokenizer, cache, **options)
    )
    out = {}
    for task in resolve_tasks(tasks, task_seed):
        if isinstance(task, str):
            out[task] = run_probe(lm, task, heldout, task_seed)
            if calibrate:
                out[task]["calibration"] = "not applicable: a probe has no answers to choose between"
        else:
            out[task.name] = run_task(lm, task, settings)
    return out


def flat_metrics(results: dict, prefix: str = "eval") -> dict[str, float]:
    """Scalars for a metrics log: eval/TASK/METRIC@K for prompt tasks, eval/PROBE/METRIC for probes."""
    flat = {}
    for task, result in results.items():
        for k, by_metric in result.get("shots", {}).items():
            for metric, value in by_metric["metrics"].items():
                flat[f"{prefix}/{task}/{metric}@{k}"] = value["mean"]
        for metric, value in result.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{prefix}/{task}/{metric}"] = float(value)
    return flat


def make_hook(
    graphdef, tokenizer, tasks: Sequence[str | Task], heldout: Sequence[str] = (), **settings
) -> Callable[[int, object], dict[str, float]]:
    """fn(step, state) -> flat metrics, for the trainer's every-N-steps hooks (state.params: a pure dict)."""
    prepared = resolve_tasks(tasks, settings.get("task_seed", 0))

    def hook(step: int, state) -> dict[str, float]:
        model = nnx.merge(graphdef, state.params)
        return flat_metrics(evaluate(model, tokenizer, prepared, heldout=heldout, **settings))

    return hook


def run_task(lm: LanguageModel, task: Task, settings: EvalSettings) -> dict:
    """Every K, shot seed, order and format of a task. `shots` holds the task's own format; with --formats > 1,
    `formats` holds each metric's spread over formats per K and the formats themselves."""
    items = task.items[: settings.limit or None]
    uncond = _unconditional(lm, task, items)  # in no format of the task: scored once
    skip = calibration.not_applicable(task)
    content_free = settings.content_free if settings.calibrate and not skip else ()
    chosen = formats.variants(task, settings.formats, settings.task_seed)
    styled = [formats.apply(task, v) for v in chosen]
    samples = [] if settings.log_samples else None
    by_format = []
    for i, t in enumerate(styled):
        logged = [] if samples is not None else None
        by_format.append(_run_shots(lm, t, t.items[: len(items)], uncond, content_free, settings, logged))
        if logged is not None:
            samples += [{"format": i} | record for record in logged]
    out = {
        "kind": task.kind,
        "primary": task.primary,
        "n_items": len(items),
        "fewshot_split": task.fewshot_split,
        "shots": by_format[0],
    }
    if settings.calibrate:
        out["calibration"] = skip or {"metric": calibration.METRIC, "content_free": list(content_free)}
    if len(chosen) > 1:
        out["formats"] = _across_formats(task, chosen, styled, by_format)
    if samples is not None:
        out["samples"] = samples
    return out


def _run_shots(
    lm: LanguageModel, task: Task, items, uncond, content_free: Sequence[str], settings, samples: list | None
) -> dict:
    by_k = {}
    for k in sorted(set(settings.shots)):
        runs = []  # [seed][order]
        for seed in settings.settings(k):
            drawn = shots_for(task, items, k, seed, settings.sampler)
            ordered = [shot_orders.orders(s, settings.orders, seed, task.name, it.id) for s, it in zip(drawn, items)]
            # An item with fewer shots than K (a small pool) has fewer distinct orders and repeats them.
            n = max(map(len, ordered), default=1)
            per_order = []
            for i in range(n):
                logged = [] if samples is not None else None
                per_order.append(
                    _score(lm, task, items, [o[i % len(o)] for o in ordered], uncond, content_free, logged)
                )
                if logged is not None:
                    samples += [{"k": k, "seed": seed, "order": i} | record for record in logged]
            runs.append(per_order)
        by_k[str(k)] = _aggregate(runs, k)
    return by_k


def _across_formats(task: Task, chosen, styled: Sequence[Task], by_format: Sequence[dict]) -> dict:
    """Per K, each metric's mean, std, min and max over formats (each format's mean over seeds and orders), and
    the primary metric's best and worst format (their index in `variants`)."""
    shots = {}
    for k, entry in by_format[0].items():
        spreads = {
            name: formats.spread([f[k]["metrics"][name]["mean"] for f in by_format]) for name in entry["metrics"]
        }
        per_format = spreads[task.primary]["per_format"]
        shots[k] = {"metrics": spreads, "best": int(np.argmax(per_format)), "worst": int(np.argmin(per_format))}
    variants = [{"format": v.describe(t), "example": formats.example(t)} for v, t in zip(chosen, styled)]
    return {"n": len(chosen), "variants": variants, "shots": shots}


def _unconditional(lm: LanguageModel, task: Task, items) -> list[dict[str, list[float]]]:
    """Per item, each choice's log-probability without the question: after GPT-3's answer context ("uncond", for
    acc_uncond) and after the empty context ("prior", for acc_mutual_info). Independent of K and the shots, so
    scored once, in no format of the task. A choice keeps the separator it has after the real context (that
    context's trailing whitespace, then the target delimiter), so all three score the same continuation tokens."""
    contexts = {}
    if task.kind == "multiple_choice" and task.uncond_context:
        contexts["uncond"] = task.uncond_context
    if task.kind == "multiple_choice" and task.mutual_info:
        contexts["prior"] = ""
    if not contexts:
        return [{} for _ in items]
    plain = PromptFormat(target_delimiter=task.fmt.target_delimiter)
    fitted = [
        fit(
            lm.tokenizer,
            plain,
            [],
            dataclasses.replace(it, context=context + it.context[len(it.context.rstrip()) :]),
            _continuations(task, it),
            lm.n_ctx,
        )
        for it in items
        for context in contexts.values()
    ]
    scored = iter(lm.loglikelihood_tokens([(f.context_ids, c) for f in fitted for c in f.continuation_ids]))
    return [{name: [next(scored).logprob for _ in it.choices] for name in contexts} for it in items]


def _continuations(task: Task, item) -> list[str]:
    answers = item.choices if task.kind == "multiple_choice" else (item.target,)
    return [task.fmt.target_delimiter + a for a in answers]


def shots_for(task: Task, items, k: int, seed: int, sampler: str = "seeded") -> list[list]:
    if sampler == "first_n":
        return [first_shots(task.pool, it, k) for it in items]
    return [draw_shots(task.pool, it, k, seed, task.name) for it in items]


def fitted_prompts(lm: LanguageModel, task: Task, items, shots) -> list[list[Fitted]]:
    """Per item, the prompt with every continuation; for partial scoring, one prompt per choice (the choice as
    the context, the target as its continuation), lm-eval's multiple-input requests."""
    out = []
    for it, s in zip(items, shots):
        if it.partial:
            target = [task.fmt.target_delimiter + it.target]
            out.append(
                [
                    fit(lm.tokenizer, task.fmt, s, dataclasses.replace(it, context=c), target, lm.n_ctx)
                    for c in it.choices
                ]
            )
        else:
            out.append([fit(lm.tokenizer, task.fmt, s, it, _continuations(task, it), lm.n_ctx)])
    return out


def _score(
    lm: LanguageModel, task: Task, items, shots, uncond, content_free: Sequence[str], samples: list | None = None
) -> tuple[list[dict], list[Fitted]]:
    """Per-item metrics of one set of shots (one K, seed and order), and the fitted prompts (for truncation
    counts). With content-free inputs, the calibration requests go in the same call: contexts that coincide are
    run once. `samples` receives a record per item: its prompts, answers, scores and prediction."""
    per_item_fitted = fitted_prompts(lm, task, items, shots)
    fitted = [f for fs in per_item_fitted for f in fs]
    pairs = [(f.context_ids, c) for f in fitted for c in f.continuation_ids]
    cf = calibration.content_free(
        lm.tokenizer, task, items, [fs[0] for fs in per_item_fitted], shots, content_free, lm.n_ctx
    )
    scored_all = lm.loglikelihood_tokens(pairs + cf.pairs)
    scored = iter(scored_all[: len(pairs)])
    if task.kind == "multiple_choice":
        biases = cf.biases([x.logprob for x in scored_all[len(pairs) :]]) if content_free else [None] * len(items)
        per_item, per_item_lls = [], []
        for it, u, p_cf in zip(items, uncond, biases):
            s = [next(scored) for _ in it.choices]
            lls = [x.logprob for x in s]
            per_item_lls.append(lls)
            m = metrics.choice_metrics(
                lls, [x.n_tokens for x in s], it.choices, it.gold, u.get("uncond"), u.get("prior")
            )
            if p_cf is not None:
                m[calibration.METRIC] = float(calibration.calibrated_prediction(lls, p_cf) == it.gold)
            per_item.append(m)
        if samples is not None:
            for it, fs, m, lls in zip(items, per_item_fitted, per_item, per_item_lls):
                record = {"choices": list(it.choices), "gold": it.gold, "logprobs": lls}
                samples.append(_sample(lm, it, fs) | record | {"prediction": int(np.argmax(lls)), "metrics": m})
        return per_item, fitted
    per_item = [{task.greedy_metric: float(s.is_greedy), "logprob": s.logprob} for s in scored]
    if task.kind == "generate":
        prompts = [
            fit(lm.tokenizer, task.fmt, s, it, [], lm.n_ctx, reserve=task.max_gen_tokens) for s, it in zip(shots, items)
        ]
        texts, _ = lm.generate_until([p.context_ids for p in prompts], task.until, task.max_gen_tokens)
        for m, text, it in zip(per_item, texts, items):
            m["exact_match"] = (
                metrics.exact_match_aliases(text, it.aliases) if it.aliases else metrics.exact_match(text, it.target)
            )
        fitted = prompts
    if samples is not None:
        texts = texts if task.kind == "generate" else [None] * len(items)
        for it, fs, m, text in zip(items, per_item_fitted, per_item, texts):
            record = {"target": it.target, "generated": text} if text is not None else {"target": it.target}
            samples.append(_sample(lm, it, fs) | record | {"metrics": m})
    return per_item, fitted


def _sample(lm: LanguageModel, item, fitted: Sequence[Fitted]) -> dict:
    """An item's prompts as the model reads them (EOS left out); a partially scored item has one per choice."""
    prompts = [
        lm.tokenizer.decode(f.context_ids[1:] if f.context_ids[:1] == [lm.eos] else f.context_ids) for f in fitted
    ]
    return {"id": item.id, "prompt": prompts[0] if len(prompts) == 1 else prompts}


def _aggregate(runs: list[list[tuple[list[dict], list[Fitted]]]], k: int) -> dict:
    """runs[seed][order]: each metric's mean over items per run; its spread over orders within a seed, and over
    seeds of each seed's mean over orders; the item stderr averaged over runs."""
    first = runs[0][0][0][0]
    out = {}
    for name in [n for n in first if n != "logprob"]:
        stats = [[metrics.mean_stderr([m[name] for m in items]) for items, _ in seed] for seed in runs]
        out[name] = _spread([[mean for mean, _ in seed] for seed in stats]) | {
            "stderr": float(np.mean([s for seed in stats for _, s in seed])),
        }
    if "logprob" in first:
        # lm-eval's loglikelihood perplexity: exp(-mean over items of the target's summed log-probability); its
        # standard error by bootstrap over items, averaged over runs like the others'.
        logprobs = [[[m["logprob"] for m in items] for items, _ in s] for s in runs]
        out["perplexity"] = _spread([[math.exp(-np.mean(lp)) for lp in s] for s in logprobs]) | {
            "stderr": float(
                np.mean([metrics.bootstrap_stderr(lambda x: np.exp(-x.mean(-1)), lp) for s in logprobs for lp in s])
            )
        }
    fitted = [f for seed in runs for _, fs in seed for f in fs]
    return {
        "metrics": out,
        "seeds": len(runs),
        "orders": len(runs[0]),
        "shots_mean": float(np.mean([f.n_shots for f in fitted])),
        "shots_dropped": float(np.mean([f.n_shots < k for f in fitted])),  # fewer than K shots: n_ctx or pool size
        "prompt_cut": float(np.mean([f.cut for f in fitted])),  # prompts cut inside (the query kept)
    }


def _spread(per_seed_order: list[list[float]]) -> dict:
    by_order = metrics.across_orders(per_seed_order)
    return metrics.across_seeds(by_order["per_seed"]) | by_order


def run_probe(lm: LanguageModel, name: str, heldout: Sequence[str], seed: int) -> dict:
    if name == "induction":
        return probes.induction(lm, _token_pool(lm, heldout), seed)
    if not heldout:
        return {"error": f"{name} needs held-out text (the run's validation split)"}
    return probes.icl_score(lm, heldout) if name == "icl_score" else probes.perplexity(lm, heldout)


def _token_pool(lm: LanguageModel, heldout: Sequence[str]) -> list[int]:
    """Tokens the model has seen: those of the held-out text (up to 100k characters), else all but specials."""
    seen = set(lm.tokenizer.encode("".join(heldout)[:100_000])) - {lm.eos}
    if len(seen) >= 2 * probes.INDUCTION_LENGTH:
        return sorted(seen)
    return [t for t in range(lm.tokenizer.vocab_size) if t not in (lm.eos, lm.tokenizer.bos_id, 0)]


def estimated_rows(task: Task | str, settings: EvalSettings, n_ctx: int) -> int:
    """Rows the task will score or generate: the progress bar's total."""
    if isinstance(task, str):
        return {"icl_score": probes.MAX_ROWS, "induction": probes.INDUCTION_ROWS}.get(
            task, probes.MAX_TOKENS // n_ctx + 1
        )
    items = task.items[: settings.limit or None]
    per_setting = sum(len(it.choices) or (2 if task.kind == "generate" else 1) for it in items)
    baselines = (bool(task.uncond_context) + task.mutual_info) if task.kind == "multiple_choice" else 0
    uncond = per_setting * baselines
    if settings.calibrate and not calibration.not_applicable(task):
        per_setting *= 1 + len(settings.content_free)  # at most: coinciding requests are scored once
    runs = sum(len(settings.settings(k)) * shot_orders.count(settings.orders, k) for k in set(settings.shots))
    return per_setting * runs * settings.formats + uncond  # at most: a task may have fewer distinct formats
