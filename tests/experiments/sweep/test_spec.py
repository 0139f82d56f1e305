"""The sweep spec: typed parsing of YAML, and one-line errors for unknown keys and wrong values."""

import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.model.errors import ConfigError

MINIMAL = {"name": "s", "budgets": ["1e11", 3.0e11, {"flops": "1e12", "shapes": [{"d_model": 64, "n_layers": 4}]}]}


def test_parses_numbers_written_as_yaml_strings_and_nested_sections():
    spec = spec_lib.parse(
        {
            **MINIMAL,
            "shapes": [{"d_model": 32, "n_layers": 2}],
            "rules": {"lr": {"peak": "1e-3"}, "betas": [0.9, 0.999]},
            "holdout": [{"flops": 4e12, "shapes": [{"d_model": 96, "n_layers": 4}]}],
        }
    )
    assert [b.flops for b in spec.budgets] == [1e11, 3e11, 1e12]
    assert spec.budgets[2].shapes == (spec_lib.Shape(d_model=64, n_layers=4),)
    assert spec.rules.lr.peak == 1e-3 and spec.rules.lr.exponent == spec_lib.LRRule().exponent
    assert spec.rules.betas == (0.9, 0.999)
    assert spec.holdout[0].flops == 4e12


def test_auto_shapes_parse():
    spec = spec_lib.parse({**MINIMAL, "auto": {"count": 5, "tokens_per_param": 50}})
    assert spec.auto == spec_lib.AutoShapes(count=5, tokens_per_param=50.0)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({**MINIMAL, "shapes": [{"d_model": 32, "n_layers": 2}], "budget": [1]}, "unknown key 'budget' in Spec"),
        ({**MINIMAL, "rules": {"lr": {"peak_lr": 1e-3}}}, "unknown key 'peak_lr' in LRRule"),
        ({**MINIMAL, "shapes": [{"d_model": "wide", "n_layers": 2}]}, "spec.shapes[0].d_model='wide'"),
        ({**MINIMAL, "shapes": [{"d_model": 32.5, "n_layers": 2}]}, "expected an integer"),
        ({**MINIMAL, "rules": {"schedule": "linear"}}, "expected one of cosine, wsd"),
        ({"name": "s", "budgets": [], "shapes": [{"d_model": 32, "n_layers": 2}]}, "lists no budgets"),
        ({"name": "s", "budgets": [1e11]}, "has no shapes"),
        ({"budgets": [1e11]}, "Spec needs 'name'"),
        ([1, 2], "a YAML mapping"),
    ],
)
def test_bad_specs_fail_with_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=None) as e:
        spec_lib.parse(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_spec_errors_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: s\nbudgets: [1e11]\nshapes: [{d_model: 32, n_layers: 2}]\nseed: [0]\n")
    assert main(["sweep", "run", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshlm: error: ") and "unknown key 'seed'" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_set_overrides_fields_by_dotted_path_with_yaml_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nbudgets: [1e11, 3e11]\nshapes: [{d_model: 32, n_layers: 2}]\nrules: {lr: {peak: 1.0e-2}}\n"
        "holdout: [{flops: 1e12, shapes: [{d_model: 64, n_layers: 2}]}]\ntune: {flops: 1e11}\n"
    )
    plain = spec_lib.load(path)
    spec = spec_lib.load(
        path, ["rules.schedule=wsd", "rules.lr.exponent=-0.5", "holdout=[]", "tune=null", "seeds=[0, 1]"]
    )
    assert (plain.rules.schedule, spec.rules.schedule) == ("cosine", "wsd")
    assert spec.rules.lr == spec_lib.LRRule(peak=1e-2, exponent=-0.5)  # the spec's peak kept beside the new exponent
    assert (plain.holdout != (), spec.holdout) == (True, ())
    assert (plain.tune is not None, spec.tune) == (True, None)
    assert spec.seeds == (0, 1) and spec.budgets == plain.budgets
    assert spec_lib.load(path, ["eval.per_run=3"]).eval == spec_lib.EvalRule(per_run=3)  # a section the file lacks
    assert path.read_text().count("tune") == 1  # the file is never written


@pytest.mark.parametrize(
    "item, message",
    [
        ("rules.schedule", "is not of the form key.path=value"),
        ("name.first=x", "name is 's' in the spec, not a section"),
        ("rules.shedule=cosine", "unknown key 'shedule' in Rules"),
        ("rules.schedule=linear", "expected one of cosine, wsd, cooldown"),
        ("seeds=[0", "the value is not valid YAML"),
    ],
)
def test_set_errors_name_the_key(tmp_path, item, message):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbudgets: [1e11]\nshapes: [{d_model: 32, n_layers: 2}]\n")
    with pytest.raises(ConfigError) as e:
        spec_lib.load(path, [item])
    assert message in str(e.value) and "\n" not in str(e.value)
