"""The model config is plain data: importing and validating it loads no attention code (`attention.check` does)."""

import dataclasses
import json
import subprocess
import sys

from meshlm.model.config import ModelConfig


def test_importing_the_config_loads_no_attention_code_and_no_jax():
    script = "import json, sys; import meshlm.model.config; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout)
    assert not [m for m in loaded if m.startswith("meshlm.model.attention") or m.split(".")[0] == "jax"]


def test_validate_leaves_the_attention_names_to_the_registry():
    assert dataclasses.replace(ModelConfig(), attention="nope", attention_layer="nope").validate()
