"""The tune stage's fit (spec `tune:`; docs/scaling.md, Per-size tuning).

Per shape (and batch), a parabola in ln LR through the lowest final validation loss of its tune runs (the mean over
seeds) and the LRs either side of it gives that size's LR*, where the grid brackets the minimum. With a batch grid,
a parabola in ln B through each batch's lowest loss gives B*, and LR* is read at B* between the batches' own LR*.
Power laws through the shapes that are identified give LR*(N) (and B*(C)), which plan.resolve then uses for the main
runs. A shape whose minimum the grid does not bracket is *not identified*: it is named with the reason and left out
of the power laws, never extrapolated.
"""

import dataclasses
import json
import math
import pathlib

import numpy as np

from meshlm.experiments.sweep import parabola
from meshlm.experiments.sweep.plan import PlannedRun, Tuned
from meshlm.experiments.sweep.powerlaw import PowerLaw, fit_power_law
from meshlm.experiments.sweep.spec import Spec
from meshlm.experiments.sweep.store import Store
from meshlm.experiments.sweep.tune_report import FILE
from meshlm.model.config import ModelConfig
from meshlm.training.atomic import write_atomic

FITTED, FROM_RULES = "fitted", "rules.lr"  # where LR*(N)'s exponent comes from


@dataclasses.dataclass(frozen=True)
class Curve:
    """One U-curve: the tune runs of one shape at one batch."""

    batch: int  # sequences per step
    tokens_per_step: int
    lr: tuple[float, ...]  # the LRs of the grid with a finished run, ascending
    loss: tuple[float, ...]  # their final validation loss, the mean over seeds
    failed: tuple[float, ...]  # LRs none of whose runs finished (a diverged run fails under train.nonfinite=stop)
    fit: parabola.Vertex  # x = ln LR

    @property
    def lr_opt(self) -> float | None:
        return None if self.fit.x is None else math.exp(self.fit.x)


@dataclasses.dataclass(frozen=True)
class ShapeTune:
    d_model: int
    n_layers: int
    N: float  # FLOP-equivalent parameters
    C: float  # the compute of its tune runs
    curves: tuple[Curve, ...]  # one per batch
    batch_fit: parabola.Vertex | None  # with a batch grid: x = ln tokens per step, y = each curve's lowest loss
    lr_opt: float | None  # LR*, None when not identified
    tokens_per_step_opt: float | None  # B*, with a batch grid
    reason: str  # why it is not identified; "" when it is


@dataclasses.dataclass(frozen=True)
class TuneFit:
    shapes: tuple[ShapeTune, ...]
    rules: Tuned | None  # None when no shape is identified
    lr_exponent: str  # FITTED, or FROM_RULES when one size alone is identified
    prior: dict  # rules.lr, which the grid multiplies and the report compares with
    run_ids: tuple[str, ...]

    def to_json(self) -> dict:
        lr, batch = (self.rules.lr, self.rules.batch) if self.rules else (None, None)
        return {
            "lr_rule": lr and {"k": lr.k, "p": lr.p, "exponent": self.lr_exponent},  # LR*(N) = k N^p
            "batch_rule": batch and {"k": batch.k, "p": batch.p},  # B*(C) = k C^p tokens per step
            "prior": self.prior,
            "shapes": [
                {
                    **{k: getattr(s, k) for k in ("d_model", "n_layers", "N", "C", "lr_opt", "tokens_per_step_opt")},
                    "identified": not s.reason,
                    "reason": s.reason,
                    "batch_fit": s.batch_fit and dataclasses.asdict(s.batch_fit),
                    "curves": [
                        {
                            **{k: getattr(c, k) for k in ("batch", "tokens_per_step", "lr", "loss", "failed")},
                            "coeffs": c.fit.coeffs,
                            "lr_opt": c.lr_opt,
                            "loss_opt": c.fit.y,
                            "flag": c.fit.flag,
                        }
                        for c in s.curves
                    ],
                }
                for s in self.shapes
            ],
            "runs": list(self.run_ids),
        }


def fit(spec: Spec, runs: list[PlannedRun], losses: dict[str, float]) -> TuneFit:
    """runs: the tune stage (plan.resolve_tune); losses: the final validation loss of each finished run (a run
    missing from it failed)."""
    by_shape: dict[ModelConfig, list[PlannedRun]] = {}
    for r in runs:
        by_shape.setdefault(r.config.model, []).append(r)
    shapes = tuple(_shape(group, losses, bool(spec.tune.batch_grid)) for group in by_shape.values())
    rules, exponent = _rules(shapes, spec)
    return TuneFit(shapes, rules, exponent, dataclasses.asdict(spec.rules.lr), tuple(r.run_id for r in runs))


