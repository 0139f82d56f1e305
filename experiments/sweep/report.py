"""report.md and its PNG plots: IsoFLOP parabolas, N_opt and D_opt against C with bootstrap bands, loss curves,
predicted against actual loss, residuals; tables of the fitted parameters and of the hold-out predictions."""

import math
from pathlib import Path

import numpy as np

from meshlm.experiments.sweep import badput, identify, tune_report
from meshlm.experiments.sweep.fit import FitResult, law_tokens
from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.plots import pyplot, save
from meshlm.experiments.sweep.repetition import R_D_STAR
from meshlm.experiments.sweep.validation import Validation
from meshlm.training.atomic import write_atomic

EVAL = "eval"  # where `meshlm eval --sweep DIR` writes, inside the sweep directory
PLOTS = ("isoflop", "optimal", "loss_curves", "predicted_vs_actual", "residuals")


def _compute_range(observations: list[Observation]) -> np.ndarray:
    cs = [o.compute for o in observations]
    return np.logspace(math.log10(min(cs)) - 0.3, math.log10(max(cs)) + 0.3, 60)


def _band(result: FitResult, fn: str, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    curves = np.array([getattr(law, fn)(grid) for law in result.bootstrap_laws()])
    finite = curves[np.all(np.isfinite(curves), axis=1)]
    return np.percentile(finite, 10, axis=0), np.percentile(finite, 90, axis=0)


def _plot_isoflop(plt, result: FitResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    budgets = result.fits.isoflop.budgets
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(budgets), 1)))
    for budget, color in zip(budgets, colors):
        ax.scatter(budget.N, budget.loss, color=color, s=18, label=f"C={budget.C:.2g}")
        if budget.coeffs is not None:
            x = np.linspace(math.log(min(budget.N)), math.log(max(budget.N)), 50)
            ax.plot(np.exp(x), np.polyval(budget.coeffs, x), color=color, ls="--" if budget.flag else "-", lw=1)
        if budget.N_opt is not None:
            ax.scatter([budget.N_opt], [budget.L_opt], color=color, marker="*", s=90, edgecolors="black")
    ax.set_xscale("log")
    ax.set(xlabel="N (parameters)", ylabel="final loss", title="IsoFLOP parabolas (dashed: flagged and left out)")
    ax.legend(fontsize=7, ncol=2)
    save(fig, path)
    plt.close(fig)


def _plot_optimal(plt, result: FitResult, grid: np.ndarray, path: Path) -> None:
    law, iso, env = result.law, result.fits.isoflop, result.fits.envelope
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        (axes[0], "n_opt", "N_opt", law.a, iso.n_law, env.N_opt if env else None),
        (axes[1], "d_opt", "D_opt", law.b, iso.d_law, env.D_opt if env else None),
    )
    for ax, fn, name, exponent, power, envelope_points in panels:
        ax.plot(grid, getattr(law, fn)(grid), color="C0", label=f"Approach 3: {name} ~ C^{exponent:.3f}")
        if result.resamples:
            lo, hi = _band(result, fn, grid)
            ax.fill_between(grid, lo, hi, color="C0", alpha=0.2, label="80% bootstrap band")
        if iso.used:
            ax.scatter([b.C for b in iso.used], [getattr(b, name) for b in iso.used], color="C1", label="Approach 2")
        if power is not None:
            ax.plot(grid, power(grid), color="C1", ls="--", lw=1, label=f"Approach 2: C^{power.p:.3f}")
        if envelope_points is not None:
            ax.scatter(env.C, envelope_points, color="C2", s=8, label="Approach 1 envelope")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(xlabel="C (FLOPs)", ylabel=name)
        ax.legend(fontsize=7)
    save(fig, path)
    plt.close(fig)


def _plot_loss_curves(plt, result: FitResult, observations: list[Observation], grid: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for o in observations:
        if o.curve:
            t, v = zip(*o.curve)
            ax.plot(np.array(t) * o.flops_per_token, v, lw=0.8, alpha=0.7, color="C3" if o.holdout else "0.5")
    fitted = [o for o in observations if not o.holdout]
    held = [o for o in observations if o.holdout]
    ax.scatter([o.compute for o in fitted], [o.loss for o in fitted], s=12, color="black", label="final loss")
    if held:
        ax.scatter([o.compute for o in held], [o.loss for o in held], s=30, color="C3", label="hold-out")
    ax.plot(grid, result.law.l_opt(grid), color="C0", label="L_opt(C), Approach 3")
    if result.resamples:
        lo, hi = _band(result, "l_opt", grid)
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2)
    if result.fits.envelope is not None:
        ax.plot(result.fits.envelope.C, result.fits.envelope.loss, color="C2", lw=1.5, label="envelope")
    ax.set_xscale("log")
    ax.set(xlabel="C (FLOPs)", ylabel="validation loss", title="Loss against compute")
    ax.legend(fontsize=7)
    save(fig, path)
    plt.close(fig)


