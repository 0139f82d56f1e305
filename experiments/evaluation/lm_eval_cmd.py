"""`meshlm lm-eval ARGS`: lm-evaluation-harness's own command line with the `meshlm` model type registered."""

import sys


def run(args) -> None:
    # Deferred: lm-eval (and the torch it brings) loads only for this command.
    from lm_eval.__main__ import cli_evaluate

    from meshlm.experiments.evaluation import lm_eval_adapter  # noqa: F401  (registers the `meshlm` model type)

    sys.argv = ["lm_eval", *args.lm_eval_args]
    cli_evaluate()
