"""DIR/results.sqlite: the planned runs, their results, each run's state and tries, and the claims that keep two
runners off one run.

Only the driver writes, one transaction per change, so a killed runner leaves either a whole row or none.
A claim names its owner (host, pid, a per-runner token); a claim whose owner is a dead process on this host is taken
over, one held on another host stays until that runner releases it.
"""

import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import socket
import sqlite3
import uuid

from meshlm.experiments.sweep.accounting import Accounting
from meshlm.experiments.sweep.failures import Failure
from meshlm.experiments.sweep.observations import Observation
from meshlm.experiments.sweep.plan import RUN, TRUNK, TUNE, PlannedRun
from meshlm.model.errors import ConfigError
from meshlm.training import config as config_lib

FILE = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, sweep TEXT NOT NULL, budget REAL NOT NULL, holdout INTEGER NOT NULL,
    seed INTEGER NOT NULL, d_model INTEGER NOT NULL, n_layers INTEGER NOT NULL,
    params_non_embedding INTEGER NOT NULL, params_total INTEGER NOT NULL, params_flops REAL NOT NULL,
    flops_per_token REAL NOT NULL, tokens INTEGER NOT NULL, compute REAL NOT NULL,
    steps INTEGER NOT NULL, batch_size INTEGER NOT NULL, seq_len INTEGER NOT NULL, peak_lr REAL NOT NULL,
    warmup_steps INTEGER NOT NULL, config TEXT NOT NULL, planned_at TEXT NOT NULL, kind TEXT, parent TEXT,
    branch_step INTEGER, data_tokens REAL);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id), final_val_loss REAL NOT NULL, final_train_loss REAL,
    val_curve TEXT NOT NULL, train_curve TEXT NOT NULL, wall_time_s REAL NOT NULL, tokens_per_s REAL,
    flops_per_s REAL, resumed_from_step INTEGER NOT NULL, revision TEXT NOT NULL, host TEXT NOT NULL,
    finished_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    run_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, token TEXT NOT NULL, claimed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    run_id TEXT NOT NULL, error TEXT NOT NULL, host TEXT NOT NULL, at TEXT NOT NULL, attempt INTEGER,
    retryable INTEGER);