def fit_stage(spec: Spec, runs: list[PlannedRun], store: Store) -> TuneFit | None:
    """The tune stage's fit once every run of it has ended, finished or failed; None while some have not."""
    losses, failed = store.final_losses(), store.failed()
    if any(r.run_id not in losses and r.run_id not in failed for r in runs):
        return None
    return fit(spec, runs, losses)


def write(directory: pathlib.Path, result: TuneFit) -> pathlib.Path:
    path = pathlib.Path(directory) / FILE
    write_atomic(path, json.dumps(result.to_json(), indent=1) + "\n")
    return path


def _curve(runs: list[PlannedRun], losses: dict[str, float]) -> Curve:
    by_lr: dict[float, list[float]] = {}
    for r in runs:
        finished = by_lr.setdefault(r.config.train.optimizer.peak_lr, [])
        if r.run_id in losses:
            finished.append(losses[r.run_id])
    done = sorted(lr for lr, values in by_lr.items() if values)
    mean = [float(np.mean(by_lr[lr])) for lr in done]
    t = runs[0].config.train
    return Curve(
        batch=t.batch_size,
        tokens_per_step=t.batch_size * t.seq_len,
        lr=tuple(done),
        loss=tuple(mean),
        failed=tuple(sorted(lr for lr, values in by_lr.items() if not values)),
        fit=parabola.vertex_near_lowest(np.log(done), mean, what="LR"),
    )


def _shape(runs: list[PlannedRun], losses: dict[str, float], batch_grid: bool) -> ShapeTune:
    by_batch: dict[int, list[PlannedRun]] = {}
    for r in runs:
        by_batch.setdefault(r.config.train.batch_size, []).append(r)
    curves = tuple(_curve(group, losses) for _, group in sorted(by_batch.items()))
    m, first = runs[0].config.model, runs[0]
    shape = dict(d_model=m.d_model, n_layers=m.n_layers, N=first.accounting.params_flops, C=first.budget, curves=curves)
    if not batch_grid:
        (curve,) = curves
        return ShapeTune(**shape, batch_fit=None, lr_opt=curve.lr_opt, tokens_per_step_opt=None, reason=curve.fit.flag)
    good = [c for c in curves if c.fit.x is not None]  # the batches whose own LR* is bracketed
    log_tokens = np.log([c.tokens_per_step for c in good])
    v = parabola.vertex(log_tokens, [c.fit.y for c in good], what="batch")
    if v.x is None:
        reason = f"B*, over the batches whose own LR* is bracketed: {v.flag}"
        return ShapeTune(**shape, batch_fit=v, lr_opt=None, tokens_per_step_opt=None, reason=reason)
    # LR* grows with the batch: read it at B*, between the LR* of the batches either side (in log-log).
    lr_opt = math.exp(float(np.interp(v.x, log_tokens, np.log([c.lr_opt for c in good]))))
    return ShapeTune(**shape, batch_fit=v, lr_opt=lr_opt, tokens_per_step_opt=math.exp(v.x), reason="")


def _rules(shapes: tuple[ShapeTune, ...], spec: Spec) -> tuple[Tuned | None, str]:
    """LR*(N) (and B*(C)) through the identified shapes. With one size identified, the exponent is the rules' and
    B* is the same at every compute."""
    good = [s for s in shapes if not s.reason]
    if not good:
        return None, FITTED
    batch = None
    if spec.tune.batch_grid:
        batch = fit_power_law([s.C for s in good], [s.tokens_per_step_opt for s in good])
        batch = batch or PowerLaw(k=good[0].tokens_per_step_opt, p=0.0)
    lr = fit_power_law([s.N for s in good], [s.lr_opt for s in good])
    if lr is not None:
        return Tuned(lr, batch), FITTED
    exponent = spec.rules.lr.exponent
    return Tuned(PowerLaw(k=good[0].lr_opt / good[0].N ** exponent, p=exponent), batch), FROM_RULES


def summary(result: TuneFit, runs: list[PlannedRun]) -> str:
    """One line: the fitted rules, from how many sizes, and which main sizes lie beyond the tuned ones."""
    good = [s.N for s in result.shapes if not s.reason]
    lr, batch = result.rules.lr, result.rules.batch
    line = f"tune stage: LR*(N) = {lr.k:.3g} N^{lr.p:.3f} from {len(good)} of {len(result.shapes)} sizes"
    if result.lr_exponent == FROM_RULES:
        line += " (one size identified: the exponent is rules.lr's)"
    if batch:
        line += f", B*(C) = {batch.k:.3g} C^{batch.p:.3f} tokens per step"
    beyond = sorted(n for n in {r.accounting.params_flops for r in runs} if not min(good) <= n <= max(good))
    if beyond:
        line += (
            f"; extrapolated to {len(beyond)} main size(s) outside the tuned N {min(good):.3g}-{max(good):.3g} "
            f"(N={beyond[0]:.3g}{f' to {beyond[-1]:.3g}' if len(beyond) > 1 else ''})"
        )
    return line
