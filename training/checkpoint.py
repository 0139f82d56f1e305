"""Orbax checkpoints of the train state and the data iterator; only finished saves are ever restored."""

import jax
import orbax.checkpoint as ocp
from etils import epath

from meshlm.parallel.distributed import gather_json
from meshlm.training.errors import DataError
from meshlm.training.train_step import TrainState


class Checkpointer:
    def __init__(self, directory: epath.PathLike, keep: int, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
        # Orbax writes each step into a temporary folder and renames it when complete, so a killed run
        # leaves at worst an unfinished folder that latest_step() ignores.
        directory = epath.Path(directory)
        # A URL (gs://...) goes to orbax as it is; a local path is made absolute, as orbax requires.
        directory = directory if "://" in str(directory) else directory.absolute()
        self.manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, data_state: dict, step: int) -> None:
        # Every process reads its own documents, but orbax writes JSON from process 0 only: it writes them all.
        data = {"processes": gather_json(data_state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data))
        self.manager.save(step, args=args)

    def restore(self, abstract_state: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        step = self.latest_step() if step is None else step
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
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
        item = {"params": abstract_params}
        # The target shardings travel in restore_args: without them orbax would use the saved mesh's devices.
        restore = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        )
        args = ocp.args.Composite(state=restore)
        return self.manager.restore(step, args=args).state["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
