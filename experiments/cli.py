"""The `meshlm` command: one subcommand per job, each documented by its --help."""

import argparse
import errno
import importlib
import math
import sys

from meshlm.experiments.sweep import fit_cmd as sweep_fit_cmd
from meshlm.experiments.sweep import run_cmd as sweep_run_cmd
from meshlm.model.errors import ConfigError

DESCRIPTION = """\
meshlm: GPT-3-style language models in JAX/Flax.

Commands:
  info      print a preset's resolved config, parameter counts and FLOPs per token
  generate  sample text from a trained run directory or a randomly initialised preset
  train     train a model on text; re-running on the same run directory resumes
  plan      per-device memory, FLOPs and step time of a preset on a device mesh
  bench     training, decoding and scoring speed, FLOP/s, MFU, compile time (against PyTorch with --against)
  sweep     scaling-law sweeps: run a spec of budgets x shapes x seeds, fit laws to it or to a CSV table
  convert   Hugging Face GPT-2 checkpoints into run directories (hf-gpt2) and back (to-hf)
  lm-eval   lm-evaluation-harness's command line with the `meshlm` model type (--model meshlm)
  eval      few-shot evaluation of trained runs: accuracy against K, ICL probes, curves (docs/evaluation.md)

Every command takes --set key.path=value (repeatable) to override any config field, e.g.
  meshlm info --preset gpt3-xl --set model.attention=fused
Run `meshlm COMMAND --help` for the options of one command."""


class _Parser(argparse.ArgumentParser):
    """argparse's own errors on one line, like every other meshlm error."""

    def error(self, message: str):
        self.exit(2, f"meshlm: error: {message}; see {self.prog} --help\n")


def at_least(low: int):
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range; use {low} or more")
        return value

    return parse


