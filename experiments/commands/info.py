"""`meshlm info`: the resolved config, the training recipe, and where the parameter and FLOP numbers come from."""

import dataclasses
import json

from meshlm.experiments.commands import _flags
from meshlm.model import flops, presets
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib
from meshlm.training import recipe

DESCRIPTION = (
    "Print a preset's resolved config, its parameter counts (total and non-embedding, computed from shapes with "
    "nothing allocated) and its training FLOPs per token with the formula used."
)


def add_arguments(p) -> None:
    p.add_argument("--preset", metavar="NAME", help="model preset, e.g. gpt3-175b, gpt3-small, tiny")
    _flags.add_set(p)
    p.add_argument("--list", action="store_true", help="list the presets and their sizes")
    _flags.add_json(p)


def run(args) -> None:
    if not args.list and not args.preset:
        raise ConfigError("meshlm info needs --preset NAME or --list")
    if args.list:
        for name, cfg in presets.PRESETS.items():
            n = flops.count_params(cfg).total
            print(
                f"{name:14s} {n / 1e9:8.3f}B params  "
                f"layers={cfg.n_layers:<3d} d_model={cfg.d_model:<6d} heads={cfg.n_heads}"
            )
        return
    cfg = config_lib.from_preset(args.preset, args.set).validate()
    m = cfg.model
    count = flops.count_params(m)
    per_token = flops.flops_per_token(m, cfg.seq_len)
    paper = presets.paper_params(args.preset)
    plan = recipe.step_plan(cfg.train, cfg.seq_len)
    compute = recipe.training_compute(m, cfg.train, cfg.seq_len)
    row = recipe.GPT3_RECIPES.get(args.preset.removesuffix("-sparse"))
    if args.json:
        print(
            json.dumps(
                dict(
                    config=config_lib.to_dict(cfg),
                    params_total=count.total,
                    params_non_embedding=count.non_embedding,
                    flops_per_token=per_token.total,
                    flops_matmul=per_token.matmul,
                    flops_attention=per_token.attention,
                    train_steps=plan.total_steps,
                    train_tokens=compute.tokens,
                    train_flops=compute.total,
                    train_flops_paper_method=compute.paper_count,
                    paper_train_flops=row.paper_flops if row else None,
                    paper_pf_days=row.paper_pf_days if row else None,
                )
            )
        )
        return
    print(f"preset {args.preset}")
    print(json.dumps(config_lib.to_dict(cfg)["model"], indent=2))
    print(
        f"parameters       {count.total:>18,d}  ({_human(count.total)})"
        + (f"  paper: {_human(paper)}, ratio {count.total / paper:.3f}" if paper else "")
    )
    positions = " + positions" if m.position == "learned" else ""
    print(f"  embedding      {count.embedding:>18,d}  (token table{positions}; the tied head reuses the table)")
    print(f"  non-embedding  {count.non_embedding:>18,d}")
    print(f"training FLOPs per token at seq_len {cfg.seq_len}: {per_token.total:.4g}")
    print(f"  matmuls        {per_token.matmul:.4g}  = {flops.matmul_formula(m)}")
    print(f"  attention      {per_token.attention:.4g}  = {flops.ATTENTION_FORMULA}  (QK^T and AV, unmasked square)")
    print("\n".join(_recipe_lines(cfg, plan, row) + _compute_lines(compute, row)))


def _recipe_lines(cfg, plan: recipe.StepPlan, row: recipe.PaperRecipe | None) -> list[str]:
    t, opt, T = cfg.train, cfg.train.optimizer, cfg.seq_len

    def paper(text: str | None) -> str:
        return f"   [paper: {text}]" if row else ""

    lines = [
        "training recipe" + (": Brown et al. (2020), Table 2.1 and Appendix B" if row else ""),
        f"  batch          {t.batch_size} x {T} = {t.batch_size * T:,d} tokens per step"
        + (f", each chunk in {t.micro_batches} micro-batches" if t.micro_batches > 1 else "")
        + paper(row and f"{row.paper_batch_tokens / 1e6:g}M"),
    ]
    if recipe.ramps(t):
        lines.append(
            f"  batch ramp     from {plan.chunk} sequences ({plan.chunk * T:,d} tokens), {plan.chunk} more at a time, "
            f"linear over {_tokens(t.ramp_tokens)} tokens" + paper("32k to full over 4-12B")
        )
    length = f"  length         {_tokens(plan.tokens_at(plan.total_steps))} tokens in {plan.total_steps:,d} steps"
    if recipe.ramps(t) and t.tokens:
        length += f" ({recipe.step_plan(dataclasses.replace(t, ramp_tokens=0), T).total_steps:,d} without the ramp)"
    warmup = f"{_tokens(opt.warmup_tokens)} tokens" if opt.on_tokens else f"{opt.warmup_steps} steps"
    end = f"{_tokens(opt.decay_tokens)} tokens, then constant" if opt.decay_tokens else "the last step"
    shape = {
        "cosine": f"cosine to {opt.min_lr_ratio:g} x peak at {end}",
        "wsd": f"flat, then {opt.decay_shape} to {opt.min_lr_ratio:g} x peak over the last {opt.decay_fraction:g} of "
        "the run",
        "constant": "constant",
    }[opt.schedule]
    return lines + [
        length + paper("300B"),
        f"  learning rate  peak {_lr(opt.peak_lr)}" + paper(row and _lr(row.peak_lr)),
        f"                 linear warmup over {warmup}, {shape}" + paper("375M, 10% at 260B"),
        f"  optimizer      AdamW b1 {opt.b1:g} b2 {opt.b2:g} eps {opt.eps:g}, weight decay {opt.weight_decay:g}, "
        f"clip {opt.grad_clip:g}" + paper("the same"),
    ]


def _compute_lines(c: recipe.TrainingCompute, row: recipe.PaperRecipe | None) -> list[str]:
    lines = [
        f"training compute {c.total:.3g} FLOPs = {c.total / recipe.PF_DAY:.3g} PF-days "
        f"(FLOPs per token x tokens: matmuls {c.matmul:.3g} + attention {c.attention:.3g})",
        f"  paper's method 6 x params x tokens = {c.paper_count:.3g} FLOPs = {c.paper_count / recipe.PF_DAY:.3g} "
        "PF-days (attention left out)",
    ]
    if row:
        lines.append(
            f"  Table D.1      {row.paper_flops:.3g} FLOPs = {row.paper_pf_days:.3g} PF-days "
            f"(paper's method / Table D.1 = {c.paper_count / row.paper_flops:.3f})"
        )
    return lines


def _lr(x: float) -> str:
    return f"{x:.1e}".replace("e-0", "e-")


def _tokens(n: float) -> str:
    return f"{n / 1e9:.4g}B" if n >= 1e9 else f"{n / 1e6:.4g}M" if n >= 1e6 else f"{n:,.0f}"


def _human(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
