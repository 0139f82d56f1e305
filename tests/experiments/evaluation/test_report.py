"""results.md: the probe table names the ICL score's indices, so scores of different measures are not compared."""

from meshlm.experiments.evaluation import report


def _model(name: str, icl: dict) -> dict:
    return {"name": name, "params": 1000, "results": {"icl_score": {"icl_score_stderr": 0.01, **icl}}}


def test_each_icl_score_cell_names_its_late_and_early_index():
    models = [
        _model("long", {"icl_score": -0.5, "measure": "icl_score@500-50"}),
        _model("short", {"icl_score": -0.2, "measure": "icl_score@256-50"}),
    ]
    rows = {line.split(" | ")[0]: line for line in report.markdown(models, shots=[0]).splitlines()}
    assert "-0.500 +- 0.010 @500-50" in rows["| long"]
    assert "-0.200 +- 0.010 @256-50" in rows["| short"]
