"""`meshlm convert`: Hugging Face GPT-2 checkpoints into meshlm run directories and back (docs/interop.md)."""

from meshlm.experiments.convert import export_hf, import_gpt2


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
