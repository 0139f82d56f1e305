"""The sweep report's few-shot section: what `meshlm eval --sweep DIR` left in DIR/eval, embedded as it is."""

from meshlm.experiments.sweep import report


def test_the_report_embeds_the_evaluation_and_its_spreads_across_sizes_when_there_are_some(tmp_path):
    eval_dir = tmp_path / report.EVAL
    assert report._icl_section(eval_dir) == []  # no evaluation, no section
    eval_dir.mkdir()
    (eval_dir / "results.md").write_text("# meshlm eval\n\n## copa (acc, 8 items)\n\n| model | params | K=0 |\n")
    (eval_dir / "icl_copa.png").write_bytes(b"")
    without_spreads = "\n".join(report._icl_section(eval_dir))
    assert "### copa (acc, 8 items)" in without_spreads and "# meshlm eval" not in without_spreads
    assert f"![icl_copa.png]({report.EVAL}/icl_copa.png)" in without_spreads
    assert "shrink with scale" not in without_spreads

    (eval_dir / "sensitivity_copa.png").write_bytes(b"")
    with_spreads = "\n".join(report._icl_section(eval_dir))
    assert with_spreads.index("icl_copa.png") < with_spreads.index("shrink with scale")
    assert with_spreads.endswith(f"![sensitivity_copa.png]({report.EVAL}/sensitivity_copa.png)\n")
