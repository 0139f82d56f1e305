"""`meshlm sweep SUBCOMMAND`: each sub-command's module, imported only when it runs."""

import importlib

SUBCOMMANDS = {
    "run": "meshlm.experiments.sweep.run_cmd",
    "fit": "meshlm.experiments.sweep.fit_cmd",
}


def run(args) -> None:
    importlib.import_module(SUBCOMMANDS[args.sweep]).run(args)
