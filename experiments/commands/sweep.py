"""`meshlm sweep run SPEC --out DIR` runs, resumes or plans a scaling-law sweep; `meshlm sweep status DIR` shows
where it stands; `meshlm sweep fit` fits laws to it."""

import contextlib
import dataclasses
import json
import math
import sys
from pathlib import Path

from meshlm.experiments.commands import _flags
from meshlm.experiments.sweep import identify, parametric, validation
from meshlm.experiments.sweep.fit import DEFAULT_RESAMPLES, FitResult, fit
from meshlm.model.errors import ConfigError
from meshlm.training.atomic import write_atomic
from meshlm.training.train_config import TrackerConfig

DESCRIPTION = (
    "Scaling-law sweeps: run a spec of budgets x shapes x seeds (run), see its runs by state (status), fit scaling "
    "laws to it (fit)."
)
MAIN = ("E", "A", "B", "alpha", "beta", "a", "b")


def add_arguments(p) -> None:
    actions = p.add_subparsers(dest="sweep", metavar="ACTION", required=True)
    _run_arguments(
        actions.add_parser(
            "run",
            help="run, resume or --dry-run a sweep spec",
            description="Run every run of a sweep spec into DIR: an ordinary meshlm train run directory per run "
            "under DIR/runs/ID, results in DIR/results.sqlite. Re-running skips finished runs and resumes "
            "interrupted ones; two runners on one DIR never run the same run. A killed or crashed run is retried "
            "from its checkpoint (the spec's retries, with backoff); a config error, a non-finite loss or running out "
            "of memory fails the run at once. A spec with a tune: section runs its tune stage first and takes the "
            "main runs' peak LR from its fit (DIR/tune.json).",
        )
    )
    _status_arguments(
        actions.add_parser(
            "status",
            help="list a sweep directory's runs by state, with progress and time left",
            description="List the runs of DIR by state (done, running, pending, retrying, failed with its reason), "
            "each with the steps done, its tries and the time left at the measured throughput.",
        )
    )
    _fit_arguments(
        actions.add_parser(
            "fit",
            help="fit scaling laws to a sweep directory or a CSV table",
            description="Fit L(N, D) = E + A/N^alpha + B/D^beta (Approach 3), IsoFLOP parabolas (Approach 2), the "
            "loss-curve envelope (Approach 1) and Kaplan-style L(N), L(D), with bootstrap intervals; predict "
            "hold-out runs; print name=value lines, write fit.json and report.md. See docs/scaling.md.",
        )
    )


def run(args) -> None:
    {"run": _run, "status": _status, "fit": _fit}[args.sweep](args)


def _run_arguments(p) -> None:
    p.add_argument("spec", metavar="SPEC", help="a sweep spec (YAML), e.g. experiments/sweeps/demo.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep directory: results.sqlite and runs/ID/")
    p.add_argument("--dry-run", action="store_true", help="print the plan (FLOPs, epochs, estimated time); run nothing")
    p.add_argument(
        "--json",
        action="store_true",
        help="with --dry-run: the plan as one JSON object, every run (id, kind, stage, shape, N, D, C, budget, "
        "holdout, parent, branch_step, steps, batch_size, peak_lr), total_flops, the FLOPs the sweep trains (tune "
        "stage included), and flops, the same split into tune, fitted and holdout; under a tune stage, main_lr says "
        "where the main runs' peak LR comes from",
    )
    p.add_argument(
        "--launcher",
        choices=("local", "ray"),
        help="local: one run at a time in this process; ray: one task per run (default: the spec's launcher.kind)",
    )
    p.add_argument("--address", metavar="ADDR", help="ray: cluster address ('auto' joins a running one)")
    p.add_argument("--cpus-per-run", type=float, metavar="N", help="ray: CPUs each run reserves")
    p.add_argument("--gpus-per-run", type=float, metavar="N", help="ray: GPUs each run reserves")
    p.add_argument(
        "--hosts-per-run",
        type=int,
        metavar="N",
        help="ray: hosts each run spans, one process per host of one slice (then --cpus/gpus-per-run are per host)",
    )
    p.add_argument(
        "--slice-head", metavar="RESOURCE", help="ray: the resource a slice's first host holds, e.g. TPU-v4-16-head"
    )
    p.add_argument("--tpus-per-host", type=float, metavar="N", help="ray: TPU chips each host's process reserves")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per finished run)")
    _flags.add_set(
        p,
        help="override one field of the spec, the value read as YAML (repeatable), e.g. --set rules.schedule=cosine "
        "--set holdout=[]; every run's config is the spec's `overrides:` list",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run the runs recorded failed again, with fresh retries (once their cause is fixed)",
    )
    _flags.add_tracker(
        p,
        help="where every run logs besides metrics.jsonl: tensorboard or wandb (W&B groups the runs under the sweep's "
        "name); default: as the spec says",
    )


