"""Every parameter's PartitionSpec, per preset and strategy, against golden/<preset>.json.

The golden files were reviewed by hand and are only ever rewritten by an explicit command
(`python -m tests.parallel.regen_golden`, see that file); this test never writes them."""

import json

import pytest

from meshlm.model import presets
from tests.parallel.regen_golden import GOLDEN, snapshot


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_partition_specs_match_golden(name):
    path = GOLDEN / f"{name}.json"
    assert path.exists(), f"no golden file {path}; write it with python -m tests.parallel.regen_golden and review it"
    assert snapshot(name) == json.loads(path.read_text()), (
        f"specs of {name} changed; if intended, run python -m tests.parallel.regen_golden and review the diff"
    )


def test_a_spec_that_differs_from_golden_fails():
    # The comparison can fail: one changed spec in the file is noticed.
    golden = json.loads((GOLDEN / "tiny.json").read_text())
    strategy = next(iter(golden))
    path = next(iter(golden[strategy]))
    golden[strategy][path] += " changed"
    assert snapshot("tiny") != golden
