"""Every parameter's PartitionSpec per preset and strategy, as pinned in golden/<preset>.json, and the one command
that rewrites those files. The test only reads them: after an intended change to the rules or the model, run

    .venv/bin/python -m tests.parallel.regen_golden        (or: make golden)

and review the diff by hand before committing it. Each dimension reads `logical=mesh axes`, e.g.
"layers embed=fsdp qkv heads=tensor kv" for w_qkv."""

import json
import os
import pathlib

GOLDEN = pathlib.Path(__file__).parent / "golden"
DEVICES = 8


def snapshot(name: str) -> dict:
    from meshlm.model import presets
    from meshlm.model.transformer import ACTIVATION_AXES
    from meshlm.parallel.rules import partition, rules_for
    from meshlm.parallel.sharding import flat_params, param_specs

    model = presets.get(name)
    names = {path: axes for path, (_, axes) in flat_params(model).items()}
    out = {}
    for strategy, mesh in strategies().items():
        params = {path: _describe(spec, names[path]) for path, spec in param_specs(model, mesh, DEVICES).items()}
        dims = partition((64, model.n_ctx, model.d_model), ACTIVATION_AXES, mesh.axis_sizes(DEVICES), rules_for(mesh))
        params["x_BTD (64 rows)"] = _describe([d or None for d in dims], ACTIVATION_AXES)
        out[f"{strategy}: {mesh.shape}" + (" sequence_parallel" if mesh.sequence_parallel else "")] = params
    return out


def strategies() -> dict:
    from meshlm.parallel.config import MeshConfig

    return {
        "data": MeshConfig("data=8"),
        "fsdp": MeshConfig("fsdp=8"),
        "tensor": MeshConfig("data=4,tensor=2"),
        "data_fsdp_tensor": MeshConfig("data=2,fsdp=2,tensor=2"),
        "data_fsdp_tensor_sequence": MeshConfig("data=2,fsdp=2,tensor=2", sequence_parallel=True),
    }


def _describe(spec, names) -> str:
    return " ".join(
        n if e is None else f"{n}={'+'.join(e) if isinstance(e, tuple) else e}" for n, e in zip(names, spec)
    )


def main() -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from meshlm.model import presets

    GOLDEN.mkdir(exist_ok=True)
    for name in presets.PRESETS:
        (GOLDEN / f"{name}.json").write_text(json.dumps(snapshot(name), indent=1) + "\n")
        print(f"wrote {GOLDEN / name}.json")


if __name__ == "__main__":
    main()
