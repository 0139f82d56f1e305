"""Orbax checkpoints of the train state and the data iterator; only finished, intact saves are ever restored.

Orbax writes each step into a temporary folder and renames it when complete, so a killed run leaves at worst an
unfinished folder that `all_steps()` ignores. What the rename cannot catch (a file truncated or bytes changed after
the save: a full disk, a bad copy, bit rot) the checksums do: every save stores a position-weighted checksum of
each array's bits in its JSON item, and a restore recomputes and compares them. An unreadable or mismatching
checkpoint is reported in one line and the previous one is used; the trainer moves it aside (never deletes it)."""

import shutil
from collections.abc import Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from meshlm.model.errors import ConfigError
from meshlm.parallel.distributed import first_process_first, gather_json
from meshlm.training.errors import DataError
from meshlm.training.train_step import TrainState, leaf_name

CORRUPT = "corrupt_checkpoints"  # next to the checkpoints folder: where unreadable checkpoints are moved


class CorruptCheckpoint(Exception):
    """A checkpoint whose files cannot be read or do not match the checksums written with them."""


@jax.jit
def checksums(tree) -> dict:
    """{leaf path: uint32} sums of each array's bits weighted by position, so a changed or moved word shows."""

    def one(x):
        bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{x.dtype.itemsize * 8}")).astype(jnp.uint32)
        weight = jnp.arange(1, bits.size + 1, dtype=jnp.uint32) * jnp.uint32(2654435761)
        return jnp.sum(bits.ravel() * weight, dtype=jnp.uint32)

    return {leaf_name(path): one(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _host_checksums(tree) -> dict[str, int]:
    return {k: int(v) for k, v in jax.device_get(checksums(tree)).items()}


class Checkpointer:
    def __init__(self, directory: epath.PathLike, keep: int, async_save: bool = True, keep_steps: tuple[int, ...] = ()):
        """The `keep` latest checkpoints, and those of `keep_steps` whatever comes after them."""
        policies = ocp.checkpoint_managers
        kept = policies.AnyPreservationPolicy([policies.LatestN(n=keep), policies.CustomSteps(keep_steps)])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=kept, create=True, enable_async_checkpointing=async_save
        )
        directory = epath.Path(directory)
        # A URL (gs://...) goes to orbax as it is; a local path is made absolute, as orbax requires.
        self.directory = directory if "://" in str(directory) else directory.absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, data_state: dict, step: int) -> None:
        # Every process reads its own documents, but orbax writes JSON from process 0 only: it writes them all.
        data = {"processes": gather_json(data_state), "checksums": _host_checksums(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data))
        self.manager.save(step, args=args)

    def restore(self, abstract_state: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """The state and this process's data-iterator state at `step` (default: the latest)."""
        step = self.latest_step() if step is None else step
        self._check_shapes(step, abstract_state)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        restored = self._read(step, args)
        _verify(step, restored.state, restored.data.get("checksums"))
        data = restored.data["processes"]
        if len(data) != jax.process_count():
            raise DataError(
                f"the checkpoint of step {step} was written by {len(data)} process(es); "
                f"resume with as many, not {jax.process_count()}"
            )
        return restored.state, data[jax.process_index()]

    def restore_params(self, abstract_params: dict, step: int | None = None) -> dict:
        """Only the parameters, for inference: the optimizer state is never read."""
        step = self.latest_step() if step is None else step
        self._check_shapes(step, {"params": abstract_params})
        item = {"params": abstract_params}
        # The target shardings travel in restore_args: without them orbax would use the saved mesh's devices.
        restore = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        )
        restored = self._read(step, ocp.args.Composite(state=restore, data=ocp.args.JsonRestore()))
        params = restored.state["params"]
        saved = restored.data.get("checksums")
        _verify(step, {"params": params}, saved and {k: v for k, v in saved.items() if k.startswith("params/")})
        return params

    def restore_latest_intact(self, restore: Callable[[int], object], log: Callable[[str], None], move_aside: bool):
        """restore(step) for the newest checkpoint that reads back intact: each one that does not is reported in
        one line (and, with move_aside, moved to CORRUPT so that its step can be written again). None if there
        are no checkpoints; ConfigError if none of them is intact."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        for step in steps:
            try:
                return restore(step)
            except CorruptCheckpoint as e:
                where = self._move_aside(step) if move_aside else None
                older = [s for s in steps if s < step]
                log(
                    f"checkpoint {step} in {self.directory} is damaged ({e}); "
                    + (f"moved to {where}; " if where else "")
                    + (f"using step {older[0]}" if older else "no older checkpoint")
                )
        if steps:
            raise ConfigError(
                f"no intact checkpoint in {self.directory} (tried steps {', '.join(map(str, steps))}); restore one "
                "from a copy, or move the folder aside to start the run again"
            )
        return None

    def _read(self, step: int, args):
        try:
            return self.manager.restore(step, args=args)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # orbax and tensorstore raise plain Exception, ValueError or JSON errors
            raise CorruptCheckpoint(_first_line(e)) from None

    def _check_shapes(self, step: int, abstract_tree) -> None:
        """A ConfigError (not corruption) when the checkpoint holds arrays of another model or shape."""
        try:
            saved = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state").item_metadata.tree
        except Exception as e:
            raise CorruptCheckpoint(f"unreadable metadata: {_first_line(e)}") from None
        saved_shapes = {leaf_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(saved)}
        for path, want in jax.tree_util.tree_leaves_with_path(abstract_tree):
            key = leaf_name(path)
            have = saved_shapes.get(key)
            if have != tuple(want.shape):
                found = "no such array" if have is None else f"shape {have}"
                raise ConfigError(
                    f"checkpoint {step} in {self.directory} does not fit this model: {key} needs shape "
                    f"{tuple(want.shape)}, the checkpoint has {found}; it was written with another config: use the "
                    "run directory it came from, or a new --run-dir"
                )

    def _move_aside(self, step: int) -> epath.Path:
        """Process 0 renames the folder into CORRUPT; then every process forgets the step, so it can be saved again."""

        def move() -> epath.Path:
            target, n = self.directory.parent / CORRUPT / str(step), 1
            while target.exists():
                target, n = self.directory.parent / CORRUPT / f"{step}.{n}", n + 1
            if jax.process_index() == 0:
                target.parent.mkdir(parents=True, exist_ok=True)
                (self.directory / str(step)).rename(target)
            self.manager.reload()
            return target

        return first_process_first(move)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def has_step(directory: epath.PathLike, step: int) -> bool:
    """Whether `directory` holds the finished checkpoint of `step` (one still being written does not count)."""
    path = epath.Path(directory) / str(step)
    return path.exists() and ocp.step.is_path_finalized(path)


def copy_step(source: epath.PathLike, target: epath.PathLike, step: int) -> None:
    """Start the checkpoints folder `target` with another run's checkpoint of `step` from `source`, unless it holds
    one already (a sweep's cooldown branch starts from its trunk's step, then resumes its own saves). The copy
    appears whole or not at all, and `source` is only read. Local (or mounted) folders."""
    source, target = epath.Path(source), epath.Path(target)
    if target.exists() and any(p.name.isdigit() for p in target.iterdir()):
        return
    if not has_step(source, step):
        raise ConfigError(f"{source} holds no finished checkpoint of step {step} to start from; train that run first")
    partial = target.parent / f"{target.name}.{step}.copying"  # a killed copy's is replaced
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(source / str(step), partial)
    target.mkdir(parents=True, exist_ok=True)
    partial.rename(target / str(step))


def _verify(step: int, tree, saved: dict | None) -> None:
    if saved is None:  # written before checksums existed
        return
    now = _host_checksums(tree)
    bad = sorted(k for k in now if saved.get(k) != now[k])
    if bad:
        raise CorruptCheckpoint(f"checksum mismatch in {len(bad)} array(s), e.g. {bad[0]}")


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
