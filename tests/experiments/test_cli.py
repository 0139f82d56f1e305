import json
import subprocess
import sys

import pytest

from meshlm.experiments.cli import main
from meshlm.model import presets


@pytest.mark.parametrize("name", list(presets.GPT3_TABLE))
def test_info_reports_paper_parameter_counts(name, capsys):
    assert main(["info", "--preset", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["params_total"] / presets.paper_params(name) - 1) < 0.02
    assert out["flops_per_token"] > 6 * out["params_non_embedding"]


def test_info_text_shows_the_formula(capsys):
    assert main(["info", "--preset", "gpt3-175b"]) == 0
    out = capsys.readouterr().out
    assert "174,604,836,864" in out and "ratio 0.998" in out and "6 x 2 x n_layers x seq_len x d_attn" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "--preset", "gpt9"], "unknown preset 'gpt9'"),
        (["info", "--preset", "tiny", "--set", "model.attention=flash9"], "unknown attention variant 'flash9'"),
        (["info", "--preset", "tiny", "--set", "model.n_heads=3"], "n_heads=3 does not divide"),
        (["generate", "--preset", "tiny", "--prompt", "x" * 300], "exceeds the model's n_ctx=256"),
    ],
)
def test_errors_are_one_line_without_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_runs_as_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "meshlm.experiments.cli", "info", "--preset", "nope"], capture_output=True, text=True
    )
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("meshlm: error: unknown preset")
        and "Traceback" not in proc.stderr
    )


def test_generate_from_a_random_preset_prints_each_prompt(capsys):
    argv = [
        "generate",
        "--preset",
        "tiny",
        "--set",
        "model.n_layers=1",
        "--prompt",
        "ab",
        "--prompt",
        "xyz",
        "--max-new-tokens",
        "4",
        "--no-stop",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("--- prompt:") == 2 and "'xyz'" in out
