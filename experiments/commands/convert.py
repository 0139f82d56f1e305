"""`meshlm convert`: Hugging Face GPT-2 checkpoints into meshlm run directories and back (docs/interop.md)."""

from meshlm.experiments.commands import _flags
from meshlm.experiments.convert import export_hf, import_gpt2

DESCRIPTION = (
    "hf-gpt2 SRC --out RUN_DIR: a Hugging Face GPT-2 directory (config.json, model.safetensors or pytorch_model.bin, "
    "tokenizer.json) becomes a run directory with a step-0 checkpoint that generate, eval and train (fine-tuning) "
    "read; --set/--data choose its train and data sections. to-hf RUN_DIR --out DIR: the reverse, for GPT-2-shaped "
    "runs. See docs/interop.md."
)


def add_arguments(p) -> None:
    p.add_argument("direction", choices=("hf-gpt2", "to-hf"), help="hf-gpt2: into meshlm; to-hf: out of meshlm")
    p.add_argument("src", metavar="SRC", help="the Hugging Face directory (hf-gpt2) or the run directory (to-hf)")
    p.add_argument("--out", required=True, metavar="DIR", help="the directory to write (must not hold a run/model)")
    _flags.add_set(p, help="hf-gpt2: a train.*/data.* override")
    p.add_argument("--data", metavar="SPEC", help="hf-gpt2: the fine-tuning data (sets data.source)")
    p.add_argument("--step", type=int, metavar="N", help="to-hf: the checkpoint step (default: the latest)")


def run(args) -> None:
    if args.direction == "hf-gpt2":
        overrides = list(args.set) + ([f"data.source={args.data}"] if args.data else [])
        cfg = import_gpt2.convert(args.src, args.out, overrides)
        m = cfg.model
        print(
            f"wrote {args.out}: {m.n_layers} layers, d_model {m.d_model}, vocab {m.vocab_size}, n_ctx {m.n_ctx}; "
            f"checkpoint at step 0 (fine-tune with meshlm train --run-dir {args.out})"
        )
    else:
        out = export_hf.convert(args.src, args.out, step=args.step)
        print(f"wrote {out}: config.json, model.safetensors and the tokenizer")
