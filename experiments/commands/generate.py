"""`meshlm generate`: prompts in, sampled continuations out."""

from flax import nnx

from meshlm.experiments.commands import _flags
from meshlm.model.errors import ConfigError
from meshlm.model.generate import SamplingConfig, generate
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from meshlm.training.run_dir import load_run
from meshlm.training.tokenizer import ByteCodec

DESCRIPTION = (
    "Sample continuations of one or more prompts with a KV cache. With --run-dir the trained model and its tokenizer "
    "are loaded; with --preset a randomly initialised model reads and writes UTF-8 bytes."
)


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", metavar="DIR", help="a directory written by meshlm train")
    src.add_argument("--preset", metavar="NAME", help="a preset, randomly initialised (for trying the machinery)")
    _flags.add_set(p, help="override one config field (with --preset)")
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="a prompt (repeat for a batch); default: one empty-context prompt",
    )
    p.add_argument(
        "--max-new-tokens",
        type=_flags.at_least(1),
        default=64,
        metavar="N",
        help="tokens to generate per prompt (default 64)",
    )
    p.add_argument(
        "--temperature", type=_flags.number(0, None), default=0.8, metavar="T", help="0 = greedy (default 0.8)"
    )
    p.add_argument(
        "--top-k",
        type=_flags.at_least(0),
        default=0,
        metavar="K",
        help="sample among the K most likely tokens (0 = all)",
    )
    p.add_argument(
        "--top-p",
        type=_flags.number(0, 1, low_open=True),
        default=1.0,
        metavar="P",
        help="nucleus sampling mass (1 = off)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-document token")


def run(args) -> None:
    if args.run_dir and args.set:
        raise ConfigError("--set changes a --preset's config; a run directory's config is fixed: drop --set")
    if args.run_dir:
        run = load_run(args.run_dir)
        model, codec = run.model, run.tokenizer
    else:
        cfg = config_lib.from_preset(args.preset, args.set).validate()
        if cfg.model.vocab_size < 256:
            raise ConfigError(
                f"a random preset reads UTF-8 bytes and needs model.vocab_size >= 256, got {cfg.model.vocab_size}"
            )
        model, codec = Transformer(cfg.model, nnx.Rngs(cfg.train.seed)), ByteCodec()
    if args.top_k > codec.vocab_size:
        raise ConfigError(
            f"--top-k {args.top_k} exceeds the vocabulary of {codec.vocab_size} tokens; use 0 (all) or at most "
            f"{codec.vocab_size}"
        )
    prompts = args.prompt or [""]
    ids = [[codec.eos_id] + codec.encode(p) for p in prompts]  # EOS opens every document in training
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_tokens=() if args.no_stop else (codec.eos_id,),
        seed=args.seed,
        vocab_limit=codec.vocab_size,
    )
    for prompt, new in zip(prompts, generate(model, ids, sampling)):
        print(f"--- prompt: {prompt!r}")
        print(prompt + codec.decode([t for t in new if t != codec.eos_id]))
