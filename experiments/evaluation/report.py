"""What `meshlm eval` writes: results.json, results.md, and ICL-curve PNGs (accuracy against K, one line per model)."""

import json
import os
import pathlib
import tempfile

from meshlm.training.atomic import write_atomic

PROBE_COLUMNS = (
    ("icl_score", "icl_score", "ICL score (loss@late - loss@early)"),
    ("induction", "loss_first_copy", "induction: loss, 1st copy"),
    ("induction", "loss_repeat", "induction: loss, repeat"),
    ("induction", "prefix_matching_max", "best head's prefix matching"),
    ("induction", "copying_max", "best head's copying"),
    ("perplexity", "bits_per_byte", "bits per byte"),
)


def write_json(path: pathlib.Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def markdown(models: list[dict], shots: list[int]) -> str:
    """One table per prompt task (its primary metric, mean +- spread over shot seeds, per K) and one of probes."""
    lines = ["# meshlm eval", ""]
    task_names = list(dict.fromkeys(t for m in models for t, r in m["results"].items() if "shots" in r))
    for task in task_names:
        first = next(m["results"][task] for m in models if task in m["results"])
        lines += [f"## {task} ({first['primary']}, {first['n_items']} items)", ""]
        lines += ["| model | params | " + " | ".join(f"K={k}" for k in shots) + " |"]
        lines += ["|---|---|" + "---|" * len(shots)]
        for m in models:
            by_k = m["results"].get(task, {}).get("shots", {})
            cells = [_cell(by_k.get(str(k)), first["primary"]) for k in shots]
            lines.append(f"| {m['name']} | {m['params']:,} | " + " | ".join(cells) + " |")
            if isinstance(m["results"].get(task, {}).get("calibration"), dict):
                cells = [_cell(by_k.get(str(k)), "acc_calibrated") for k in shots]
                lines.append(f"| {m['name']}, calibrated | {m['params']:,} | " + " | ".join(cells) + " |")
        if isinstance(first.get("calibration"), str):
            lines += ["", f"Calibration: {first['calibration']}."]
        lines.append("")
        lines += _orders_table(task, first["primary"], models, shots)
        lines += _formats_table(task, first["primary"], models, shots)
    probe_cols = [c for c in PROBE_COLUMNS if any(c[0] in m["results"] for m in models)]
    if probe_cols:
        lines += ["## probes", "", "| model | params | " + " | ".join(c[2] for c in probe_cols) + " |"]
        lines += ["|---|---|" + "---|" * len(probe_cols)]
        for m in models:
            cells = [_number(m["results"].get(probe, {}).get(key)) for probe, key, _ in probe_cols]
            icl = m["results"].get("icl_score", {})
            if "measure" in icl:  # the score's key names its indices: icl_score@LATE-EARLY
                name = icl["measure"]
                cell = f"{icl[name]:.3f} +- {icl[name + '_stderr']:.3f} {name.removeprefix('icl_score')}"
                cells[[c[1] for c in probe_cols].index("icl_score")] = cell
            lines.append(f"| {m['name']} | {m['params']:,} | " + " | ".join(cells) + " |")
        lines.append("")
        notes = [(m["name"], m["results"].get("icl_score", {}).get("note")) for m in models]
        notes = [f"- ICL score of {name}: {note}." for name, note in notes if note]
        lines += [*notes, ""] if notes else []
    lines.append("Cells: mean over shot seeds +- their standard deviation; [N%]: prompts with fewer than K shots.")
    return "\n".join(lines) + "\n"


def _cell(entry: dict | None, metric: str) -> str:
    if entry is None:
        return "-"
    value = entry["metrics"][metric]
    text = f"{value['mean']:.3f}"
    if entry["seeds"] > 1:
        text += f" +- {value['seed_std']:.3f}"
    if entry["shots_dropped"]:
        text += f" [{entry['shots_dropped']:.0%}]"
    return text


def _orders_table(task: str, metric: str, models: list[dict], shots: list[int]) -> list[str]:
    """The spread over shot orders (within a shot seed, averaged over seeds), when some K had more than one."""
    entries = [m["results"].get(task, {}).get("shots", {}) for m in models]
    if not any(e.get("orders", 1) > 1 for by_k in entries for e in by_k.values()):
        return []
    lines = [f"### {task}: {metric} over shot orders (mean [min, max] +- std, within a shot seed)", ""]
    lines += ["| model | params | " + " | ".join(f"K={k}" for k in shots) + " |", "|---|---|" + "---|" * len(shots)]
    for m, by_k in zip(models, entries):
        cells = []
        for k in shots:
            entry = by_k.get(str(k))
            v = entry["metrics"][metric] if entry else None
            cells.append(
                "-"
                if v is None
                else f"{v['mean']:.3f} [{v['order_min']:.3f}, {v['order_max']:.3f}] +- {v['order_std']:.3f} "
                f"({entry['orders']} orders)"
            )
        lines.append(f"| {m['name']} | {m['params']:,} | " + " | ".join(cells) + " |")
    return lines + [""]


def _formats_table(task: str, metric: str, models: list[dict], shots: list[int]) -> list[str]:
    """The spread over prompt formats and, per model, its best and worst format at the largest K."""
    results = [m["results"].get(task, {}).get("formats") for m in models]
    if not any(results):
        return []
    n = next(r["n"] for r in results if r)
    lines = [f"### {task}: {metric} over {n} prompt formats (mean [min, max] +- std)", ""]
    lines += ["| model | params | " + " | ".join(f"K={k}" for k in shots) + " |", "|---|---|" + "---|" * len(shots)]
    for m, r in zip(models, results):
        cells = []
        for k in shots:
            v = r["shots"][str(k)]["metrics"][metric] if r and str(k) in r["shots"] else None
            cells.append("-" if v is None else f"{v['mean']:.3f} [{v['min']:.3f}, {v['max']:.3f}] +- {v['std']:.3f}")
        lines.append(f"| {m['name']} | {m['params']:,} | " + " | ".join(cells) + " |")
    lines.append("")
    for m, r in zip(models, results):
        if not r:
            continue
        k = max(int(k) for k in r["shots"])
        at = r["shots"][str(k)]
        if at["metrics"][metric]["min"] == at["metrics"][metric]["max"]:
            lines += [f"{m['name']}: every format scores the same at K={k}.", ""]
            continue
        for which in ("best", "worst"):
            v = r["variants"][at[which]]
            lines += [f"{m['name']}, {which} format at K={k}: {_format_text(v['format'])}", ""]
            lines += ["```", v["example"], "```", ""]
    return lines


def _format_text(choices: dict[str, str]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {value!r}" for name, value in choices.items())


def _number(value) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.3f}"


def plot_icl_curves(models: list[dict], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """icl_TASK.png per prompt task: the primary metric against K, one line per model, seed spread as bars, the
    range over prompt formats (--formats) as a band."""
    import matplotlib  # deferred: plotting is the only user of this heavy import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    task_names = list(dict.fromkeys(t for m in models for t, r in m["results"].items() if "shots" in r))
    for task in task_names:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        primary = None
        for m in sorted(models, key=lambda m: m["params"]):
            result = m["results"].get(task)
            if result is None:
                continue
            primary = result["primary"]
            ks = sorted(int(k) for k in result["shots"])
            values = [result["shots"][str(k)]["metrics"][primary] for k in ks]
            if "formats" in result:  # the band every format's score falls in
                spread = [result["formats"]["shots"][str(k)]["metrics"][primary] for k in ks]
                ax.fill_between(ks, [v["min"] for v in spread], [v["max"] for v in spread], alpha=0.15)
            ax.errorbar(
                ks,
                [v["mean"] for v in values],
                yerr=[v["seed_std"] for v in values],
                marker="o",
                capsize=3,
                label=f"{m['name']} ({m['params'] / 1e6:.2f}M)",
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_ylim(-0.02, 1.02)  # every primary metric is an accuracy
        ax.set_xlabel("K (examples in the prompt)")
        ax.set_ylabel(primary)
        ax.set_title(f"{task}: in-context learning curve")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"icl_{task}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def sensitivity(result: dict, k: str) -> dict[str, float]:
    """The primary metric's spread at K over each source that varied: shot seeds, orders, formats (std)."""
    entry, primary = result["shots"][k], result["primary"]
    value = entry["metrics"][primary]
    out = {}
    if entry["seeds"] > 1:
        out["shot selection"] = value["seed_std"]
    if entry["orders"] > 1:
        out["shot order"] = value["order_std"]
    if "formats" in result:
        out["format"] = result["formats"]["shots"][k]["metrics"][primary]["std"]
    return out


def plot_sensitivity(models: list[dict], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """sensitivity_TASK.png, for two or more models: the spread of the primary metric at the largest K over each
    source against parameters (does sensitivity shrink with scale?)."""
    import matplotlib  # deferred: plotting is the only user of this heavy import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task in dict.fromkeys(t for m in models for t, r in m["results"].items() if "shots" in r):
        results = sorted(
            ((m["params"], m["results"][task]) for m in models if task in m["results"]), key=lambda p: p[0]
        )
        k = str(max(int(k) for k in results[0][1]["shots"]))
        by_source: dict[str, list[tuple[int, float]]] = {}
        for params, result in results:
            for source, std in sensitivity(result, k).items():
                by_source.setdefault(source, []).append((params, std))
        if len(results) < 2 or not by_source:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for source, points in by_source.items():
            ax.plot([p for p, _ in points], [s for _, s in points], marker="o", label=source)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(f"std of {results[0][1]['primary']} at K={k}")
        ax.set_title(f"{task}: spread over meaningless choices")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"sensitivity_{task}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def plot_icl_scores(models: list[dict], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """icl_scores.png: Olsson's ICL score (with its standard error) against parameters, one point per model."""
    points = [
        (m["params"], m["results"]["icl_score"]) for m in models if "measure" in m["results"].get("icl_score", {})
    ]
    if not points:
        return []
    import matplotlib  # deferred: plotting is the only user of this heavy import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points.sort(key=lambda p: p[0])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(
        [p for p, _ in points],
        [r[r["measure"]] for _, r in points],
        yerr=[r[r["measure"] + "_stderr"] for _, r in points],
        marker="o",
        capsize=3,
    )
    for params, r in points:  # models of different n_ctx use different indices
        ax.annotate(
            r["measure"].removeprefix("icl_score"),
            (params, r[r["measure"]]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("loss at late - at early index (nats)")
    ax.set_title("ICL score against model size (lower: more ICL)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "icl_scores.png"
    _save(fig, path)
    plt.close(fig)
    return [path]


def _save(fig, path: pathlib.Path) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".png", delete=False) as f:
        fig.savefig(f, format="png", dpi=120)
    os.replace(f.name, path)
