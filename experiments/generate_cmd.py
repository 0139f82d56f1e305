"""`meshlm generate`: prompts in, sampled continuations out."""

from flax import nnx

from meshlm.model.errors import ConfigError
from meshlm.model.generate import SamplingConfig, generate
from meshlm.model.transformer import Transformer
from meshlm.training import config as config_lib
from meshlm.training.run_dir import load_run


class ByteCodec:
    """UTF-8 bytes as token ids, for a randomly initialised preset that has no tokenizer."""

    eos_id = 0
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 < i < 256).decode("utf-8", errors="replace")


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
