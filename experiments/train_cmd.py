"""`meshlm train`: build the config from a preset and overrides, then hand it to the trainer."""

import pathlib

from meshlm.experiments import config as config_lib


def run(args) -> None:
    from meshlm.training.trainer import train

    overrides = list(args.set) + ([f"data.source={args.data}"] if args.data else [])
    cfg = config_lib.from_preset(args.preset, overrides).validate() if args.preset else None
    if cfg is None and overrides:
        cfg = config_lib.apply_overrides(config_lib.load(pathlib.Path(args.run_dir) / "config.json"), overrides)
    train(cfg, pathlib.Path(args.run_dir), progress=not args.no_progress)
