"""The report's Tuning section, read from the tune stage's DIR/tune.json (tune.py): the U-curves with their parabolas
and minima, LR*(N) (and B*(C)) with the power laws the main runs used, and a table of every curve."""

import json
import math
from pathlib import Path

import numpy as np

from meshlm.experiments.sweep.plots import save

FILE = "tune.json"  # in the sweep directory; tune.py writes it (this module reads the file, never imports the fitter)
PLOTS = ("tune_curves", "tune_rule")


def section(sweep_dir: Path, out_dir: Path, plt) -> list[str]:
    """The section's lines, its plots drawn into out_dir; [] when the sweep had no tune stage."""
    path = Path(sweep_dir) / FILE
    if not path.is_file():
        return []
    tune = json.loads(path.read_text())
    _plot_curves(plt, tune, out_dir / "tune_curves.png")
    _plot_rule(plt, tune, out_dir / "tune_rule.png")
    return [
        "## Tuning",
        "",
        f"The tune stage ({FILE}): per size, short runs over a grid of peak LRs; a parabola in ln LR through their "
        "final validation losses gives the size's LR* where the grid brackets the minimum, and a power law through "
        "those gives the peak LR of every main run (docs/scaling.md, Per-size tuning).",
        "",
        *_rules(tune),
        "",
        *_table(tune),
        "",
        *(f"![{name}]({name}.png)\n" for name in PLOTS),
    ]


def _rules(tune: dict) -> list[str]:
    prior, lr, batch = tune["prior"], tune["lr_rule"], tune["batch_rule"]
    shapes = tune["shapes"]
    good = sum(s["identified"] for s in shapes)
    lines = [
        f"- rules.lr, the prior (tune.lr_grid multiplies it): {prior['peak']:.3g} x (N / {prior['at_params']:.3g})"
        f"^{prior['exponent']:.3f}"
    ]
    if lr is None:
        lines.append("- **no size identified**: the main runs were not planned; move or widen the grid")
    else:
        how = "fitted" if lr["exponent"] == "fitted" else "the exponent is rules.lr's: one size identified"
        lines.append(f"- **LR*(N) = {lr['k']:.4g} N^{lr['p']:.4f}** ({how}; {good} of {len(shapes)} sizes)")
    if batch:
        lines.append(f"- **B*(C) = {batch['k']:.4g} C^{batch['p']:.4f}** tokens per step")
    for s in shapes:
        if not s["identified"]:
            lines.append(f"- {s['d_model']}x{s['n_layers']} (N={s['N']:.3g}) is not identified: {s['reason']}")
    return lines


def _table(tune: dict) -> list[str]:
    lines = [
        "| size | N | C | tokens per step | LRs | failed | LR* | loss at LR* | identified |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in tune["shapes"]:
        for c in s["curves"]:
            lrs = f"{min(c['lr']):.3g} – {max(c['lr']):.3g} ({len(c['lr'])})" if c["lr"] else "–"
            failed = ", ".join(f"{lr:.3g}" for lr in c["failed"]) or "–"
            best = (f"{c['lr_opt']:.4g}", f"{c['loss_opt']:.4f}") if c["lr_opt"] else ("–", "–")
            identified = f"**no**: {c['flag']}" if c["flag"] else "yes"
            lines.append(
                f"| {s['d_model']}x{s['n_layers']} | {s['N']:.3g} | {s['C']:.3g} | {c['tokens_per_step']} | {lrs} | "
                f"{failed} | {best[0]} | {best[1]} | {identified} |"
            )
        if s["batch_fit"] is not None:
            b = f"{s['tokens_per_step_opt']:.4g}" if s["tokens_per_step_opt"] else "–"
            lr = f"{s['lr_opt']:.4g}" if s["lr_opt"] else "–"
            lines.append(f"| {s['d_model']}x{s['n_layers']} at B* | | | {b} | | | {lr} | | {s['reason'] or 'yes'} |")
    return lines


def _plot_curves(plt, tune: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(tune["shapes"]), 1)))
    for s, color in zip(tune["shapes"], colors):
        for c in s["curves"]:
            label = f"{s['d_model']}x{s['n_layers']} N={s['N']:.2g}"
            if s["batch_fit"] is not None:
                label += f" B={c['tokens_per_step']}"
            if c["flag"]:
                label += " (not identified)"
            ax.scatter(c["lr"], c["loss"], color=color, s=18, label=label)
            if c["coeffs"] is not None:
                x = np.linspace(math.log(min(c["lr"])), math.log(max(c["lr"])), 50)
                ax.plot(np.exp(x), np.polyval(c["coeffs"], x), color=color, ls="--" if c["flag"] else "-", lw=1)
            if c["lr_opt"]:
                ax.scatter([c["lr_opt"]], [c["loss_opt"]], color=color, marker="*", s=90, edgecolors="black")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # a grid within a decade labels every minor tick otherwise
    ax.set(xlabel="peak LR", ylabel="final validation loss", title="Tune stage (dashed: minimum not bracketed)")
    ax.legend(fontsize=7, ncol=2)
    save(fig, path)
    plt.close(fig)


def _plot_rule(plt, tune: dict, path: Path) -> None:
    batch = tune["batch_rule"]
    fig, axes = plt.subplots(1, 2 if batch else 1, figsize=(11 if batch else 6, 4.2), squeeze=False)
    good = [s for s in tune["shapes"] if s["identified"]]
    ns = [s["N"] for s in tune["shapes"]]
    grid = np.logspace(math.log10(min(ns)) - 0.3, math.log10(max(ns)) + 0.3, 40)
    ax = axes[0][0]
    ax.scatter([s["N"] for s in good], [s["lr_opt"] for s in good], color="C0", label="LR* per size")
    if tune["lr_rule"]:
        k, p = tune["lr_rule"]["k"], tune["lr_rule"]["p"]
        ax.plot(grid, k * grid**p, color="C0", label=f"LR*(N) = {k:.3g} N^{p:.3f}")
    prior = tune["prior"]
    ax.plot(
        grid, prior["peak"] * (grid / prior["at_params"]) ** prior["exponent"], color="0.5", ls="--", label="rules.lr"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="N (FLOP-equivalent parameters)", ylabel="peak LR")
    ax.legend(fontsize=7)
    if batch:
        ax = axes[0][1]
        cs = np.array([s["C"] for s in tune["shapes"]])
        grid = np.logspace(math.log10(cs.min()) - 0.3, math.log10(cs.max()) + 0.3, 40)
        ax.scatter([s["C"] for s in good], [s["tokens_per_step_opt"] for s in good], color="C1", label="B* per size")
        ax.plot(grid, batch["k"] * grid ** batch["p"], color="C1", label=f"B*(C) = {batch['k']:.3g} C^{batch['p']:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(xlabel="C (FLOPs of the tune run)", ylabel="tokens per step")
        ax.legend(fontsize=7)
    save(fig, path)
    plt.close(fig)