def _run(args) -> None:
    # Deferred: the runner pulls in JAX and the trainer, which `meshlm sweep fit --table` never needs.
    from meshlm.experiments.sweep import launchers, runner
    from meshlm.experiments.sweep import plan as plan_lib
    from meshlm.experiments.sweep import spec as spec_lib
    from meshlm.experiments.sweep.store import FILE, Store

    spec = spec_lib.load(args.spec, args.set)
    out = Path(args.out)
    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run: meshlm sweep run SPEC --out DIR --dry-run --json")
    if args.dry_run:
        store = Store(out) if (out / FILE).exists() else None
        tune_runs, runs, main_lr = runner.dry_run_plan(spec, store)
        # Preparing the data may print (TFDS does): with --json, stdout holds the JSON alone.
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            stats = runner.data_stats(spec, out, runs)
        if args.json:
            plan = plan_lib.as_json(tune_runs + runs)
            print(json.dumps({**plan, "main_lr": main_lr} if tune_runs else plan, indent=1))
        else:
            runner.print_plan(spec, runs, stats, store, tune_runs=tune_runs, main_lr=main_lr)
        runner.check_epochs(spec, tune_runs + runs, stats)
        return
    settings = dataclasses.asdict(spec.launcher)
    spec_kind = settings.pop("kind")
    settings.update({k: getattr(args, k) for k in settings if getattr(args, k, None) is not None})  # flags over spec
    launcher = launchers.make(args.launcher or spec_kind, **settings)
    tracker = TrackerConfig(kind=args.tracker) if args.tracker else None
    outcome = runner.run_sweep(
        spec,
        out,
        launcher,
        progress=not args.no_progress,
        compile_cache=True,
        tracker=tracker,
        retry_failed=args.retry_failed,
    )
    if outcome.failed or outcome.failed_before:
        raise ConfigError(
            f"{outcome.failed + outcome.failed_before} runs failed (reasons: meshlm sweep status {out}; logs in "
            f"{out / runner.RUNS}/ID/sweep.log); fix the cause and re-run with --retry-failed"
        )


def _status_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR", help="a sweep directory written by meshlm sweep run")
    p.add_argument("--json", action="store_true", help="one JSON object: counts, time left and every run")


def _status(args) -> None:
    from meshlm.experiments.sweep import status  # deferred: it loads JAX (run configs), which sweep fit never needs

    statuses = status.read(args.dir)
    if args.json:
        runs = [dataclasses.asdict(s) for s in statuses]
        print(json.dumps({**status.summary(statuses), "runs": runs}, indent=1))
    else:
        print(status.text(statuses))


def _fit_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("dir", nargs="?", metavar="DIR", help="a sweep directory written by meshlm sweep run")
    src.add_argument(
        "--table",
        metavar="FILE.csv",
        help="a CSV table with columns N,D,loss (C, budget, holdout, unique_tokens optional)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where fit.json and the report go (default: DIR, or the table's folder)"
    )
    p.add_argument(
        "--resamples", type=int, default=DEFAULT_RESAMPLES, help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--starts",
        type=int,
        default=parametric.DEFAULT_STARTS,
        help=f"L-BFGS starts: the best-scoring points of the 4500-point grid (default {parametric.DEFAULT_STARTS}; "
        "0 = all 4500)",
    )
    p.add_argument("--no-report", action="store_true", help="write fit.json only, no report.md and plots")
    p.add_argument(
        "--raw-tokens",
        action="store_true",
        help="fit runs that repeated data at the tokens they read, not at Muennighoff et al.'s effective D",
    )
    p.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the leave-one-budget-out refit (which predicts the largest fitted budget from the others)",
    )
    _flags.add_tracker(
        p,
        help="wandb: log the fitted values and the report's plots to a W&B summary run in the sweep's group; "
        "tensorboard: do not; default: wandb when the sweep's runs logged to W&B",
    )


