"""Run directories at URLs (gs://bucket/run): every writer gets the URL unmangled, never a local `gs:` folder.

An in-memory fsspec filesystem stands in for Google Cloud Storage (etils.epath reaches gs:// through fsspec when
TensorFlow is absent), so config, tokenizer and metrics really travel through a non-local backend, offline. Orbax's
array writes go through tensorstore's own GCS driver and TensorBoard's through google-cloud-storage: for those the
test checks that the URL reaches them intact (docs/architecture.md says what was and was not exercised)."""

import os
import subprocess
import sys

import fsspec
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from meshlm.training import config as config_lib
from meshlm.training import metrics as metrics_lib
from meshlm.training import run_dir as run_dir_lib
from meshlm.training.checkpoint import Checkpointer
from meshlm.training.tokenizer import Tokenizer

RUN = "gs://bucket/run"


class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")

    def __init__(self, *args, finalize_on_close=None, **kwargs):  # epath passes GCS-only options
        super().__init__(*args, **kwargs)


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
    for name in ("gs", "gcs"):
        fsspec.register_implementation(name, FakeGCS, clobber=True)
    monkeypatch.chdir(tmp_path)  # a mangled path would appear here as a folder named "gs:"
    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = [""]
    yield tmp_path
    assert not os.path.exists(tmp_path / "gs:"), "a URL was turned into a local folder"
    FakeGCS.store.clear()


def test_config_round_trips_through_a_url_and_guards_the_run(fake_gcs):
    cfg = config_lib.from_preset("tiny", ["train.steps=7"])
    epath.Path(RUN).mkdir(parents=True)
    run_dir_lib.save_config(RUN, cfg)
    assert f"{RUN}/config.json" in FakeGCS.store
    assert run_dir_lib.resolve_config(RUN, None) == cfg
    with pytest.raises(ValueError, match="different config"):
        run_dir_lib.resolve_config(RUN, config_lib.from_preset("tiny", ["model.n_layers=1"]))


def test_tokenizer_saves_and_loads_at_a_url(fake_gcs):
    text = ["the king and the queen\n", "a lady of the night\n"] * 50
    trained = Tokenizer.train(text, vocab_size=300, path=f"{RUN}/tokenizer.model")
    loaded = Tokenizer.load(f"{RUN}/tokenizer.model")
    assert loaded.encode("the king of night") == trained.encode("the king of night")
    assert [p.name for p in epath.Path(RUN).iterdir()] == ["tokenizer.model"]  # no temporary file left


def test_metrics_are_written_and_resumed_at_a_url(fake_gcs, monkeypatch):
    logdirs = []

    class Recorder:
        def __init__(self, logdir, purge_step=None):
            logdirs.append(logdir)

        def add_scalar(self, *args):
            pass

        def close(self):
            pass

    monkeypatch.setattr("tensorboardX.SummaryWriter", Recorder)
    epath.Path(RUN).mkdir(parents=True)
    writer = metrics_lib.MetricsWriter(RUN, resume_step=0)
    for step in (1, 2, 3):
        writer.write(step, {"loss": 1.0 / step})
    writer.close()
    resumed = metrics_lib.MetricsWriter(RUN, resume_step=2)  # steps after the checkpoint are forgotten
    resumed.write(3, {"loss": 0.25})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in metrics_lib.read(RUN)] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert logdirs == [f"{RUN}/tensorboard"] * 2


def test_checkpointer_hands_orbax_the_url(fake_gcs, monkeypatch):
    # Orbax asks the bucket (through google-cloud-storage, the `gcs` extra) whether it has a hierarchical namespace.
    monkeypatch.setattr("orbax.checkpoint._src.path.gcs_utils.is_hierarchical_namespace_enabled", lambda path: False)
    checkpointer = Checkpointer(epath.Path(RUN) / "checkpoints", keep=2)
    assert str(checkpointer.manager.directory) == f"{RUN}/checkpoints"
    assert checkpointer.latest_step() is None
    checkpointer.close()


def test_a_gs_run_dir_without_the_gcs_extra_is_one_line_naming_the_install(tmp_path):
    # A fresh process: fsspec and epath cache the filesystems the other tests registered for gs://.
    probe = (
        "import sys; sys.modules['gcsfs'] = None  # as on an install without the gcs extra\n"
        "from meshlm.experiments.cli import main\n"
        "sys.exit(main(['train', '--preset', 'tiny', '--run-dir', 'gs://bucket/run', '--set', 'train.steps=1']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "pip install 'meshlm[gcs]'" in proc.stderr
    assert not (tmp_path / "gs:").exists()