def number(low: float, high: float | None, low_open: bool = False):
    """An argparse type: a finite float in [low, high] ((low, high] with low_open; no upper bound if high is None)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and (high is None or value <= high)):
            span = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
            raise argparse.ArgumentTypeError(f"{text} is out of range; use a number in {span}")
        return value

    return parse


def _add_config_args(p: argparse.ArgumentParser, preset_required: bool = True) -> None:
    p.add_argument(
        "--preset", required=preset_required, metavar="NAME", help="model preset (meshlm info --list shows them)"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override one config field (repeatable)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meshlm", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "info",
        help="resolved config, parameter counts, FLOPs per token",
        description="Print a preset's resolved config, its parameter counts (total and non-embedding, "
        "computed from shapes with nothing allocated) and its training FLOPs per token with the formula used.",
    )
    p.add_argument("--preset", metavar="NAME", help="model preset, e.g. gpt3-175b, gpt3-small, tiny")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override one config field (repeatable)"
    )
    p.add_argument("--list", action="store_true", help="list the presets and their sizes")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = sub.add_parser(
        "generate",
        help="sample text",
        description="Sample continuations of one or more prompts with a KV cache. With --run-dir the trained "
        "model and its tokenizer are loaded; with --preset a randomly initialised model reads and writes UTF-8 bytes.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", metavar="DIR", help="a directory written by meshlm train")
    src.add_argument("--preset", metavar="NAME", help="a preset, randomly initialised (for trying the machinery)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override one config field (with --preset)"
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="a prompt (repeat for a batch); default: one empty-context prompt",
    )
    p.add_argument(
        "--max-new-tokens", type=at_least(1), default=64, metavar="N", help="tokens to generate per prompt (default 64)"
    )
    p.add_argument("--temperature", type=number(0, None), default=0.8, metavar="T", help="0 = greedy (default 0.8)")
    p.add_argument(
        "--top-k", type=at_least(0), default=0, metavar="K", help="sample among the K most likely tokens (0 = all)"
    )
    p.add_argument(
        "--top-p", type=number(0, 1, low_open=True), default=1.0, metavar="P", help="nucleus sampling mass (1 = off)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-document token")

    p = sub.add_parser(
        "train",
        help="train a model; resumes a run directory",
        description="Train a preset on text. The run directory receives config.json, tokenizer.model, "
        "metrics.jsonl, TensorBoard events and orbax checkpoints; running the same command again resumes "
        "from the latest complete checkpoint.",
    )
    _add_config_args(p, preset_required=False)
    p.add_argument("--run-dir", required=True, metavar="DIR", help="where the run lives (created if missing)")
    p.add_argument("--data", metavar="SPEC", help="shakespeare (default, embedded) | tfds:NAME[/CONFIG] | text:GLOB")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument(
        "--sample",
        action="append",
        default=[],
        metavar="PROMPT",
        help="after training, sample this prompt into RUN_DIR/samples.txt (repeatable)",
    )
    p.add_argument(
        "--eval-tasks",
        action="append",
        default=[],
        metavar="LIST",
        help="few-shot tasks to evaluate during training (meshlm eval's names), logged as eval/TASK/METRIC@K",
    )
    p.add_argument("--eval-every", type=int, metavar="N", help="steps between evaluations (default train.eval_every)")
    p.add_argument("--eval-shots", default="0,4", metavar="K,K,...", help="shots for --eval-tasks (default 0,4)")
    p.add_argument(
        "--eval-limit", type=int, default=64, metavar="N", help="items per task for --eval-tasks (default 64)"
    )
    p.add_argument(
        "--mesh", metavar="SPEC", help="device mesh, e.g. data=2,fsdp=2,tensor=2 (one axis may be -1); sets mesh.shape"
    )
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="multi-process: process 0's address, or auto on a TPU slice/SLURM (env MESHLM_COORDINATOR)",
    )
    p.add_argument(
        "--num-processes", type=at_least(1), metavar="N", help="multi-process: how many (env MESHLM_NUM_PROCESSES)"
    )
    p.add_argument(
        "--process-id",
        type=at_least(0),
        metavar="I",
        help="multi-process: this one's index, 0 first (env MESHLM_PROCESS_ID)",
    )
    p.add_argument(
        "--cpu-devices",
        type=at_least(1),
        metavar="N",
        help="simulated CPU devices in this process (env MESHLM_CPU_DEVICES)",
    )

    p = sub.add_parser(
        "plan",
        help="per-device memory, FLOPs, step time on a mesh",
        description="Per-device memory (parameters, gradients, optimizer state, activations under the remat "
        "policy), FLOPs per step and step time at a stated MFU, from shapes alone. When --chips is small "
        "enough to simulate on CPU, XLA's memory analysis of the real train step is printed too "
        "(compiled ahead of time from abstract shapes; nothing is allocated). See docs/parallelism.md.",
    )
    _add_config_args(p)
    p.add_argument("--mesh", required=True, metavar="SPEC", help="e.g. fsdp=-1 or data=2,fsdp=2,tensor=2")
    p.add_argument(
        "--device", required=True, metavar="KIND", help="tpu-v4, tpu-v5e, tpu-v5p, tpu-v6e, a100, h100, h200"
    )
    p.add_argument(
        "--chips", type=at_least(1), metavar="N", help="devices in the mesh (default: the product of the mesh's sizes)"
    )
    p.add_argument(
        "--batch", type=at_least(1), metavar="B", help="global batch in sequences (default train.batch_size)"
    )
    p.add_argument("--seq-len", type=at_least(1), metavar="T", help="tokens per sequence (default model.n_ctx)")
    p.add_argument(
        "--micro-batches",
        type=at_least(1),
        metavar="M",
        help="gradient accumulation steps (default train.micro_batches)",
    )
    p.add_argument(
        "--remat",
        metavar="POLICY",
        help="none | full | dots_saveable | dots_with_no_batch_dims_saveable (sets model.remat)",
    )
    p.add_argument(
        "--mfu",
        type=number(0, 1, low_open=True),
        default=0.4,
        help="model FLOP utilisation assumed for the step time (default 0.4)",
    )
    p.add_argument(
        "--xla",
        choices=("auto", "on", "off"),
        default="auto",
        help="XLA's memory analysis on a simulated CPU mesh (auto: when --chips <= 8)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = sub.add_parser(
        "bench",
        help="training/decoding speed, MFU, compile time",
        description="Benchmarks on random data. Contestants take turns in one run and medians are reported; "
        "compile time is reported apart. On CPU, one simulated device per core (data parallel) unless "
        "--cpu-devices or XLA_FLAGS says otherwise. See docs/performance.md.",
    )
    kinds = p.add_subparsers(dest="bench", metavar="KIND", required=True)
    k = kinds.add_parser("train", help="train-step tokens/s, FLOP/s, MFU; --against PyTorch GPT-2")
    _add_config_args(k)
    k.add_argument("--steps", type=at_least(1), default=10, help="timed steps (default 10)")
    k.add_argument("--warmup", type=at_least(0), default=2, help="untimed steps first (default 2)")
    k.add_argument(
        "--against",
        action="append",
        default=[],
        choices=("hf-gpt2", "torch-gpt2"),
        help="also time a PyTorch GPT-2 of the same shape (repeatable; needs pip install 'meshlm[torch]')",
    )
    k = kinds.add_parser("decode", help="KV-cache generation against recomputing, bytes/s; --against HF generate")
    _add_config_args(k)
    k.add_argument("--batch", type=at_least(1), action="append", help="batch size (repeatable; default 1 and 16)")
    k.add_argument("--prompt-len", type=at_least(1), default=16, help="prompt tokens (default 16)")
    k.add_argument("--new-tokens", type=at_least(1), default=512, help="tokens to generate (default 512)")
    k.add_argument(
        "--uncached-tokens", type=at_least(1), default=4, help="uncached steps timed; each costs the same (default 4)"
    )
    k.add_argument("--repeats", type=at_least(1), default=3, help="timed repeats (default 3)")
    k.add_argument(
        "--against",
        action="append",
        default=[],
        choices=("hf-gpt2",),
        help="also time Hugging Face's generate with the same weights (needs pip install 'meshlm[torch]')",
    )
    k = kinds.add_parser("eval", help="few-shot scoring: scored tokens/s, compiled shapes; --against HF")
    _add_config_args(k)
    k.add_argument("--items", type=int, default=8, help="items per task (default 8)")
    k.add_argument("--shots", default="0,1,2,4,8,16", metavar="K,K,...", help="shots (default 0,1,2,4,8,16)")
    k.add_argument("--batch-size", type=int, default=16, metavar="N", help="rows per forward pass (default 16)")
    k.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    k.add_argument(
        "--against",
        action="append",
        default=[],
        choices=("hf-gpt2",),
        help="also score with Hugging Face transformers, same weights and batches (needs pip install 'meshlm[torch]')",
    )
    k = kinds.add_parser("compile", help="train-step compile time at several depths")
    _add_config_args(k)
    k.add_argument("--layers", type=at_least(1), nargs="+", default=[12, 48], help="depths to compile (default 12 48)")
    k.add_argument("--repeats", type=at_least(1), default=3, help="compiles per depth (default 3)")
    k = kinds.add_parser("attention-memory", help="compiled peak memory of an attention kernel against reference")
    k.add_argument("--seq-len", type=at_least(1), default=8192, help="sequence length (default 8192)")
    k.add_argument("--kernel", default="blockwise", help="the kernel measured (default blockwise)")
    k.add_argument("--against", default="reference", help="the kernel it is compared with (default reference)")
    for k in kinds.choices.values():
        k.add_argument(
            "--cpu-devices", type=at_least(1), metavar="N", help="simulated CPU devices (default: one per core)"
        )
        k.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = sub.add_parser("sweep", help="scaling-law sweeps (docs/scaling.md)", description="Scaling-law sweeps.")
    sweeps = p.add_subparsers(dest="sweep", metavar="ACTION", required=True)
    sweep_run_cmd.add_arguments(
        sweeps.add_parser(
            "run",
            help="run, resume or --dry-run a sweep spec",
            description="Run every run of a sweep spec into DIR: an ordinary meshlm train run directory per run "
            "under DIR/runs/ID, results in DIR/results.sqlite. Re-running skips finished runs and resumes "
            "interrupted ones; two runners on one DIR never run the same run.",
        )
    )
    sweep_fit_cmd.add_arguments(
        sweeps.add_parser(
            "fit",
            help="fit scaling laws to a sweep directory or a CSV table",
            description="Fit L(N, D) = E + A/N^alpha + B/D^beta (Approach 3), IsoFLOP parabolas (Approach 2), the "
            "loss-curve envelope (Approach 1) and Kaplan-style L(N), L(D), with bootstrap intervals; predict "
            "hold-out runs; print name=value lines, write fit.json and report.md. See docs/scaling.md.",
        )
    )
    p = sub.add_parser(
        "convert",
        help="Hugging Face GPT-2 checkpoints in and out",
        description="hf-gpt2 SRC --out RUN_DIR: a Hugging Face GPT-2 directory (config.json, model.safetensors or "
        "pytorch_model.bin, tokenizer.json) becomes a run directory with a step-0 checkpoint that generate, eval and "
        "train (fine-tuning) read; --set/--data choose its train and data sections. to-hf RUN_DIR --out DIR: the "
        "reverse, for GPT-2-shaped runs. See docs/interop.md.",
    )
    p.add_argument("direction", choices=("hf-gpt2", "to-hf"), help="hf-gpt2: into meshlm; to-hf: out of meshlm")
    p.add_argument("src", metavar="SRC", help="the Hugging Face directory (hf-gpt2) or the run directory (to-hf)")
    p.add_argument("--out", required=True, metavar="DIR", help="the directory to write (must not hold a run/model)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="hf-gpt2: a train.*/data.* override"
    )
    p.add_argument("--data", metavar="SPEC", help="hf-gpt2: the fine-tuning data (sets data.source)")
    p.add_argument("--step", type=int, metavar="N", help="to-hf: the checkpoint step (default: the latest)")

    p = sub.add_parser(
        "eval",
        help="few-shot evaluation: accuracy against K, ICL probes",
        description="Evaluate trained runs on prompt tasks at every K (shots drawn per item by seed, never the "
        "item itself) and on in-context-learning probes. Writes results.json, results.md and icl_TASK.png "
        "(the task's metric against K, one line per model). See docs/evaluation.md.",
    )
    models = p.add_mutually_exclusive_group(required=True)
    models.add_argument("--run-dir", action="append", metavar="DIR", help="a trained run (repeatable)")
    models.add_argument("--sweep", metavar="DIR", help="every finished run of a sweep (meshlm sweep run --out DIR)")
    p.add_argument(
        "--tasks",
        action="append",
        required=True,
        metavar="LIST",
        help="comma-separated: built-in names (arithmetic_2da ... arithmetic_1dc, cycle_letters, anagrams1, "
        "anagrams2, random_insertion, reversed_words, label_mapping, icl_score, induction, perplexity), groups "
        "(arithmetic, unscramble, icl), jsonl:PATH, lambada:PATH, bigbench:PATH",
    )
    p.add_argument("--shots", default="0", metavar="K,K,...", help="numbers of examples in the prompt (default 0)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="shot seeds per K > 0 (default 1)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="rows per forward pass (default 16)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="evaluate the first N items of a task (0 = all)")
    p.add_argument("--task-seed", type=int, default=0, metavar="S", help="seed of generated tasks (default 0)")
    p.add_argument("--out", metavar="DIR", help="where results.json, results.md and PNGs go (--sweep: DIR/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "lm-eval",
        help="lm-evaluation-harness with --model meshlm",
        description="lm-evaluation-harness's command line (pip install 'meshlm[torch]') with the `meshlm` model "
        "type registered: meshlm lm-eval --model meshlm --model_args run_dir=DIR --tasks NAMES [--include_path DIR]. "
        "Every argument goes to lm-eval. See docs/interop.md.",
        prefix_chars="+",  # so that --model and the other lm-eval options pass through as they are
        add_help=False,
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, metavar="ARGS", help="lm-eval's arguments")
    return parser


# Each command's module, imported only when that command runs, so `meshlm --help` answers without loading JAX.
# A new command: its parser above, its module here (exposing `run(args)`).
COMMANDS = {
    "info": "meshlm.experiments.info",
    "generate": "meshlm.experiments.generate_cmd",
    "train": "meshlm.experiments.train_cmd",
    "plan": "meshlm.experiments.plan_cmd",
    "bench": "meshlm.experiments.bench",
    "sweep": "meshlm.experiments.sweep.commands",
    "eval": "meshlm.experiments.evaluation.eval_cmd",
    "convert": "meshlm.experiments.convert_cmd",
    "lm-eval": "meshlm.experiments.evaluation.lm_eval_cmd",
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code
    try:
        importlib.import_module(COMMANDS[args.command]).run(args)
    except ConfigError as e:
        print(f"meshlm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk or path problem the config could not foresee: full, read-only, missing
        print(f"meshlm: error: {os_error_message(e)}", file=sys.stderr)
        return 2
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
