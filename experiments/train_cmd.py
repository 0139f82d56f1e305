"""`meshlm train`: build the config from a preset and overrides, then hand it to the trainer."""

import pathlib

from meshlm.experiments import config as config_lib


def run(args) -> None:
    from meshlm.parallel import distributed

    flags = distributed.DistributedConfig.from_env().with_flags(
        args.coordinator, args.num_processes, args.process_id, args.cpu_devices
    )
    distributed.initialize(flags)  # before anything touches a device
    from meshlm.training.trainer import train

    overrides = (
        list(args.set)
        + ([f"data.source={args.data}"] if args.data else [])
        + ([f"mesh.shape={args.mesh}"] if args.mesh else [])
    )
    cfg = config_lib.from_preset(args.preset, overrides).validate() if args.preset else None
    if cfg is None and overrides:
        cfg = config_lib.apply_overrides(config_lib.load(pathlib.Path(args.run_dir) / "config.json"), overrides)
    train(cfg, pathlib.Path(args.run_dir), progress=not args.no_progress)
