"""`meshlm lm-eval ARGS`: lm-evaluation-harness's own command line with the `meshlm` model type registered."""

import sys

from meshlm.model.errors import ConfigError

DESCRIPTION = (
    "lm-evaluation-harness's command line (pip install 'meshlm[torch]') with the `meshlm` model type registered: "
    "meshlm lm-eval --model meshlm --model_args run_dir=DIR --tasks NAMES [--include_path DIR]. Every argument goes "
    "to lm-eval. See docs/interop.md."
)
PARSER_OPTIONS = dict(prefix_chars="+", add_help=False)  # so that --model and lm-eval's other options pass through


def add_arguments(p) -> None:
    p.add_argument("lm_eval_args", nargs="...", metavar="ARGS", help="lm-eval's arguments")


def run(args) -> None:
    # Deferred: lm-eval (and the torch it brings) loads only for this command.
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise ConfigError("meshlm lm-eval needs lm-evaluation-harness: pip install 'meshlm[torch]'") from None

    from meshlm.experiments.evaluation import lm_eval_adapter  # noqa: F401  (registers the `meshlm` model type)

    sys.argv = ["lm_eval", *args.lm_eval_args]
    cli_evaluate()
