"""The run directory: everything a run needs to resume, and everything a sweep or `generate` reads back.

RUN_DIR/config.json       the resolved config (plain JSON)
RUN_DIR/tokenizer.model   sentencepiece model trained on the training split (or copied in)
RUN_DIR/metrics.jsonl     one JSON object per logged step
RUN_DIR/tensorboard/      TensorBoard event files
RUN_DIR/checkpoints/N/    orbax checkpoints: train state and data-iterator state at step N
RUN_DIR/samples.txt       text sampled at the end of training
"""

import dataclasses
import pathlib

import jax
from flax import nnx

from meshlm.experiments import config as config_lib
from meshlm.model.errors import ConfigError
from meshlm.model.transformer import Transformer

CONFIG = "config.json"
TOKENIZER = "tokenizer.model"
CHECKPOINTS = "checkpoints"


def resolve_config(run_dir: pathlib.Path, requested: config_lib.Config | None) -> config_lib.Config:
    """The config of this run: the saved one when resuming (a changed train.steps extends the run, a changed mesh
    reshards the checkpoint onto the new one)."""
    saved_path = run_dir / CONFIG
    if not saved_path.exists():
        if requested is None:
            raise ConfigError(f"{run_dir} holds no run; pass --preset NAME to start one there")
        return requested
    saved = config_lib.load(saved_path)
    if requested is None:
        return saved
    if (
        dataclasses.replace(
            requested, train=dataclasses.replace(requested.train, steps=saved.train.steps), mesh=saved.mesh
        )
        != saved
    ):
        changed = [k for k, v in config_lib.to_dict(requested).items() if config_lib.to_dict(saved)[k] != v]
        raise ConfigError(
            f"{run_dir} already holds a run with a different config (sections differing: {', '.join(changed)}); "
            "re-run with the same options to resume, or choose a new --run-dir"
        )
    return requested


def save_config(run_dir: pathlib.Path, cfg: config_lib.Config) -> None:
    if jax.process_index() == 0:
        tmp = run_dir / (CONFIG + ".tmp")
        config_lib.save(cfg, tmp)
        tmp.replace(run_dir / CONFIG)


def load_for_inference(run_dir) -> tuple[Transformer, object]:
    """The latest checkpoint's model and the run's tokenizer."""
    from meshlm.parallel.config import MeshConfig
    from meshlm.parallel.sharding import Partitioner, model_axes
    from meshlm.parallel.sharding import abstract as with_shardings
    from meshlm.training.checkpoint import Checkpointer
    from meshlm.training.tokenizer import Tokenizer

    run_dir = pathlib.Path(run_dir)
    cfg = resolve_config(run_dir, None)
    checkpointer = Checkpointer(run_dir / CHECKPOINTS, keep=cfg.train.keep_checkpoints)
    if checkpointer.latest_step() is None:
        raise ConfigError(f"{run_dir} has no finished checkpoint yet; train longer (train.checkpoint_every) and retry")
    abstract = nnx.eval_shape(lambda: Transformer(cfg.model, nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract)
    abstract_params = nnx.to_pure_dict(abstract_params)
    # Onto this process's first device, whatever mesh the run was trained on: orbax reshards.
    shardings = Partitioner.build(MeshConfig()).param_shardings(abstract_params, model_axes(cfg.model))
    params = checkpointer.restore_params(with_shardings(abstract_params, shardings))
    checkpointer.close()
    return nnx.merge(graphdef, params), Tokenizer.load(run_dir / TOKENIZER)
