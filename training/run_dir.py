"""The run directory: everything a run needs to resume, and everything a sweep, `generate` or `eval` reads back.

    RUN_DIR/config.json       the resolved config (plain JSON)
    RUN_DIR/tokenizer.model   sentencepiece model trained on the training split (or copied in), or
    RUN_DIR/tokenizer.json    a Hugging Face tokenizer (a converted GPT-2)
    RUN_DIR/metrics.jsonl     one JSON object per logged step
    RUN_DIR/goodput.json      wall time split into productive steps and badput by cause (training/goodput.py)
    RUN_DIR/tensorboard/      TensorBoard event files (train.tracker.kind=tensorboard, the default)
    RUN_DIR/wandb-run-id      the W&B run this run logs to, so a resumed run continues it (train.tracker.kind=wandb)
    RUN_DIR/wandb/            W&B's local files (a local RUN_DIR; else $WANDB_DIR or ./wandb)
    RUN_DIR/checkpoints/N/    orbax checkpoints: train state and data-iterator state at step N

RUN_DIR may be any path orbax and etils.epath can write, `gs://bucket/run` included: paths travel as epath.Path,
never through pathlib, which would turn the URL into a local folder `gs:/bucket/run`.
"""

import dataclasses
import sys

import jax
from etils import epath
from flax import nnx

from meshlm.model.errors import ConfigError
from meshlm.model.generate import SamplingConfig, generate
from meshlm.model.transformer import Transformer, abstract_model
from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner, abstract, model_axes
from meshlm.training import config as config_lib
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.tokenizer import Tokenizer, find_in

CONFIG = "config.json"
TOKENIZER = "tokenizer.model"
CHECKPOINTS = "checkpoints"


# The install that brings the filesystem of a URL scheme (etils.epath reaches URLs through fsspec).
EXTRAS = {"gs": "pip install 'meshlm[gcs]'", "gcs": "pip install 'meshlm[gcs]'"}


def check_directory(run_dir: epath.Path) -> None:
    """A ConfigError when run_dir, or a folder above it, is a file rather than a directory, or when its URL scheme's
    filesystem is not installed."""
    for path in [run_dir, *run_dir.parents]:
        try:
            exists = path.exists()
        except ImportError:  # fsspec knows the scheme but its package is missing
            scheme = str(run_dir).split("://", 1)[0]
            fix = EXTRAS.get(scheme, f"install the fsspec filesystem package for {scheme}://")
            raise ConfigError(
                f"--run-dir {run_dir} needs the {scheme}:// filesystem, which is not installed; {fix}"
            ) from None
        if not exists:
            continue
        if path.is_dir():
            return
        if path == run_dir:
            raise ConfigError(f"--run-dir {run_dir} is a file, not a directory; choose another --run-dir")
        raise ConfigError(f"{path} is a file, so --run-dir {run_dir} cannot be made under it; choose another --run-dir")


def resolve_config(run_dir: epath.PathLike, requested: config_lib.Config | None) -> config_lib.Config:
    """The config of this run: the saved one when resuming (a changed train.steps or train.tokens extends the run,
    a changed mesh reshards the checkpoint onto the new one, a changed train.tracker logs the rest elsewhere)."""
    saved_path = epath.Path(run_dir) / CONFIG
    if not saved_path.exists():
        if requested is None:
            raise ConfigError(
                f"{run_dir} holds no run (no {CONFIG}); train one there first: meshlm train --preset NAME --run-dir "
                f"{run_dir}"
            )
        return requested
    saved = config_lib.load(saved_path)
    if requested is None:
        return saved
    same_run = dataclasses.replace(
        requested,
        train=dataclasses.replace(
            requested.train, steps=saved.train.steps, tokens=saved.train.tokens, tracker=saved.train.tracker
        ),
        mesh=saved.mesh,
    )
    if same_run != saved:
        changed = [k for k, v in config_lib.to_dict(requested).items() if config_lib.to_dict(saved)[k] != v]
        raise ConfigError(
            f"{run_dir} already holds a run with a different config (sections differing: {', '.join(changed)}); "
            "re-run with the same options to resume, or choose a new --run-dir"
        )
    return requested