def _lines(result: FitResult) -> list[str]:
    names = list(MAIN) + [k for k in result.values if k not in MAIN]
    out = []
    for name in names:
        value = result.values[name]
        if math.isnan(value):
            continue
        out.append(f"{name}={value:.6g}")
        ci = result.intervals[name]
        if not math.isnan(ci["lo80"]):
            out.append(f"{name}.lo80={ci['lo80']:.6g}")
            out.append(f"{name}.hi80={ci['hi80']:.6g}")
        if name in result.not_identified:
            out.append(f"{name}.identified=false")
    if result.epochs:
        out += [
            f"repeated_data.runs={len(result.epochs)}",
            f"repeated_data.max_epochs={max(result.epochs.values()):.3g}",
            f"repeated_data.effective_data={str(result.effective_data).lower()}",
        ]
    for h in result.holdout:
        key = f"holdout.{h.run_id}"
        out += [
            f"{key}.actual={h.actual:.6g}",
            f"{key}.predicted={h.predicted:.6g}",
            f"{key}.lo80={h.interval80[0]:.6g}",
            f"{key}.hi80={h.interval80[1]:.6g}",
            f"{key}.relative_error={h.relative_error:.4g}",
        ]
    return out


def _validation_lines(checked: validation.Validation) -> list[str]:
    if checked.left_out_budget is None:
        return [f"validation.skipped={checked.skipped}"]
    out = [f"validation.left_out_budget={checked.left_out_budget:.6g}"]
    for p in checked.left_out:
        out.append(f"validation.{p.run_id}.relative_error={p.relative_error:.4g}")
        out.append(f"validation.{p.run_id}.inside80={str(p.inside80).lower()}")
    return out + [f"validation.coverage80={checked.coverage80:.4g} ({len(checked.predictions)} predicted runs)"]


def _fit(args) -> None:
    if args.resamples < 0:
        raise ConfigError(f"--resamples {args.resamples} must be 0 or more (200 or more for usable intervals)")
    if args.starts < 0:
        raise ConfigError(f"--starts {args.starts} must be 0 (all 4500) or more")
    if args.table:
        from meshlm.experiments.sweep.table import read_table

        observations = read_table(args.table)
        out_dir = Path(args.out) if args.out else Path(args.table).resolve().parent
    else:
        if not Path(args.dir).is_dir():
            raise ConfigError(f"sweep directory {args.dir} does not exist; pass the --out DIR of meshlm sweep run")
        from meshlm.experiments.sweep import (
            store,  # deferred: it loads JAX (run configs), which a --table fit never needs
        )

        observations = store.observations(args.dir)
        out_dir = Path(args.out) if args.out else Path(args.dir)
    fit_args = {
        "resamples": args.resamples,
        "seed": args.seed,
        "starts": args.starts or None,
        "effective_data": not args.raw_tokens,
    }
    result = fit(observations, **fit_args)
    checked = None if args.no_validate else validation.validate(observations, result, **fit_args)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.to_json() | ({"validation": checked.to_json()} if checked else {})
    write_atomic(out_dir / "fit.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    print("\n".join(_lines(result) + (_validation_lines(checked) if checked else [])))
    if not result.fits.parametric.converged:
        print("warning: no L-BFGS start converged; the best result is shown (try --starts 0)")
    if unidentified := identify.summary(result.not_identified):
        print(f"warning: {unidentified}")
    print(f"wrote {out_dir / 'fit.json'}")
    if not args.no_report:
        from meshlm.experiments.sweep.report import write_report

        print(f"wrote {write_report(out_dir, observations, result, sweep_dir=args.dir, validation=checked)}")
    _track_fit(args, out_dir, observations, result)


def _track_fit(args, out_dir: Path, observations, result: FitResult) -> None:
    """The fit in W&B when asked, or unasked when the sweep's runs logged there."""
    if args.tracker == "tensorboard" or not (args.dir or args.tracker):
        return
    from meshlm.experiments.sweep import tracking  # deferred: W&B and JAX, which a plain --table fit never needs

    tracker = tracking.runs_tracker(args.dir, observations) if args.dir else None
    if tracker is None and args.tracker == "wandb":
        tracker = TrackerConfig(kind="wandb")
    if tracker is not None:
        settings = {"resamples": args.resamples, "seed": args.seed, "starts": args.starts}
        tracking.log_fit(out_dir, result, tracker, settings, plots=not args.no_report)