CREATE TABLE IF NOT EXISTS states (
    run_id TEXT PRIMARY KEY, state TEXT NOT NULL, attempts INTEGER NOT NULL, failures INTEGER NOT NULL,
    reason TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added since the first stores; older files gain them (NULL in their old rows) when opened. A run's kind
# (plan.RUN, TRUNK, BRANCH or TUNE; NULL: a run planned before there were kinds, an ordinary one), parent and branch
# step; data_tokens: the training split's tokens when it was planned, so that the fitter knows each run's epochs.
_ADDED = {
    "failures": ("attempt INTEGER", "retryable INTEGER"),
    "runs": ("kind TEXT", "parent TEXT", "branch_step INTEGER", "data_tokens REAL"),
}

PENDING, RUNNING, RETRYING, DONE, FAILED = "pending", "running", "retrying", "done", "failed"


@dataclasses.dataclass(frozen=True)
class RunResult:
    final_val_loss: float
    final_train_loss: float | None
    val_curve: tuple  # ((tokens, validation loss), ...)
    train_curve: tuple  # ((tokens, training loss), ...)
    wall_time_s: float  # this attempt's, including compile; a resumed run counts only its last attempt
    tokens_per_s: float | None  # median over logged windows, compile excluded
    flops_per_s: float | None
    resumed_from_step: int
    host: str


@dataclasses.dataclass(frozen=True)
class RunState:
    state: str  # PENDING, RUNNING, RETRYING, DONE or FAILED
    attempts: int = 0  # tries started, by any driver (one a driver was killed during is not a failure)
    failures: int = 0  # retryable failures since the run was last reset: the retries it has used
    reason: str = ""  # the last failure's


@dataclasses.dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _alive(host: str, pid: int) -> bool:
    """False only when we can tell: the owner ran on this host and its process is gone (or a zombie)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = pathlib.Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


class Store:
    def __init__(self, directory: str | pathlib.Path, owner: Owner | None = None):
        self.path = pathlib.Path(directory) / FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.owner = owner or Owner.this_process()
        # Autocommit mode: every change below is one explicit BEGIN IMMEDIATE ... COMMIT.
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        with self._transaction() as db:
            for table, columns in _ADDED.items():
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    @contextlib.contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def add_plan(self, sweep: str, runs: list[PlannedRun], data_tokens: float | None = None) -> None:
        """Add the runs, or update the sweep, budget, holdout, kind and data_tokens (the training split's tokens, for
        each run's epochs) of those planned before. A main run whose config is also a point of the tune stage stays a
        main run (an observation): a tune plan never changes a row."""
        columns = ", ".join("?" * len(_plan_row(sweep, runs[0], data_tokens)))
        with self._transaction() as db:
            for r in runs:
                update = (
                    "NOTHING"
                    if r.kind == TUNE
                    else "UPDATE SET sweep = excluded.sweep, budget = excluded.budget, holdout = excluded.holdout, "
                    "kind = excluded.kind, data_tokens = excluded.data_tokens"
                )
                row = _plan_row(sweep, r, data_tokens)
                db.execute(f"INSERT INTO runs VALUES ({columns}) ON CONFLICT(run_id) DO {update}", row)

    def finished(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT run_id FROM results")}

    def final_losses(self) -> dict[str, float]:
        """run id -> final validation loss, of every finished run."""
        return dict(self._db.execute("SELECT run_id, final_val_loss FROM results").fetchall())

    def claim(self, run_id: str) -> bool:
        """Take the run for this runner: False when it is finished or held by a live runner."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM results WHERE run_id = ?", (run_id,)).fetchone():
                return False
            held = db.execute("SELECT host, pid, token FROM claims WHERE run_id = ?", (run_id,)).fetchone()
            if held and held[2] == self.owner.token:
                return True
            if held and _alive(held[0], held[1]):
                return False
            db.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                (run_id, self.owner.host, self.owner.pid, self.owner.token, _now()),
            )
            return True

    def release(self, run_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM claims WHERE run_id = ? AND token = ?", (run_id, self.owner.token))

    def record_result(self, run_id: str, result: RunResult, revision: str) -> None:
        """The result row and the end of the claim, in one transaction."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    result.final_val_loss,
                    result.final_train_loss,
                    json.dumps(result.val_curve),
                    json.dumps(result.train_curve),
                    result.wall_time_s,
                    result.tokens_per_s,
                    result.flops_per_s,
                    result.resumed_from_step,
                    revision,
                    result.host,
                    _now(),
                ),
            )
            db.execute("DELETE FROM claims WHERE run_id = ?", (run_id,))
            db.execute("UPDATE states SET state = ?, updated_at = ? WHERE run_id = ?", (DONE, _now(), run_id))

    def start_attempt(self, run_id: str) -> int:
        """Mark the run running and count the try; returns its number (1 for the first)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO states VALUES (?, ?, 1, 0, '', ?) ON CONFLICT(run_id) DO UPDATE SET "
                "state = excluded.state, attempts = attempts + 1, updated_at = excluded.updated_at",
                (run_id, RUNNING, _now()),
            )
            return db.execute("SELECT attempts FROM states WHERE run_id = ?", (run_id,)).fetchone()[0]

    def record_failure(self, run_id: str, failure: Failure, retries: int) -> RunState:
        """Record a failed try. A retryable one with retries left leaves the run RETRYING and this runner's claim in
        place; any other leaves it FAILED and releases the claim."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO states VALUES (?, ?, 1, 0, '', ?) ON CONFLICT(run_id) DO NOTHING",
                (run_id, RUNNING, _now()),
            )
            attempts, failures = db.execute(
                "SELECT attempts, failures FROM states WHERE run_id = ?", (run_id,)
            ).fetchone()
            failures += failure.retryable
            state = RETRYING if failure.retryable and failures <= retries else FAILED
            db.execute(
                "UPDATE states SET state = ?, failures = ?, reason = ?, updated_at = ? WHERE run_id = ?",
                (state, failures, failure.reason, _now(), run_id),
            )
            db.execute(
                "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, failure.reason, self.owner.host, _now(), attempts, int(failure.retryable)),
            )
            if state == FAILED:
                db.execute("DELETE FROM claims WHERE run_id = ? AND token = ?", (run_id, self.owner.token))
        return RunState(state, attempts, failures, failure.reason)

    def failed(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT run_id FROM states WHERE state = ?", (FAILED,))}

    def reset_failed(self) -> None:
        """Give failed runs a fresh start and a new retry budget (after their cause was fixed)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE states SET state = ?, failures = 0, updated_at = ? WHERE state = ?", (PENDING, _now(), FAILED)
            )

    def states(self) -> dict[str, RunState]:
        """Every planned run's state. A run left RUNNING by a driver that is gone is PENDING: it waits for the next
        driver, which resumes it from its checkpoint."""
        rows = self._db.execute(
            "SELECT r.run_id, s.state, s.attempts, s.failures, s.reason, d.run_id IS NOT NULL, c.host, c.pid "
            "FROM runs r LEFT JOIN states s USING (run_id) LEFT JOIN results d USING (run_id) "
            "LEFT JOIN claims c USING (run_id) ORDER BY r.rowid"
        ).fetchall()
        out = {}
        for run_id, state, attempts, failures, reason, done, host, pid in rows:
            if done:
                state = DONE
            elif state is None or (state == RUNNING and not (host and _alive(host, pid))):
                state = PENDING
            out[run_id] = RunState(state, attempts or 0, failures or 0, reason or "")
        return out

    def planned(self) -> list[tuple[str, PlannedRun]]:
        """(sweep name, run) of every run in the store, in the order they were planned."""
        rows = self._db.execute(
            "SELECT sweep, run_id, config, budget, holdout, kind, parent, branch_step, params_non_embedding, "
            "params_total, params_flops, flops_per_token, tokens, compute FROM runs ORDER BY rowid"
        ).fetchall()
        return [
            (
                sweep,
                PlannedRun(
                    rid,
                    config_lib.from_dict(json.loads(cfg)),
                    budget,
                    bool(holdout),
                    Accounting(*a),
                    kind or RUN,
                    parent or "",
                    branch_step or 0,
                ),
            )
            for sweep, rid, cfg, budget, holdout, kind, parent, branch_step, *a in rows
        ]

    def set_meta(self, key: str, value) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def measured_flops_per_s(self) -> list[tuple[int, float]]:
        """(d_model, FLOP/s over the whole attempt) of finished runs: the dry run's time model once there are some."""
        return self._db.execute(
            "SELECT r.d_model, r.compute / s.wall_time_s FROM runs r JOIN results s USING (run_id) "
            "WHERE s.resumed_from_step = 0"
        ).fetchall()


