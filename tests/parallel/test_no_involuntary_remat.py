"""XLA's SPMD partitioner warns "Involuntary full rematerialization" when it cannot move an array between two
shardings except by replicating it whole. The embedding lookups once did that on a data x fsdp x tensor mesh (the
gathered rows took the table's fsdp-split embedding dimension, the batch wanted the same axis)."""

import os

from meshlm.training import config as config_lib
from meshlm.training import setup as setup_lib


def test_train_step_on_a_3d_mesh_compiles_without_involuntary_rematerialization(capfd, no_compilation_cache):
    # XLA prints the warning through its C++ log; at level 2 or more it would be silent and this test vacuous.
    assert int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")) < 2, "unset TF_CPP_MIN_LOG_LEVEL: XLA warnings are hidden"
    cfg = config_lib.from_preset(
        "tiny",
        [
            "mesh.shape=data=2,fsdp=2,tensor=2",
            "train.batch_size=8",
            "train.seq_len=64",
            "model.n_layers=2",
            "model.d_model=64",
            "model.vocab_size=512",
            "data.vocab_size=512",
        ],
    ).validate()
    assert cfg.model.position == "learned"  # both lookups: the token table and the position table
    setup_lib.build(cfg).lower().compile()
    log = capfd.readouterr().err
    assert "Involuntary full rematerialization" not in log, log[-3000:]