def save_config(run_dir: epath.PathLike, cfg: config_lib.Config) -> None:
    """Write the config unless the saved one already says the same: a resumed run leaves the file untouched."""
    path = epath.Path(run_dir) / CONFIG
    if jax.process_index() == 0 and not (path.exists() and config_lib.load(path) == cfg):
        config_lib.save(cfg, path)


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run, loaded: its config, tokenizer, model (parameters merged in), parameters and step."""

    path: epath.Path
    config: config_lib.Config
    tokenizer: Tokenizer
    model: Transformer
    params: dict
    step: int
    partitioner: Partitioner  # the mesh the parameters were restored onto

    def generate(self, prompts: list[str], sampling: SamplingConfig | None = None) -> list[str]:
        """Continuations of text prompts (each starts a new document, as in training)."""
        tok = self.tokenizer
        sampling = sampling or SamplingConfig(stop_tokens=(tok.eos_id,), vocab_limit=tok.vocab_size)
        ids = [[tok.eos_id] + tok.encode(p) for p in prompts]
        return [tok.decode([t for t in new if t != tok.eos_id]) for new in generate(self.model, ids, sampling)]


def load_config_and_tokenizer(path: epath.PathLike) -> tuple[config_lib.Config, Tokenizer]:
    """A run's saved config and tokenizer, without its parameters."""
    path = epath.Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {path} is a file, not a run directory; pass the directory meshlm train wrote")
    cfg = resolve_config(path, None).validate()
    tokenizer = Tokenizer.load(find_in(path) or path / TOKENIZER)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"{path / TOKENIZER} has {tokenizer.vocab_size} tokens but the model only {cfg.model.vocab_size}: it is "
            "not this run's tokenizer; restore the one meshlm train wrote"
        )
    return cfg, tokenizer


def load_run(path: epath.PathLike, mesh: MeshConfig | None = None, step: int | None = None) -> Run:
    """The run at `path` at its latest (or the given) complete checkpoint, its parameters restored onto `mesh`
    (default: this process's first device), whatever mesh wrote them: orbax reshards."""
    path = epath.Path(path)
    cfg, tokenizer = load_config_and_tokenizer(path)
    no_checkpoint = ConfigError(
        f"{path} has no finished checkpoint yet; train longer (train.checkpoint_every) and retry"
    )
    if not (path / CHECKPOINTS).exists():  # a reader creates nothing, not even an empty checkpoints folder
        raise no_checkpoint
    checkpointer = Checkpointer(path / CHECKPOINTS, keep=cfg.train.keep_checkpoints)
    if checkpointer.latest_step() is None:
        checkpointer.close()
        raise no_checkpoint
    graphdef, abstract_params = nnx.split(abstract_model(cfg.model))
    abstract_params = nnx.to_pure_dict(abstract_params)
    partitioner = Partitioner.build(mesh or MeshConfig())
    shardings = partitioner.param_shardings(abstract_params, model_axes(cfg.model))
    target = abstract(abstract_params, shardings)
    try:
        if step is None:  # the newest intact one; a reader reports damage but moves nothing (training may be running)
            step, params = checkpointer.restore_latest_intact(
                lambda s: (s, checkpointer.restore_params(target, step=s)), log=_warn, move_aside=False
            )
        else:
            params = checkpointer.restore_params(target, step=step)
    finally:
        checkpointer.close()
    return Run(
        path=path,
        config=cfg,
        tokenizer=tokenizer,
        model=nnx.merge(graphdef, params),
        params=params,
        step=step,
        partitioner=partitioner,
    )


def _warn(message: str) -> None:
    print(f"meshlm: warning: {message}", file=sys.stderr)
