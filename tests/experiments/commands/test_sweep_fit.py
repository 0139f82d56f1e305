"""meshlm sweep fit --table: CSV errors, the printed name=value lines, fit.json and the report; the published fit."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from meshlm.experiments import cli
from meshlm.experiments.sweep.table import read_table
from meshlm.model.errors import ConfigError
from tests.experiments.sweep.synthetic import HOFFMANN, isoflop_sweep


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("N,loss", ["1e6,3.0"], "lacks column\\(s\\) D"),
        ("N,D,loss", ["1e6,abc,3.0"], "line 2: D='abc' is not a number"),
        ("N,D,loss", ["1e6,1e8,3.0", "1e6,-5,3.0"], "line 3: D='-5' must be a positive number"),
        ("N,D,loss", ["1e6,1e8,0"], "loss='0' must be a positive number"),
        ("N,D,loss,holdout", ["1e6,1e8,3.0,maybe"], "holdout='maybe'"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path, header, rows, message):
    with pytest.raises(ConfigError, match=message):
        read_table(_write(tmp_path / "t.csv", header, rows))


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    table = _write(tmp_path / "t.csv", "N,D,loss", ["1e6,1e8,3.0", "2e6,1e8,2.9"])
    assert cli.main(["sweep", "fit", "--table", str(table)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshlm: error: 2 run(s) to fit") and err.count("\n") == 1
    assert cli.main(["sweep", "fit", "--table", str(tmp_path / "missing.csv")]) == 2
    assert not (tmp_path / "fit.json").exists()


def test_extra_columns_are_ignored_and_optional_ones_read(tmp_path):
    table = _write(tmp_path / "t.csv", "model,N,D,loss,C,holdout", ["a,1e6,1e8,3.0,,0", "b,2e6,1e8,2.9,1.3e15,1"])
    first, second = read_table(table)
    assert first.C is None and first.compute == 6e14 and not first.holdout
    assert second.C == 1.3e15 and second.holdout


@pytest.mark.slow
def test_fit_table_prints_name_value_lines_and_writes_fit_json_and_report(tmp_path, capsys):
    obs = isoflop_sweep(HOFFMANN, np.logspace(18, 21, 4), sizes_per_budget=6, noise=0.003)
    rows = [f"{o.N!r},{o.D!r},{o.loss!r}" for o in obs]
    n, d = float(HOFFMANN.n_opt(1e22)), float(HOFFMANN.d_opt(1e22))
    rows.append(f"{n!r},{d!r},{float(HOFFMANN.loss(n, d))!r},1")
    table = _write(tmp_path / "points.csv", "N,D,loss,holdout", rows)
    assert cli.main(["sweep", "fit", "--table", str(table), "--resamples", "20", "--starts", "8"]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines() if "=" in line)
    for name in ("E", "A", "B", "alpha", "beta", "a", "b", "alpha.lo80", "alpha.hi80"):
        assert name in printed
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert float(printed["alpha"]) == pytest.approx(saved["values"]["alpha"], rel=1e-5)
    assert saved["fitted_runs"] == len(obs) and len(saved["holdout"]) == 1
    assert float(printed["a"]) == pytest.approx(
        saved["values"]["beta"] / (saved["values"]["alpha"] + saved["values"]["beta"]), rel=1e-5
    )
    report = (tmp_path / "report.md").read_text()
    for png in ("isoflop", "optimal", "loss_curves", "predicted_vs_actual", "residuals"):
        assert f"({png}.png)" in report
        assert (tmp_path / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Hold-out runs" in report
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # Leave-one-budget-out: the table names no budgets, so the runs are grouped by compute; the top group (1e21)
    # is predicted by a law fitted on the three below it, within the noise, and counted with the hold-out.
    checked = saved["validation"]
    assert checked["left_out_budget"] == pytest.approx(1e21, rel=1e-6) and len(checked["left_out"]) == 6
    assert all(abs(p["relative_error"]) < 0.02 for p in checked["left_out"])
    inside = [p["inside80"] for p in checked["held_out"] + checked["left_out"]]
    assert checked["predicted"] == 7 and checked["coverage80"] == pytest.approx(sum(inside) / 7)
    assert float(printed["validation.coverage80"].split()[0]) == pytest.approx(checked["coverage80"], rel=1e-3)
    assert f"{sum(inside)} of 7 predicted runs" in report and "Leave-one-budget-out" in report


# Epoch AI's reconstruction of Chinchilla's Fig. 4 (github.com/epoch-research/analyzing-chinchilla,
# data/svg_extracted_data.csv) has no licence, so it is not shipped; point MESHLM_CHINCHILLA_CSV at a copy to run this.
CHINCHILLA_CSV = os.environ.get("MESHLM_CHINCHILLA_CSV")


@pytest.mark.published_data
@pytest.mark.skipif(
    not CHINCHILLA_CSV, reason="set MESHLM_CHINCHILLA_CSV to Epoch AI's svg_extracted_data.csv (docs/scaling.md)"
)
def test_reproduces_the_published_refit_of_chinchilla(tmp_path, capsys):
    with open(CHINCHILLA_CSV) as f:
        rows = list(csv.DictReader(f))
    losses = sorted(float(r["loss"]) for r in rows)
    lines = []
    for r in rows:  # as Besiroglu et al.: N = model size, D = C / 6N, the five highest losses left out
        n, c, loss = float(r["Model Size"]), float(r["Training FLOP"]), float(r["loss"])
        if loss < losses[-5]:
            lines.append(f"{n!r},{c / (6 * n)!r},{loss!r}")
    assert len(lines) == 240
    table = _write(tmp_path / "chinchilla.csv", "N,D,loss", lines)
    assert cli.main(["sweep", "fit", "--table", str(table), "--resamples", "200", "--no-report"]) == 0
    values = json.loads((tmp_path / "fit.json").read_text())["values"]
    # Besiroglu et al. 2024: E = 1.82, A = 482, B = 2085, alpha = 0.348, beta = 0.366 (a = 0.513)
    assert values["E"] == pytest.approx(1.817, abs=0.01)
    assert values["alpha"] == pytest.approx(0.348, abs=0.005)
    assert values["beta"] == pytest.approx(0.366, abs=0.005)
    assert values["A"] == pytest.approx(482, rel=0.05)
    assert values["B"] == pytest.approx(2085, rel=0.05)
    assert values["a"] == pytest.approx(0.513, abs=0.005)


def _floor_below_zero(tmp_path) -> Path:
    """Losses that keep falling as if the floor were 0.5 below zero (the CPU ladder's case): E ends at its bound."""
    runs = isoflop_sweep(HOFFMANN, np.logspace(18, 21, 4), sizes_per_budget=7)
    return _write(tmp_path / "points.csv", "N,D,loss", [f"{o.N!r},{o.D!r},{o.loss - HOFFMANN.E - 0.5!r}" for o in runs])


def test_fit_table_prints_identified_false_for_a_floor_it_cannot_identify(tmp_path, capsys):
    table = _floor_below_zero(tmp_path)
    assert cli.main(["sweep", "fit", "--table", str(table), "--resamples", "10", "--starts", "8", "--no-report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "E.identified=false" in lines and lines[lines.index("E.identified=false") - 3].startswith("E=")
    assert "alpha.identified=false" not in lines and "beta.identified=false" not in lines
    assert any(line.startswith("warning: not identified: E") for line in lines)
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["converged"] and saved["identified"]["E"] is False and saved["identified"]["alpha"] is True
    assert saved["not_identified"]["E"].startswith("at its lower bound")


@pytest.mark.slow
def test_report_says_in_words_what_is_not_identified(tmp_path):
    table = _floor_below_zero(tmp_path)
    assert cli.main(["sweep", "fit", "--table", str(table), "--resamples", "10", "--starts", "8"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Approach 3 converged, but not every quantity is identified: E" in report
    assert "- **E** is not identified: at its lower bound" in report
    assert "| E | 2.061e-09 |" in report and "| **no**: at its lower bound" in report


def test_fit_table_with_repeated_data_says_so_and_raw_tokens_turns_the_correction_off(tmp_path, capsys):
    from meshlm.experiments.sweep.repetition import effective_tokens

    U = 2e9
    runs = isoflop_sweep(HOFFMANN, np.logspace(18, 20, 4), sizes_per_budget=6)
    rows = [f"{o.N!r},{o.D!r},{float(HOFFMANN.loss(o.N, effective_tokens(o.D, U)))!r},{U!r}" for o in runs]
    table = _write(tmp_path / "t.csv", "N,D,loss,unique_tokens", rows)
    repeated = {f"line{i + 2}": o.D / U for i, o in enumerate(runs) if o.D > U}
    assert len(repeated) >= 4
    base = ["sweep", "fit", "--table", str(table), "--resamples", "0", "--starts", "8", "--no-validate"]
    fits = {}
    for name, extra in (("effective", []), ("raw", ["--raw-tokens", "--no-report"])):
        assert cli.main([*base, "--out", str(tmp_path / name), *extra]) == 0
        printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines() if "=" in line)
        fits[name] = json.loads((tmp_path / name / "fit.json").read_text())
        assert printed["repeated_data.runs"] == str(len(repeated))
        assert float(printed["repeated_data.max_epochs"]) == pytest.approx(max(repeated.values()), rel=5e-3)
        assert printed["repeated_data.effective_data"] == ("true" if name == "effective" else "false")
    assert fits["effective"]["repeated_data"]["epochs"] == pytest.approx(repeated)
    assert fits["effective"]["values"]["beta"] == pytest.approx(HOFFMANN.beta, rel=2e-3)
    assert abs(fits["raw"]["values"]["beta"] - HOFFMANN.beta) > 0.01
    report = (tmp_path / "effective" / "report.md").read_text()
    assert "## Repeated data" in report and f"{len(repeated)} run(s) read their training split more than once" in report
