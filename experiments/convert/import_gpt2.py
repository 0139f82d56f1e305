"""A Hugging Face GPT-2 directory -> a meshlm run directory at step 0.

The run holds config.json, the tokenizer (tokenizer.json, and tokenizer_config.json if the source has one) and a
complete step-0 checkpoint: the converted parameters with a fresh optimizer state, exactly the state the trainer
would create itself. So `meshlm generate` and `meshlm eval` read it like any run, and `meshlm train --run-dir`
fine-tunes it, starting the data iterator fresh, under the train/data sections chosen here with `--set`.
"""

import jax
from etils import epath
from flax import nnx

from meshlm.experiments.convert import gpt2_layout, hf_files
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import abstract_model
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner
from meshlm.training import config as config_lib
from meshlm.training import run_dir as run_dir_lib
from meshlm.training import setup as setup_lib
from meshlm.training.atomic import write_atomic
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.data_config import DataConfig
from meshlm.training.tokenizer import FILE_NAMES, HF_CONFIG_FILE, Tokenizer, find_in


def convert(src: epath.PathLike, out: epath.PathLike, overrides: list[str] = ()) -> config_lib.Config:
    """Write the run directory `out` from the HF directory `src`; returns the run's config."""
    src, out = epath.Path(src), epath.Path(out)
    if (out / run_dir_lib.CONFIG).exists():
        raise ConfigError(f"{out} already holds a run; choose a new --out")
    model_cfg = hf_files.model_config(hf_files.read_config(src))
    tokenizer_path = find_in(src)
    if tokenizer_path is None:
        raise ConfigError(f"{src} has no {' or '.join(FILE_NAMES)}; copy the model's tokenizer file there")
    tokenizer = Tokenizer.load(tokenizer_path)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but config.json's vocab_size={model_cfg.vocab_size}"
        )
    cfg = config_lib.Config(model=model_cfg, data=DataConfig(vocab_size=tokenizer.vocab_size))
    cfg = config_lib.apply_overrides(cfg, list(overrides)).validate()
    params = gpt2_layout.to_meshlm(hf_files.read_tensors(src), model_cfg)
    _check_shapes(params, cfg)

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_in(out)
    if (src / HF_CONFIG_FILE).exists():  # it names the special tokens of a tokenizer.json
        write_atomic(out / HF_CONFIG_FILE, (src / HF_CONFIG_FILE).read_bytes())
    _save_step_zero(out, cfg, params)
    config_lib.save(cfg, out / run_dir_lib.CONFIG)  # last: a run directory with a config is a complete one
    return cfg


def _check_shapes(params: dict, cfg: config_lib.Config) -> None:
    """--set may change how the model computes (dtype, attention, remat), never its parameters' shapes."""
    expected = nnx.to_pure_dict(nnx.state(abstract_model(cfg.model), nnx.Param))
    got, want = jax.tree.map(lambda x: x.shape, params), jax.tree.map(lambda x: x.shape, expected)
    if got != want:
        raise ConfigError("the --set overrides change the model's parameter shapes; override train.* and data.* only")


def step_zero_state(cfg: config_lib.Config, params: dict):
    """The converted parameters in the state training's one setup builds (its optimizer and schedule), on one
    device: a fine-tuning run restores it onto its own mesh."""
    setup = setup_lib.build(cfg, Partitioner.build(MeshConfig(shape="data=1"), jax.devices()[:1]))
    return setup.state_with_params(params)


def _save_step_zero(out: epath.Path, cfg: config_lib.Config, params: dict) -> None:
    checkpointer = Checkpointer(out / run_dir_lib.CHECKPOINTS, keep=cfg.train.keep_checkpoints, async_save=False)
    # No data-iterator state: fine-tuning reads its data from the start.
    checkpointer.save(step_zero_state(cfg, params), None, 0)
    checkpointer.close()
