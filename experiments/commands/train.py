"""`meshlm train`: build the config from a preset and overrides, then hand it to the trainer."""

import dataclasses

import jax
from etils import epath

from meshlm.experiments.commands import _flags
from meshlm.experiments.evaluation import harness
from meshlm.model.generate import SamplingConfig
from meshlm.parallel import distributed
from meshlm.training import config as config_lib
from meshlm.training.atomic import write_atomic
from meshlm.training.errors import PREEMPTED_EXIT_CODE
from meshlm.training.run_dir import check_directory, load_run, resolve_config
from meshlm.training.trackers import open_tracker
from meshlm.training.trainer import Trainer

DESCRIPTION = (
    "Train a preset on text. The run directory receives config.json, tokenizer.model, metrics.jsonl, TensorBoard "
    "events (or a W&B run: --tracker wandb) and orbax checkpoints; running the same command again resumes from the "
    "latest complete checkpoint. On SIGTERM or SIGINT (a preemption) every process stops at one step, checkpoints it "
    f"and exits with code {PREEMPTED_EXIT_CODE}: re-run the same command to resume there."
)


def add_arguments(p) -> None:
    _flags.add_config_args(p, preset_required=False)
    p.add_argument("--run-dir", required=True, metavar="DIR", help="where the run lives (created if missing)")
    p.add_argument("--data", metavar="SPEC", help="shakespeare (default, embedded) | tfds:NAME[/CONFIG] | text:GLOB")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    _flags.add_tracker(
        p,
        help="where metrics, evaluations and samples go besides metrics.jsonl: tensorboard (default) or wandb "
        "(pip install 'meshlm[wandb]'; a resumed run continues its W&B run); sets train.tracker.kind",
    )
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
        "--profile",
        metavar="START:STOP",
        help="a jax.profiler trace of the steps after START up to STOP into RUN_DIR/profile (sets train.profile)",
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
        "--num-processes",
        type=_flags.at_least(1),
        metavar="N",
        help="multi-process: how many (env MESHLM_NUM_PROCESSES)",
    )
    p.add_argument(
        "--process-id",
        type=_flags.at_least(0),
        metavar="I",
        help="multi-process: this one's index, 0 first (env MESHLM_PROCESS_ID)",
    )
    p.add_argument(
        "--cpu-devices",
        type=_flags.at_least(1),
        metavar="N",
        help="simulated CPU devices in this process (env MESHLM_CPU_DEVICES)",
    )


def run(args) -> None:
    flags = distributed.DistributedConfig.from_env().with_flags(
        args.coordinator, args.num_processes, args.process_id, args.cpu_devices
    )
    distributed.initialize(flags)  # before anything touches a device
    overrides = (
        list(args.set)
        + ([f"data.source={args.data}"] if args.data else [])
        + ([f"mesh.shape={args.mesh}"] if args.mesh else [])
        + ([f"train.profile={args.profile}"] if args.profile else [])
        + ([f"train.tracker.kind={args.tracker}"] if args.tracker else [])
    )
    cfg = config_lib.from_preset(args.preset, overrides).validate() if args.preset else None
    if cfg is None and overrides:
        run_dir = epath.Path(args.run_dir)
        check_directory(run_dir)
        cfg = config_lib.apply_overrides(resolve_config(run_dir, None), overrides)
    trainer = Trainer(cfg, args.run_dir)
    if args.eval_tasks:
        trainer.add_hook(args.eval_every or trainer.cfg.train.eval_every, evaluation_hook(trainer, args))
    trainer.run(progress=not args.no_progress)
    if args.sample and jax.process_count() == 1:  # sampling reads every parameter shard: one process only
        texts = write_samples(args.run_dir, args.sample)
        tracker = open_tracker(trainer.cfg.train.tracker, args.run_dir, dataclasses.asdict(trainer.cfg), trainer.log)
        tracker.table("samples", ["prompt", "text"], [list(pair) for pair in zip(args.sample, texts)])
        tracker.close()


def evaluation_hook(trainer: Trainer, args):
    """Few-shot evaluation on the training mesh every N steps, logged as eval/TASK/METRIC@K with the other
    metrics, so in-context learning can be watched as it appears."""
    tasks = [t for item in args.eval_tasks for t in item.split(",") if t.strip()]
    needs_text = any(t in ("icl", "icl_score", "induction", "perplexity") for t in tasks)
    return harness.make_hook(
        trainer.setup.graphdef,
        trainer.pipeline.tokenizer,
        tasks,
        heldout=harness.heldout_texts(trainer.cfg) if needs_text else (),
        shots=harness.parse_shots(args.eval_shots),
        limit=args.eval_limit,
        partitioner=trainer.setup.partitioner,
    )


def write_samples(run_dir: str, prompts: list[str]) -> list[str]:
    """Sample each prompt from the finished run into RUN_DIR/samples.txt, print them and return them."""
    run = load_run(run_dir)
    tok, cfg = run.tokenizer, run.config
    sampling = SamplingConfig(
        max_new_tokens=min(96, cfg.model.n_ctx // 2),
        temperature=0.8,
        top_k=50,
        stop_tokens=(tok.eos_id,),
        seed=cfg.train.seed,
        vocab_limit=tok.vocab_size,
    )
    texts = [p + text for p, text in zip(prompts, run.generate(prompts, sampling))]
    write_atomic(run.path / "samples.txt", "".join(f"--- sample {i}\n{text}\n" for i, text in enumerate(texts)))
    for text in texts:
        print("--- sample\n" + text)
    return texts
