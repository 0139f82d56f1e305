"""`meshlm eval`: trained runs x tasks x K x shot seeds -> results.json, results.md, ICL-curve PNGs."""

import dataclasses
import pathlib
import sys

import jax
from flax import nnx

from meshlm.experiments.evaluation import harness, report
from meshlm.model.errors import ConfigError

HELDOUT_CHARS = 1_000_000  # validation text read for the probes (they use at most ~65k tokens)


@dataclasses.dataclass
class LoadedRun:
    name: str
    run_dir: str
    model: object
    tokenizer: object
    config: object


def load_run(run_dir: str) -> LoadedRun:
    from meshlm.training import run_dir as run_dir_lib

    path = pathlib.Path(run_dir)
    if not (path / run_dir_lib.CONFIG).is_file():
        raise ConfigError(f"{run_dir} holds no run (no {run_dir_lib.CONFIG}); pass a directory written by meshlm train")
    run = run_dir_lib.load_run(path)
    return LoadedRun(path.resolve().name, str(path), run.model, run.tokenizer, run.config)


def heldout_texts(config) -> list[str]:
    """The run's validation documents, up to HELDOUT_CHARS characters: text the model was not trained on."""
    from meshlm.training import sources

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


def run(args) -> None:
    settings = harness.EvalSettings(
        shots=parse_shots(args.shots),
        seeds=args.seeds,
        batch_size=args.batch_size,
        limit=args.limit,
        task_seed=args.task_seed,
    ).validate()
    tasks = harness.resolve_tasks(args.tasks, settings.task_seed)
    if not tasks:
        raise ConfigError("--tasks names no task; e.g. --tasks arithmetic_2da,label_mapping,icl_score")
    out_dir = pathlib.Path(args.out)
    bar = _progress_bar(not args.no_progress)
    models = []
    for run_dir in args.run_dir:
        loaded = load_run(run_dir)
        bar.total = (bar.total or 0) + sum(harness.estimated_rows(t, settings, loaded.model.cfg.n_ctx) for t in tasks)
        bar.set_description(loaded.name)
        needs_text = any(t in ("icl_score", "perplexity", "induction") for t in tasks if isinstance(t, str))
        results = harness.evaluate(
            loaded.model,
            loaded.tokenizer,
            tasks,
            shots=settings.shots,
            seeds=settings.seeds,
            batch_size=settings.batch_size,
            limit=settings.limit,
            heldout=heldout_texts(loaded.config) if needs_text else (),
            progress=bar.update,
            task_seed=settings.task_seed,
        )
        params = sum(x.size for x in jax.tree.leaves(nnx.state(loaded.model, nnx.Param)))
        models.append({"name": loaded.name, "run_dir": loaded.run_dir, "params": int(params), "results": results})
    bar.close()
    report.write_json(
        out_dir / "results.json", {"settings": dataclasses.asdict(settings), "tasks": args.tasks, "models": models}
    )
    report.write_atomic(out_dir / "results.md", report.markdown(models, sorted(set(settings.shots))).encode())
    pngs = report.plot_icl_curves(models, out_dir) + report.plot_icl_scores(models, out_dir)
    print(report.markdown(models, sorted(set(settings.shots))))
    print(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'} and {len(pngs)} PNG(s)", file=sys.stderr)


def _progress_bar(enabled: bool):
    from tqdm import tqdm

    return tqdm(total=0, unit="row", dynamic_ncols=True, disable=not enabled, file=sys.stderr)
