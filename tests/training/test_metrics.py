"""TensorBoard events: written, readable, and without importing PyTorch (tensorboardX imports it whenever it is
installed, which the test extra does)."""

import struct
import subprocess
import sys

import pytest
from tensorboardX.proto import event_pb2

_WRITE = """
import sys
from meshlm.training.metrics import MetricsWriter
writer = MetricsWriter(sys.argv[1], resume_step=0)
writer.write(3, {"loss": 2.5, "lr": 0.125})
writer.close()
print("torch imported:", "torch" in sys.modules)
"""


def _events(path) -> list:
    """The records of a TFRecord file: length (8 bytes), its CRC (4), the event, its CRC (4)."""
    data, events = path.read_bytes(), []
    while data:
        (n,) = struct.unpack("<Q", data[:8])
        events.append(event_pb2.Event.FromString(data[12 : 12 + n]))
        data = data[16 + n :]
    return events


@pytest.mark.torch  # the torch extra installs what tensorboardX would import
def test_a_run_writes_tensorboard_scalars_without_importing_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", _WRITE, str(tmp_path)], capture_output=True, text=True, check=True)
    assert "torch imported: False" in out.stdout, out.stderr[-2000:]
    (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    scalars = {(v.tag, e.step): v.simple_value for e in _events(path) for v in e.summary.value}
    assert scalars == {("loss", 3): 2.5, ("lr", 3): 0.125}
