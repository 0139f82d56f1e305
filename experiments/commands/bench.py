"""`meshlm bench KIND`: one benchmark of experiments/bench/, its figures printed as text or JSON."""

import json
import os

from meshlm.experiments.bench import attention_memory, decode, train
from meshlm.experiments.bench import eval as scoring
from meshlm.experiments.commands import _flags
from meshlm.experiments.evaluation import harness
from meshlm.parallel import devices
from meshlm.training import config as config_lib

DESCRIPTION = (
    "Benchmarks on random data. Contestants take turns in one run and medians are reported; compile time is reported "
    "apart. On CPU, one simulated device per core (data parallel) unless --cpu-devices or XLA_FLAGS says otherwise. "
    "See docs/performance.md."
)


def add_arguments(p) -> None:
    kinds = p.add_subparsers(dest="bench", metavar="KIND", required=True)
    k = kinds.add_parser("train", help="train-step tokens/s, FLOP/s, MFU; --against PyTorch GPT-2")
    _flags.add_config_args(k)
    k.add_argument("--steps", type=_flags.at_least(1), default=10, help="timed steps (default 10)")
    k.add_argument("--warmup", type=_flags.at_least(0), default=2, help="untimed steps first (default 2)")
    k.add_argument(
        "--against",
        action="append",
        default=[],
        choices=("hf-gpt2", "torch-gpt2"),
        help="also time a PyTorch GPT-2 of the same shape (repeatable; needs pip install 'meshlm[torch]')",
    )
    k.add_argument("--profile", metavar="DIR", help="a jax.profiler trace of the timed steps into DIR (TensorBoard)")
    k = kinds.add_parser("decode", help="KV-cache generation against recomputing, bytes/s; --against HF generate")
    _flags.add_config_args(k)
    k.add_argument(
        "--batch", type=_flags.at_least(1), action="append", help="batch size (repeatable; default 1 and 16)"
    )
    k.add_argument("--prompt-len", type=_flags.at_least(1), default=16, help="prompt tokens (default 16)")
    k.add_argument("--new-tokens", type=_flags.at_least(1), default=512, help="tokens to generate (default 512)")
    k.add_argument(
        "--uncached-tokens",
        type=_flags.at_least(1),
        default=4,
        help="uncached steps timed; each costs the same (default 4)",
    )
    k.add_argument("--repeats", type=_flags.at_least(1), default=3, help="timed repeats (default 3)")
    k.add_argument(
        "--against",
        action="append",
        default=[],
        choices=("hf-gpt2",),
        help="also time Hugging Face's generate with the same weights (needs pip install 'meshlm[torch]')",
    )
    k = kinds.add_parser("eval", help="few-shot scoring: scored tokens/s, compiled shapes; --against HF")
    _flags.add_config_args(k)
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
    _flags.add_config_args(k)
    k.add_argument(
        "--layers", type=_flags.at_least(1), nargs="+", default=[12, 48], help="depths to compile (default 12 48)"
    )
    k.add_argument("--repeats", type=_flags.at_least(1), default=3, help="compiles per depth (default 3)")
    k = kinds.add_parser("attention-memory", help="compiled peak memory of an attention kernel against reference")
    k.add_argument("--seq-len", type=_flags.at_least(1), default=8192, help="sequence length (default 8192)")
    k.add_argument("--kernel", default="blockwise", help="the kernel measured (default blockwise)")
    k.add_argument("--against", default="reference", help="the kernel it is compared with (default reference)")
    for k in kinds.choices.values():
        k.add_argument(
            "--cpu-devices", type=_flags.at_least(1), metavar="N", help="simulated CPU devices (default: one per core)"
        )
        _flags.add_json(k)


def run(args) -> None:
    _use_cpu_devices(args.cpu_devices)
    result, text = KINDS[args.bench](args)
    print(json.dumps(result) if args.json else text(result))


def _use_cpu_devices(n: int | None) -> None:
    """One simulated CPU device per core unless a count was given (here, XLA_FLAGS or JAX's config): data
    parallelism over them lets XLA's single-threaded loop fusions run on every core."""
    if n is None:
        if devices.cpu_device_count_given():
            return
        n = len(os.sched_getaffinity(0))
    devices.set_cpu_devices(n, "--cpu-devices")


def _train(args):
    cfg = config_lib.from_preset(args.preset, [f"train.batch_size={train.BATCH}"] + list(args.set)).validate()
    return train.bench_train(cfg, args.steps, args.warmup, args.against, args.profile), train.train_text


def _compile(args):
    cfg = config_lib.from_preset(args.preset, [f"train.batch_size={train.BATCH}"] + list(args.set)).validate()
    return train.bench_compile(cfg, sorted(set(args.layers)), args.repeats), train.compile_text


def _decode(args):
    cfg = decode.decode_config(args.preset, list(args.set), args.prompt_len, args.new_tokens)
    result = decode.bench_decode(
        cfg,
        batches=args.batch or [1, 16],
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        uncached_tokens=min(args.uncached_tokens, args.new_tokens),
        repeats=args.repeats,
        against=tuple(args.against),
    )
    return result, decode.text


def _eval(args):
    cfg = config_lib.from_preset(args.preset, list(args.set)).validate()
    shots = tuple(sorted(set(harness.parse_shots(args.shots))))
    result = scoring.bench_eval(
        cfg, items=args.items, shots=shots, batch_size=args.batch_size, repeats=args.repeats, against=args.against
    )
    return result, scoring.text


def _attention_memory(args):
    return attention_memory.attention_memory(args.seq_len, args.kernel, args.against), attention_memory.text


KINDS = {
    "train": _train,
    "compile": _compile,
    "decode": _decode,
    "eval": _eval,
    "attention-memory": _attention_memory,
}
