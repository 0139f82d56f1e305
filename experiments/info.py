"""`meshlm info`: the resolved config and where the parameter and FLOP numbers come from."""

import json

from meshlm.model import flops, presets
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib


def run(args) -> None:
    if not args.list and not args.preset:
        raise ConfigError("meshlm info needs --preset NAME or --list")
    if args.list:
        for name, cfg in presets.PRESETS.items():
            n = flops.count_params(cfg).total
            print(
                f"{name:14s} {n / 1e9:8.3f}B params  layers={cfg.n_layers:<3d} d_model={cfg.d_model:<6d} "
                f"heads={cfg.n_heads}"
            )
        return
    cfg = config_lib.from_preset(args.preset, args.set).validate()
    m = cfg.model
    count = flops.count_params(m)
    per_token = flops.flops_per_token(m, cfg.seq_len)
    paper = presets.paper_params(args.preset)
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
    print(
        f"  embedding      {count.embedding:>18,d}  (token table{' + positions' if m.position == 'learned' else ''}; "
        "the tied head reuses the table)"
    )
    print(f"  non-embedding  {count.non_embedding:>18,d}")
    print(f"training FLOPs per token at seq_len {cfg.seq_len}: {per_token.total:.4g}")
    print(
        f"  matmuls        {per_token.matmul:.4g}  = 6 x (n_layers x (4 d_model d_attn + "
        f"{3 if m.mlp == 'swiglu' else 2} d_model d_mlp) + d_model vocab)"
    )
    print(
        f"  attention      {per_token.attention:.4g}  = 6 x 2 x n_layers x seq_len x d_attn  (QK^T and AV, unmasked "
        "square)"
    )


def _human(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
