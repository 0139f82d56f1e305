"""A checkpoint written on one mesh restores onto another: orbax reads each shard where the new shardings want it."""

import jax
import numpy as np

from meshlm.parallel.config import MeshConfig
from meshlm.parallel.sharding import Partitioner, abstract, model_axes
from meshlm.training.checkpoint import Checkpointer
from tests.parallel.helpers import MODEL, initial_state


def test_checkpoint_from_fsdp_restores_onto_data_fsdp_tensor(tmp_path):
    host = initial_state()
    source = Partitioner.build(MeshConfig("fsdp=8"))
    state = jax.device_put(host, source.state_shardings(host, model_axes(MODEL)))
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=1, async_save=False)
    checkpointer.save(state, {"position": 3}, step=1)

    target = Partitioner.build(MeshConfig("data=2,fsdp=2,tensor=2"))
    shardings = target.state_shardings(host, model_axes(MODEL))
    restored, data_state = checkpointer.restore(abstract(host, shardings))
    checkpointer.close()

    assert data_state == {"position": 3}
    w_in = restored.params["blocks"]["mlp"]["w_in"]
    assert w_in.sharding == shardings.params["blocks"]["mlp"]["w_in"] and tuple(w_in.sharding.spec) == (
        None,
        "fsdp",
        "tensor",
    )
    assert restored.opt_state[1][0].mu["blocks"]["mlp"]["w_in"].sharding == w_in.sharding  # AdamW moments follow
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored), host)