def _plan_row(sweep: str, r: PlannedRun, data_tokens: float | None) -> tuple:
    cfg, a = r.config, r.accounting
    return (
        r.run_id,
        sweep,
        r.budget,
        int(r.holdout),
        cfg.train.seed,
        cfg.model.d_model,
        cfg.model.n_layers,
        a.params_non_embedding,
        a.params_total,
        a.params_flops,
        a.flops_per_token,
        a.tokens,
        a.compute,
        cfg.train.steps,
        cfg.train.batch_size,
        cfg.seq_len,
        cfg.train.optimizer.peak_lr,
        cfg.train.optimizer.warmup_steps,
        json.dumps(config_lib.to_dict(cfg), sort_keys=True),
        _now(),
        r.kind,
        r.parent or None,
        r.branch_step if r.parent else None,
        data_tokens,
    )


def observations(directory: str | pathlib.Path) -> list[Observation]:
    """Every finished run in DIR/results.sqlite as an Observation (N = FLOP-equivalent params, D = tokens); cooldown
    trunks are left out (their loss, never decayed, is no run's final loss), their branches name them, and so are
    tune runs (off-optimal LRs at a small budget: tune.json holds them)."""
    path = pathlib.Path(directory) / FILE
    if not path.is_file():
        raise ConfigError(f"{directory} holds no {FILE}; run `meshlm sweep run SPEC --out {directory}` first")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
    rows = db.execute(
        "SELECT r.params_flops, r.tokens, s.final_val_loss, r.compute, r.run_id, r.budget, r.holdout, s.val_curve, "
        "r.parent, r.data_tokens FROM runs r JOIN results s USING (run_id) "
        "WHERE r.kind IS NULL OR r.kind NOT IN (?, ?) "
        "ORDER BY r.budget, r.compute, r.run_id",
        (TRUNK, TUNE),
    ).fetchall()
    db.close()
    return [
        Observation(
            N=n,
            D=float(d),
            loss=loss,
            C=c,
            run_id=rid,
            budget=budget,
            holdout=bool(holdout),
            curve=tuple((float(t), float(v)) for t, v in json.loads(curve)),
            trunk=parent or "",
            unique_tokens=data_tokens,
        )
        for n, d, loss, c, rid, budget, holdout, curve, parent, data_tokens in rows
    ]
