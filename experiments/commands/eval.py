"""`meshlm eval`: trained runs x tasks x K x shot seeds -> results.json, results.md, ICL-curve PNGs."""

import dataclasses
import json
import pathlib
import re
import sys

import jax
from etils import epath
from flax import nnx

from meshlm.experiments.evaluation import cost, harness, report
from meshlm.experiments.evaluation.cache import FILE, RequestCache
from meshlm.experiments.sweep import runner, store
from meshlm.model.errors import ConfigError
from meshlm.training import run_dir as run_dir_lib
from meshlm.training.atomic import write_atomic

DESCRIPTION = (
    "Evaluate trained runs on prompt tasks at every K (shots drawn per item by seed, never the item itself) and on "
    "in-context-learning probes. Writes results.json, results.md and icl_TASK.png (the task's metric against K, one "
    "line per model). See docs/evaluation.md."
)


def add_arguments(p) -> None:
    models = p.add_mutually_exclusive_group(required=True)
    models.add_argument("--run-dir", action="append", metavar="DIR", help="a trained run (repeatable)")
    models.add_argument("--sweep", metavar="DIR", help="every finished run of a sweep (meshlm sweep run --out DIR)")
    p.add_argument(
        "--tasks",
        action="append",
        required=True,
        metavar="LIST",
        help="comma-separated: built-in names (arithmetic_2da ... arithmetic_1dc, cycle_letters, anagrams1, "
        "anagrams2, random_insertion, reversed_words, label_mapping, icl_score, induction, perplexity), groups "
        "(arithmetic, unscramble, icl), jsonl:PATH, lambada:PATH, bigbench:PATH, and lm-eval's hellaswag, arc_easy, "
        "arc_challenge, piqa, winogrande, openbookqa, copa, boolq, lambada_openai as NAME:PATH[:SHOTS_PATH] (a JSON "
        "lines or Parquet file exported by HF datasets) or NAME:tfds",
    )
    p.add_argument("--shots", default="0", metavar="K,K,...", help="numbers of examples in the prompt (default 0)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="shot seeds per K > 0 (default 1)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="rows per forward pass (default 16)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="evaluate the first N items of a task (0 = all)")
    p.add_argument(
        "--fewshot-sampler",
        choices=harness.SAMPLERS,
        default="seeded",
        help="seeded: shots drawn per item by seed (default); first_n: the first K of the shot pool, as lm-eval's "
        "first_n sampler",
    )
    p.add_argument(
        "--orders",
        type=int,
        default=1,
        metavar="N",
        help="orders of each item's shots (seeded, at most K!); results give the spread over orders apart from the "
        "spread over seeds (default 1)",
    )
    p.add_argument(
        "--formats",
        type=int,
        default=1,
        metavar="N",
        help="prompt formats per task (seeded: field casing and separators, shot separator; the task's own first); "
        "results give each metric's spread over formats and the best and worst format (default 1)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="also report contextual calibration's accuracy (acc_calibrated) for multiple-choice tasks",
    )
    p.add_argument(
        "--content-free",
        action="append",
        metavar="TEXT",
        help="a content-free input for --calibrate (repeatable; default: N/A, the empty string and [MASK])",
    )
    p.add_argument("--task-seed", type=int, default=0, metavar="S", help="seed of generated tasks (default 0)")
    p.add_argument("--out", metavar="DIR", help="where results.json, results.md and PNGs go (--sweep: DIR/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--log-samples",
        action="store_true",
        help="write OUT/samples/MODEL/TASK.jsonl: per scored item (and K, seed, order, format) its prompt, answers, "
        "log-probabilities, prediction and metrics",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="score every request again: by default scores are kept in OUT/requests.sqlite, keyed by the weights and "
        "the request, and a re-run or an added task scores only what is new",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print, per model and task, the requests, distinct contexts and tokens the evaluation would score; "
        "load no parameters, score nothing",
    )


def run(args) -> None:
    settings = harness.EvalSettings(
        shots=harness.parse_shots(args.shots),
        seeds=args.seeds,
        batch_size=args.batch_size,
        limit=args.limit,
        task_seed=args.task_seed,
        sampler=args.fewshot_sampler,
        orders=args.orders,
        formats=args.formats,
        calibrate=args.calibrate,
        content_free=tuple(args.content_free) if args.content_free is not None else harness.EvalSettings.content_free,
    ).validate()
    tasks = harness.resolve_tasks(args.tasks, settings.task_seed)
    if not tasks:
        raise ConfigError("--tasks names no task; e.g. --tasks arithmetic_2da,label_mapping,icl_score")
    run_dirs, names = _models(args)
    if args.dry_run:
        _dry_run(run_dirs, names, tasks, settings)
        return
    out_dir = pathlib.Path(args.out or pathlib.Path(args.sweep) / "eval")
    bar = _progress_bar(not args.no_progress)
    cache = None if args.no_cache else RequestCache(out_dir / FILE)
    models = []
    for run_dir, name in zip(run_dirs, names):
        if not (epath.Path(run_dir) / run_dir_lib.CONFIG).is_file():
            raise ConfigError(
                f"--run-dir {run_dir} holds no run (no {run_dir_lib.CONFIG}); pass a meshlm train directory"
            )
        loaded = run_dir_lib.load_run(run_dir)
        bar.total = (bar.total or 0) + sum(harness.estimated_rows(t, settings, loaded.model.cfg.n_ctx) for t in tasks)
        bar.set_description(name)
        needs_text = any(t in ("icl_score", "perplexity", "induction") for t in tasks if isinstance(t, str))
        results = harness.evaluate(
            loaded.model,
            loaded.tokenizer,
            tasks,
            shots=settings.shots,
            seeds=settings.seeds,
            batch_size=settings.batch_size,
            limit=settings.limit,
            heldout=harness.heldout_texts(loaded.config) if needs_text else (),
            progress=bar.update,
            task_seed=settings.task_seed,
            sampler=settings.sampler,
            orders=settings.orders,
            formats=settings.formats,
            calibrate=settings.calibrate,
            content_free=settings.content_free,
            cache=cache,
            log_samples=args.log_samples,
        )
        if args.log_samples:
            _write_samples(out_dir / "samples" / _file_name(name), results)
        params = sum(x.size for x in jax.tree.leaves(nnx.state(loaded.model, nnx.Param)))
        models.append({"name": name, "run_dir": str(run_dir), "params": int(params), "results": results})
    bar.close()
    if cache is not None:
        print(f"request cache {out_dir / FILE}: {cache.hits:,} found, {cache.misses:,} scored", file=sys.stderr)
        cache.close()
    report.write_json(
        out_dir / "results.json", {"settings": dataclasses.asdict(settings), "tasks": args.tasks, "models": models}
    )
    write_atomic(out_dir / "results.md", report.markdown(models, sorted(set(settings.shots))))
    pngs = (
        report.plot_icl_curves(models, out_dir)
        + report.plot_icl_scores(models, out_dir)
        + report.plot_sensitivity(models, out_dir)
    )
    print(report.markdown(models, sorted(set(settings.shots))))
    print(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'} and {len(pngs)} PNG(s)", file=sys.stderr)


def _write_samples(folder: pathlib.Path, results: dict) -> None:
    for task, result in results.items():
        if "samples" in result:
            lines = "".join(json.dumps({"task": task} | record) + "\n" for record in result.pop("samples"))
            write_atomic(folder / f"{_file_name(task)}.jsonl", lines.encode())


def _file_name(name: str) -> str:
    """A model's or task's name as a file name: sweep names hold spaces, '=' and '+'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _dry_run(run_dirs: list[str], names: list[str], tasks, settings: harness.EvalSettings) -> None:
    total = cost.Cost()
    for run_dir, name in zip(run_dirs, names):
        config, tokenizer = run_dir_lib.load_config_and_tokenizer(run_dir)
        for task, c in cost.count(tokenizer, config.model.n_ctx, tasks, settings).items():
            if isinstance(c, str):
                print(f"{name}  {task}: {c}")
                continue
            line = f"{name}  {task}: {c.requests:,} requests, {c.contexts:,} distinct contexts, {c.tokens:,} tokens"
            line += f" in packed rows ({c.padded:,} positions computed)"
            if c.generations:
                line += f"; {c.generations:,} generations of at most {c.generated // c.generations} tokens"
            print(line)
            for field in dataclasses.fields(total):
                setattr(total, field.name, getattr(total, field.name) + getattr(c, field.name))
    print(
        f"in all: {total.requests:,} requests, {total.tokens:,} tokens in packed rows, {total.padded:,} positions "
        f"computed, {total.generations:,} generations (probes apart)"
    )


def _models(args) -> tuple[list[str], list[str]]:
    """(run directories, model names): the --run-dir list, or every finished run of --sweep named by its size."""
    if not args.sweep:
        if args.out is None and not args.dry_run:
            raise ConfigError("meshlm eval --run-dir ... needs --out DIR for its results")
        return list(args.run_dir), [epath.Path(d).name for d in args.run_dir]
    observations = sorted(store.observations(args.sweep), key=lambda o: (o.N, o.D))
    if not observations:
        raise ConfigError(f"{args.sweep} has no finished run yet; run `meshlm sweep run SPEC --out {args.sweep}` first")
    run_dirs = [str(pathlib.Path(args.sweep) / runner.RUNS / o.run_id) for o in observations]
    names = [f"N={o.N:.3g} D={o.D:.3g}" + (" (hold-out)" if o.holdout else "") for o in observations]
    return run_dirs, names


def _progress_bar(enabled: bool):
    from tqdm import tqdm  # deferred: only a run with a bar needs it

    return tqdm(total=0, unit="row", dynamic_ncols=True, disable=not enabled, file=sys.stderr)
