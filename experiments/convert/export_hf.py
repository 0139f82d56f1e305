"""A meshlm run directory -> a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer files)."""

import numpy as np
from etils import epath

from meshlm.experiments.convert import gpt2_layout, hf_files
from meshlm.model.errors import ConfigError
from meshlm.training.run_dir import load_run
from meshlm.training.tokenizer import HF_CONFIG_FILE, HFTokenizer


def convert(run_dir: epath.PathLike, out: epath.PathLike, step: int | None = None) -> epath.Path:
    """Write the run's parameters (its latest or the given step) to `out`; returns the directory."""
    out = epath.Path(out)
    if (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a model; choose a new --out")
    run = load_run(run_dir, step=step)
    cfg, tok = run.config.model, run.tokenizer
    gpt2_layout.check_gpt2_shaped(cfg)
    params = _to_numpy(run.params)
    out.mkdir(parents=True, exist_ok=True)
    hf_files.write_tensors(out, gpt2_layout.to_hf(params, cfg))
    tok.save_in(out)
    if isinstance(tok, HFTokenizer):
        eos, bos = tok.id_to_token(tok.eos_id), tok.id_to_token(tok.bos_id)
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": eos,
            "bos_token": bos,
            "unk_token": eos,
            "model_max_length": cfg.n_ctx,
        }
        hf_files.write_json(out / HF_CONFIG_FILE, tokenizer_config)
    hf_files.write_json(out / "config.json", hf_files.gpt2_config(cfg, eos_id=tok.eos_id, bos_id=tok.bos_id))
    return out


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)
