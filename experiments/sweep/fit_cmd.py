"""`meshlm sweep fit`: fit scaling laws to a sweep directory or a CSV table; print them, write fit.json and a report."""

import json
import math
from pathlib import Path

from meshlm.experiments.sweep import parametric
from meshlm.experiments.sweep.fit import DEFAULT_RESAMPLES, FitResult, fit
from meshlm.experiments.sweep.observations import Observation
from meshlm.model.errors import ConfigError
from meshlm.training.atomic import write_atomic

MAIN = ("E", "A", "B", "alpha", "beta", "a", "b")


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("dir", nargs="?", metavar="DIR", help="a sweep directory written by meshlm sweep run")
    src.add_argument(
        "--table", metavar="FILE.csv", help="a CSV table with columns N,D,loss (C, budget, holdout optional)"
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


def load_observations(directory: str | Path) -> list[Observation]:
    """The runs of a sweep directory, from its results store."""
    from meshlm.experiments.sweep import store  # deferred: it loads JAX (run configs), which a --table fit never needs

    return store.observations(directory)


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


def run(args) -> None:
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
        observations = load_observations(args.dir)
        out_dir = Path(args.out) if args.out else Path(args.dir)
    result = fit(observations, resamples=args.resamples, seed=args.seed, starts=args.starts or None)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "fit.json", json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n")
    print("\n".join(_lines(result)))
    if not result.fits.parametric.converged:
        print("warning: no L-BFGS start converged; the best result is shown (try --starts 0)")
    print(f"wrote {out_dir / 'fit.json'}")
    if not args.no_report:
        from meshlm.experiments.sweep.report import write_report

        print(f"wrote {write_report(out_dir, observations, result)}")
