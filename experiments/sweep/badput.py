"""Where a sweep's compute time went: each run's goodput.json (training/goodput.py) summed by cause."""

from pathlib import Path

from meshlm.training import goodput


def totals(runs_dir: Path) -> tuple[int, dict[str, float]]:
    """(runs with a goodput.json, seconds by cause summed over them, "productive" included)."""
    summed = dict.fromkeys(("productive", *goodput.CAUSES), 0.0)
    runs = 0
    for run_dir in sorted(p for p in runs_dir.glob("*") if p.is_dir()):
        saved = goodput.read(run_dir)
        if saved is None:
            continue
        runs += 1
        for cause, seconds in saved["seconds"].items():
            summed[cause] = summed.get(cause, 0.0) + seconds
    return runs, summed


def section(runs_dir: Path) -> list[str]:
    """The report's table of productive time and badput by cause, largest badput first; [] without runs."""
    runs, seconds = totals(runs_dir)
    total = sum(seconds.values())
    if not runs or not total:
        return []
    badput = sorted(((s, c) for c, s in seconds.items() if c != "productive"), reverse=True)
    return [
        "## Where the sweep's time went",
        "",
        f"Wall time of {runs} runs, summed from each run's `goodput.json` (docs/performance.md, Goodput): "
        f"{total / 3600:.2f} h, of which {seconds['productive'] / total:.1%} productive training.",
        "",
        "| | hours | share |",
        "|---|---:|---:|",
        f"| productive | {seconds['productive'] / 3600:.3f} | {seconds['productive'] / total:.1%} |",
        *(f"| {cause} | {s / 3600:.3f} | {s / total:.1%} |" for s, cause in badput),
        "",
    ]
