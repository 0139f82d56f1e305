"""Read a CSV table of runs (columns N, D, loss; optional C, budget, holdout, run_id, unique_tokens: the training
split's size, for runs that repeat data) into Observations."""

import csv
import math
from pathlib import Path

from meshlm.experiments.sweep.observations import Observation
from meshlm.model.errors import ConfigError

REQUIRED = ("N", "D", "loss")
POSITIVE = ("N", "D", "loss", "C", "budget", "unique_tokens")
TRUE, FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{path} line {line}: {column}={text!r} is not a number; fix or remove that row") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path} line {line}: {column}={text!r} must be a positive number; fix or remove that row")
    return value


def _flag(path: Path, line: int, text: str) -> bool:
    if text.strip().lower() in TRUE:
        return True
    if text.strip().lower() in FALSE:
        return False
    raise ConfigError(f"{path} line {line}: holdout={text!r}; use 1/true or 0/false (empty = false)")


def read_table(path: str | Path) -> list[Observation]:
    """Extra columns are ignored; empty C or budget cells mean 'not given'."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except OSError as e:
        raise ConfigError(f"cannot read table {path}: {e.strerror}") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ConfigError(
            f"{path} lacks column(s) {', '.join(missing)}; the first line must name at least N,D,loss "
            f"(found: {','.join(columns) or 'nothing'})"
        )
    observations = []
    for line, row in enumerate(rows, start=2):
        values = {c: _number(path, line, c, row[c]) for c in POSITIVE if row.get(c, "") != "" or c in REQUIRED}
        observations.append(
            Observation(
                N=values["N"],
                D=values["D"],
                loss=values["loss"],
                C=values.get("C"),
                budget=values.get("budget"),
                holdout=_flag(path, line, row.get("holdout", "")),
                run_id=row.get("run_id", "") or f"line{line}",
                unique_tokens=values.get("unique_tokens"),
            )
        )
    return observations
