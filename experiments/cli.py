"""The `meshlm` command: a table of subcommands, each one module in experiments/commands/.

A command module exposes `DESCRIPTION`, `add_arguments(parser)` and `run(args)`. Only the module of the command being
run is imported, so `meshlm --help` answers without loading numpy or JAX. Adding a command is one file in commands/
and one line in COMMANDS.
"""

import argparse
import dataclasses
import errno
import importlib
import sys

from meshlm.model.errors import ConfigError
from meshlm.training.errors import PREEMPTED_EXIT_CODE, Preempted


@dataclasses.dataclass(frozen=True)
class Command:
    module: str  # under meshlm.experiments.commands
    summary: str  # the line `meshlm --help` shows


COMMANDS = {
    "info": Command("info", "print a preset's resolved config, parameter counts and FLOPs per token"),
    "generate": Command("generate", "sample text from a trained run directory or a randomly initialised preset"),
    "train": Command("train", "train a model on text; re-running on the same run directory resumes"),
    "plan": Command("plan", "per-device memory, FLOPs and step time of a preset on a device mesh"),
    "bench": Command("bench", "training, decoding and scoring speed, FLOP/s, MFU, compile time (--against PyTorch)"),
    "sweep": Command("sweep", "scaling-law sweeps: run a spec of budgets x shapes x seeds, fit laws to it"),
    "convert": Command("convert", "Hugging Face GPT-2 checkpoints into run directories (hf-gpt2) and back (to-hf)"),
    "lm-eval": Command("lm_eval", "lm-evaluation-harness's command line with the `meshlm` model type"),
    "eval": Command("eval", "few-shot evaluation of trained runs: accuracy against K, ICL probes, curves"),
    "coord-check": Command("coord_check", "muP's coordinate check: activation RMS against width over a few steps"),
}

EPILOG = """\
Every command that builds a model takes --set key.path=value (repeatable) to override any config field, e.g.
  meshlm info --preset gpt3-xl --set model.attention=fused
Run `meshlm COMMAND --help` for the options of one command."""


class _Parser(argparse.ArgumentParser):
    """argparse's own errors on one line, like every other meshlm error."""

    def error(self, message: str):
        self.exit(2, f"meshlm: error: {message}; see {self.prog} --help\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed and `command`'s own arguments added (its module imported)."""
    parser = _Parser(
        prog="meshlm",
        description="meshlm: GPT-3-style language models in JAX/Flax.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=entry.summary)
            continue
        module = importlib.import_module(f"meshlm.experiments.commands.{entry.module}")
        p = sub.add_parser(
            name, help=entry.summary, description=module.DESCRIPTION, **getattr(module, "PARSER_OPTIONS", {})
        )
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no option with a value
    try:
        args = build_parser(command).parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code
    try:
        importlib.import_module(f"meshlm.experiments.commands.{COMMANDS[args.command].module}").run(args)
    except ConfigError as e:
        print(f"meshlm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk or path problem the config could not foresee: full, read-only, missing
        print(f"meshlm: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except Preempted as e:  # the step is saved: a launcher retries the same command, which resumes there
        print(f"meshlm: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
        print("meshlm: interrupted", file=sys.stderr)
        return 130
    return 0


_OS_FIXES = {
    errno.ENOSPC: "free disk space or choose another location",
    errno.EDQUOT: "free space within your quota or choose another location",
    errno.EFBIG: "free space or raise the file size limit (ulimit -f)",
    errno.EACCES: "make it writable or choose another location",
    errno.EPERM: "make it writable or choose another location",
    errno.EROFS: "the file system is read-only: choose another location",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a folder in the path is a file: choose another path",
    errno.EISDIR: "it is a directory: pass a file",
}


def os_error_message(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or e}{where}; {_OS_FIXES.get(e.errno, 'check the path and the disk')}"


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