def _predictions(result: FitResult, runs: list[Observation]) -> list[float]:
    """Approach 3 at each run's N and the D the fit used (effective D for runs that repeated data)."""
    return [float(result.law.loss(o.N, d)) for o, d in zip(runs, law_tokens(runs, result.effective_data))]


def _plot_predicted(plt, result: FitResult, observations: list[Observation], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    fitted = [o for o in observations if not o.holdout]
    ax.scatter(_predictions(result, fitted), [o.loss for o in fitted], s=12, color="0.3", label="fitted")
    for h in result.holdout:
        ax.errorbar(
            h.predicted,
            h.actual,
            xerr=[[h.predicted - h.interval80[0]], [h.interval80[1] - h.predicted]],
            fmt="o",
            color="C3",
            capsize=3,
        )
    values = [o.loss for o in observations] + _predictions(result, observations)
    lims = (min(values) * 0.98, max(values) * 1.02)
    ax.plot(lims, lims, color="black", lw=0.8)
    ax.set(xlabel="predicted loss (Approach 3)", ylabel="actual loss", xlim=lims, ylim=lims)
    ax.set_title("Predicted against actual (red: hold-out, 80% interval)", fontsize=9)
    save(fig, path)
    plt.close(fig)


def _plot_residuals(plt, result: FitResult, observations: list[Observation], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for held, color, label in ((False, "0.3", "fitted"), (True, "C3", "hold-out")):
        runs = [o for o in observations if o.holdout == held]
        if runs:
            rel = [(o.loss - p) / o.loss * 100 for o, p in zip(runs, _predictions(result, runs))]
            ax.scatter([o.compute for o in runs], rel, s=14, color=color, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="C (FLOPs)", ylabel="(actual - predicted) / actual, %", title="Residuals of Approach 3")
    ax.legend(fontsize=7)
    save(fig, path)
    plt.close(fig)


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _identified_cell(result: FitResult, name: str) -> str:
    if name in result.not_identified:
        return f"**no**: {result.not_identified[name]}"
    return "yes" if result.identified[name] else "n/a"


def _tables(result: FitResult) -> list[str]:
    lines = [
        "| quantity | value | 80% interval | 95% interval | identified |",
        "|---|---|---|---|---|",
    ]
    for name, value in result.values.items():
        ci = {k: _fmt(v) for k, v in result.intervals[name].items()}
        lines.append(
            f"| {name} | {_fmt(value)} | {ci['lo80']} – {ci['hi80']} | {ci['lo95']} – {ci['hi95']} | "
            f"{_identified_cell(result, name)} |"
        )
    lines += [
        "",
        "IsoFLOP budgets (Approach 2):",
        "",
        "| C | sizes | N_opt | L_opt | left out because |",
        "|---|---|---|---|---|",
    ]
    for b in result.fits.isoflop.budgets:
        lines.append(f"| {b.C:.3g} | {b.sizes} | {_fmt(b.N_opt)} | {_fmt(b.L_opt)} | {b.flag or '–'} |")
    if result.holdout:
        lines += [
            "",
            "Hold-out runs (never fitted):",
            "",
            "| run | N | D | C | predicted | 80% interval | actual | relative error | inside |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for h in result.holdout:
            lines.append(
                f"| {h.run_id} | {h.N:.3g} | {h.D:.3g} | {h.C:.3g} | {h.predicted:.4f} | "
                f"{h.interval80[0]:.4f} – {h.interval80[1]:.4f} | {h.actual:.4f} | {h.relative_error:+.2%} | "
                f"{'yes' if h.inside80 else 'no'} |"
            )
    return lines


def _validation_section(checked: Validation) -> list[str]:
    """The leave-one-budget-out refit's predictions, and how often an 80 % interval held the actual loss."""
    lines = ["", "Leave-one-budget-out (the law refitted without the largest fitted budget predicts its runs):", ""]
    if checked.left_out_budget is None:
        lines.append(f"Not run: {checked.skipped}.")
    else:
        lines += [
            "| run | N | D | predicted | 80% interval | actual | relative error | inside |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in checked.left_out:
            lines.append(
                f"| {p.run_id} | {p.N:.3g} | {p.D:.3g} | {p.predicted:.4f} | {p.interval80[0]:.4f} – "
                f"{p.interval80[1]:.4f} | {p.actual:.4f} | {p.relative_error:+.2%} | {'yes' if p.inside80 else 'no'} |"
            )
    n = len(checked.predictions)
    if n:
        inside = sum(p.inside80 for p in checked.predictions)
        lines += [
            "",
            f"**Coverage: {inside} of {n} predicted runs ({checked.coverage80:.0%}) fall inside their 80 % interval** "
            "(hold-outs and left-out runs together; calibrated intervals hold about 80 %; far fewer means they are "
            "too narrow, and with few runs the count itself is noisy).",
        ]
    return lines


# What a free quantity leaves unknown; identify.py says which are free. Keyed by name, or by prefix for the others.
MEANING = {
    "E": "the loss floor. L_opt(C) and the hold-out predictions rest on it: beyond the fitted compute they can miss "
    "either way, and an E at zero makes them fall as a pure power law where the true loss levels off (too low). "
    "Runs reaching lower losses pin it",
    "A": "the size term A/N^alpha. N_opt, D_opt, tokens per parameter and G rest on it, so the compute-optimal "
    "allocation is not known from these runs. Sizes spread further at each budget pin it",
    "alpha": "how fast the loss falls with N. a, b, N_opt, D_opt and tokens per parameter rest on it: the allocation "
    "is not known from these runs, and neither is the loss of a larger model. Sizes spread further pin it",
    "B": "the data term B/D^beta. N_opt, D_opt, tokens per parameter and G rest on it. Runs spread further in "
    "tokens per parameter pin it",
    "beta": "how fast the loss falls with D. a, b, N_opt, D_opt and tokens per parameter rest on it. Runs spread "
    "further in tokens per parameter pin it",
    "a": "the exponent of N_opt ~ C^a: how the optimal size grows with compute",
    "b": "the exponent of D_opt ~ C^b: how the optimal number of tokens grows with compute",
    "G": "the scale of the compute-optimal allocation",
    "N_opt": "the compute-optimal size at that compute",
    "D_opt": "the compute-optimal number of tokens at that compute",
    "tokens_per_param": "the compute-optimal tokens per parameter at that compute",
    "L_opt": "the lowest loss reachable at that compute",
    "approach2": "an exponent of Approach 2's power law through the IsoFLOP minima, which the minima do not fix "
    "(read the IsoFLOP table; grids that bracket each minimum, or more budgets, fix it)",
    "approach1": "an exponent of Approach 1's power law through the loss-curve envelope, which the envelope does "
    "not fix",
    "kaplan": "part of a one-variable law on the sweep's frontier, whose extrapolation in N or D is not determined",
}


def _meaning(name: str) -> str:
    return MEANING[name.split("@")[0].split(".")[0]]


def _status(result: FitResult) -> str:
    """How the fit went, which converged alone never says."""
    p = result.fits.parametric
    stopped = "converged" if p.converged else "did NOT converge"
    bounds_only = "" if result.resamples else " (checked against the bounds only: no resamples, so no intervals)"
    own = [name for name, u in result.not_identified.items() if u.reason]
    if not own:
        return f"Approach 3 {stopped} and every fitted quantity is identified{bounds_only}"
    return f"Approach 3 {stopped}, but not every quantity is identified: {', '.join(own)} (below){bounds_only}"


def _identification_section(result: FitResult) -> list[str]:
    """Which quantities the runs leave free, why, and what that leaves unknown."""
    lines = [
        "## What the runs do not pin down",
        "",
        "A quantity is *identified* when its fit did not end at or within 1 % of one of the optimizer's bounds and "
        "its 80 % bootstrap interval spans at most a factor of 10, and nothing it is computed from is unidentified "
        "(docs/scaling.md, Identification). A converged fit can still leave a parameter free: many values then fit "
        "the runs about as well as the one shown.",
        "",
    ]
    own = {name: u for name, u in result.not_identified.items() if u.reason}
    if not own:
        return [*lines, "Every fitted quantity is identified.", ""]
    for name, u in own.items():
        also = f"; it also rests on {', '.join(u.rests_on)}" if u.rests_on else ""
        lines.append(f"- **{name}** is not identified: {u.reason}{also}. It is {_meaning(name)}.")
    derived = [name for name, u in result.not_identified.items() if not u.reason]
    if derived:
        lines += ["", f"Resting on them, so not identified either: {', '.join(derived)}."]
    if set(own) & set(identify.RESTS_ON["L_opt"]) and result.holdout:
        lines += ["", "The hold-out predictions rest on all five parameters of Approach 3."]
    return [*lines, ""]


def _repeated_data_section(result: FitResult) -> list[str]:
    """Which runs read their data more than once, and what the fit made of it."""
    if not result.epochs:
        return []
    epochs = sorted(result.epochs.values())
    how = (
        "Approach 3 and L(D) take each at Muennighoff et al.'s effective D, D' = U + U R* (1 - exp(-R / R*)) with "
        f"R = D / U - 1 and R* = {R_D_STAR:.5g} (docs/scaling.md, Repeated data); Approaches 1 and 2 work in "
        "compute and do not change"
        if result.effective_data
        else "the fit took them at the tokens they read (`--raw-tokens`): repeats count as fresh data, which puts "
        "those runs above the surface fresh data would give"
    )
    return [
        "## Repeated data",
        "",
        f"{len(epochs)} run(s) read their training split more than once ({epochs[0]:.2f} to {epochs[-1]:.2f} epochs); "
        f"{how}. The laws' D_opt and tokens per parameter are for fresh data.",
        "",
    ]


def _icl_section(eval_dir: Path) -> list[str]:
    """The few-shot evaluation of the swept models, when there is one: `meshlm eval --sweep DIR` writes DIR/eval, whose
    results.md is embedded as it is (the report reads the evaluator's file, not its code)."""
    results = eval_dir / "results.md"
    if not results.is_file():
        return []
    table = results.read_text()
    curves = sorted(p.name for p in eval_dir.glob("icl_*.png"))
    spreads = sorted(p.name for p in eval_dir.glob("sensitivity_*.png"))
    lines = [
        "## In-context learning of the swept models",
        "",
        f"From `meshlm eval --sweep` ({EVAL}/results.md): accuracy against K per task and the ICL score (Olsson et "
        "al.: loss late in the context minus loss early; more negative = more in-context learning) against size. "
        "Each score names its token indices: icl_score@500-50 is Olsson's; a model whose context ends before token "
        "500 is scored at its last one (e.g. @256-50), another measure, which a note under the table points out.",
        "",
        table.replace("# meshlm eval\n", "", 1).replace("\n## ", "\n### "),
        *(f"![{name}]({EVAL}/{name})\n" for name in curves),
    ]
    if spreads:
        lines += [
            "Does sensitivity to meaningless choices shrink with scale? The standard deviation of each task's score at "
            "its largest K over shot selections, shot orders and prompt formats (whichever the evaluation varied), "
            "against size:",
            "",
            *(f"![{name}]({EVAL}/{name})\n" for name in spreads),
        ]
    return lines


def write_report(
    out_dir: str | Path,
    observations: list[Observation],
    fit_result: FitResult,
    sweep_dir: str | Path | None = None,
    validation: Validation | None = None,
) -> Path:
    """Write report.md and its PNGs into out_dir; return the report's path. sweep_dir: where the sweep's tune.json
    is, when it is not out_dir; validation: the leave-one-budget-out refit and the coverage, when it was run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    grid = _compute_range(observations)
    _plot_isoflop(plt, fit_result, out_dir / "isoflop.png")
    _plot_optimal(plt, fit_result, grid, out_dir / "optimal.png")
    _plot_loss_curves(plt, fit_result, observations, grid, out_dir / "loss_curves.png")
    _plot_predicted(plt, fit_result, observations, out_dir / "predicted_vs_actual.png")
    _plot_residuals(plt, fit_result, observations, out_dir / "residuals.png")
    law, p = fit_result.law, fit_result.fits.parametric
    lines = [
        "# Scaling-law fit",
        "",
        f"{fit_result.fitted_runs} runs fitted, {len(fit_result.holdout)} held out; {fit_result.resamples} bootstrap "
        f"resamples (seed {fit_result.seed}); {_status(fit_result)} (summed Huber objective {p.objective:.6g}, "
        f"{p.starts} L-BFGS starts).",
        "",
        f"**L(N, D) = {law.E:.4g} + {law.A:.4g} / N^{law.alpha:.4f} + {law.B:.4g} / D^{law.beta:.4f}**; "
        f"N_opt ~ C^{law.a:.3f}, D_opt ~ C^{law.b:.3f}.",
        "",
        *_identification_section(fit_result),
        *_tables(fit_result),
        *(_validation_section(validation) if validation else []),
        *_repeated_data_section(fit_result),
        "",
        *(f"![{name}]({name}.png)\n" for name in PLOTS),
        *tune_report.section(Path(sweep_dir or out_dir), out_dir, plt),
        *_icl_section(out_dir / EVAL),
        *badput.section(out_dir / "runs"),
    ]
    path = out_dir / "report.md"
    write_atomic(path, "\n".join(lines))
    return path
