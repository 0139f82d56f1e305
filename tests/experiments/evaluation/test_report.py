"""results.md: the probe table names the ICL score's indices, so scores of different measures are not compared."""

from meshlm.experiments.evaluation import report


def _model(name: str, measure: str, score: float, **more) -> dict:
    icl = {measure: score, f"{measure}_stderr": 0.01, "measure": measure, **more}
    induction = {"prefix_matching_max": 0.9, "copying_max": 0.75}
    return {"name": name, "params": 1000, "results": {"icl_score": icl, "induction": induction}}


def test_each_icl_score_cell_names_its_late_and_early_index(tmp_path):
    note = "not the standard icl_score@500-50, which needs n_ctx >= 500 (this model's is 256)"
    models = [_model("long", "icl_score@500-50", -0.5), _model("short", "icl_score@256-50", -0.2, note=note)]
    text = report.markdown(models, shots=[0])
    rows = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert "-0.500 +- 0.010 @500-50" in rows["| long"] and rows["| long"].endswith("| 0.900 | 0.750 |")
    assert "-0.200 +- 0.010 @256-50" in rows["| short"]
    assert f"- ICL score of short: {note}." in text and "ICL score of long" not in text
    assert [p.name for p in report.plot_icl_scores(models, tmp_path)] == ["icl_scores.png"]
