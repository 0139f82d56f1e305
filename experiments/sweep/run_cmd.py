"""`meshlm sweep run SPEC --out DIR`: run (or resume, or --dry-run plan) a scaling-law sweep."""

import argparse
import pathlib

from meshlm.model.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="a sweep spec (YAML), e.g. experiments/sweeps/demo.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep directory: results.sqlite and runs/ID/")
    p.add_argument("--dry-run", action="store_true", help="print the plan (FLOPs, epochs, estimated time); run nothing")
    p.add_argument(
        "--launcher",
        choices=("local", "ray"),
        help="local: one run at a time in this process; ray: one task per run (default: the spec's launcher.kind)",
    )
    p.add_argument("--address", metavar="ADDR", help="ray: cluster address ('auto' joins a running one)")
    p.add_argument("--cpus-per-run", type=float, metavar="N", help="ray: CPUs each run reserves")
    p.add_argument("--gpus-per-run", type=float, metavar="N", help="ray: GPUs each run reserves")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per finished run)")


def run(args) -> None:
    # Deferred: the runner pulls in JAX and the trainer, which `meshlm --help` should not wait for.
    from meshlm.experiments.sweep import launchers, runner
    from meshlm.experiments.sweep import plan as plan_lib
    from meshlm.experiments.sweep import spec as spec_lib
    from meshlm.experiments.sweep.store import FILE, Store

    spec = spec_lib.load(args.spec)
    out = pathlib.Path(args.out)
    if args.dry_run:
        runs = plan_lib.resolve(spec)
        stats = runner.data_stats(spec, out, runs)
        store = Store(out) if (out / FILE).exists() else None
        runner.print_plan(spec, runs, stats, store)
        runner.check_epochs(spec, runs, stats)
        return
    defaults = spec.launcher
    launcher = launchers.make(
        args.launcher or defaults.kind,
        address=args.address if args.address is not None else defaults.address,
        cpus_per_run=args.cpus_per_run if args.cpus_per_run is not None else defaults.cpus_per_run,
        gpus_per_run=args.gpus_per_run if args.gpus_per_run is not None else defaults.gpus_per_run,
    )
    outcome = runner.run_sweep(spec, out, launcher, progress=not args.no_progress, compile_cache=True)
    if outcome.failed:
        raise ConfigError(
            f"{outcome.failed} runs failed (errors in the failures table of {out / FILE}, logs in "
            f"{out / runner.RUNS}/ID/sweep.log); re-run the same command to retry them"
        )
