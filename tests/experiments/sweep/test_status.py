"""`meshlm sweep status DIR` on a store in known states: each run under its state, with its progress, tries, last
failure and the time left at the FLOP/s measured on a finished run of its width."""

import dataclasses
import json
import subprocess
import sys

import pytest

from meshlm.experiments.cli import main
from meshlm.experiments.sweep import plan as plan_lib
from meshlm.experiments.sweep import runner
from meshlm.experiments.sweep import spec as spec_lib
from meshlm.experiments.sweep.failures import Failure
from meshlm.experiments.sweep.store import Owner, RunResult, Store
from tests.experiments.sweep.helpers import write_spec

DONE_IN_S = 100.0


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Six runs of one spec: done, running (step 7 logged), left running by a dead driver, retrying, failed, new."""
    root = tmp_path_factory.mktemp("status")
    (root / "corpus.txt").write_text("never read: the runs are put into their states by hand\n")  # fingerprinted
    spec = spec_lib.load(
        write_spec(
            root / "spec.yaml",
            f"text:{root}/corpus.txt",
            root / "cache",
            shapes=[{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 1}],
            seeds=[0, 1, 2],
        )
    )
    runs = plan_lib.resolve(spec)
    narrow = [r.run_id for r in runs if r.config.model.d_model == 16]
    wide = [r.run_id for r in runs if r.config.model.d_model == 32]
    ids = {"done": narrow[0], "running": narrow[1], "orphaned": narrow[2], "retrying": wide[0], "failed": wide[1]}
    out = root / "out"
    store = Store(out)
    store.add_plan(spec.name, runs)
    store.set_meta(f"spec:{spec.name}", dataclasses.asdict(spec))
    for name in ("done", "running", "retrying", "failed"):
        store.claim(ids[name])
        store.start_attempt(ids[name])
    result = RunResult(3.0, 3.1, ((1, 3.0),), ((1, 3.1),), DONE_IN_S, None, None, 0, "here")
    store.record_result(ids["done"], result, revision="abc")
    store.record_failure(ids["retrying"], Failure("killed by signal 9 (Killed)", True), retries=3)
    store.start_attempt(ids["failed"])
    store.record_failure(ids["failed"], Failure("ConfigError: mesh 'data=3' needs 3 devices", False), retries=3)
    gone = Store(out, owner=Owner(store.owner.host, _dead_pid(), "gone"))
    gone.claim(ids["orphaned"])
    gone.start_attempt(ids["orphaned"])
    for name, step in (("running", 7), ("orphaned", 4)):
        run_dir = out / runner.RUNS / ids[name]
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 4.0}) + "\n")
    store.close()
    return spec, runs, ids, out  # the running run's claim stays live: its owner is this test process


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_status_lists_every_run_under_its_state(sweep, capsys):
    spec, runs, ids, out = sweep
    assert main(["sweep", "status", str(out)]) == 0
    header, columns, *lines = capsys.readouterr().out.splitlines()
    assert header.startswith("1 done, 1 running, 2 pending, 1 retrying, 1 failed; ")
    state = {line.split()[1]: line.split()[0] for line in lines}
    new = next(r.run_id for r in runs if r.run_id not in ids.values())
    assert state == {
        ids["done"]: "done",
        ids["running"]: "running",
        ids["orphaned"]: "pending",  # its driver is gone: the next one resumes it
        new: "pending",
        ids["retrying"]: "retrying",
        ids["failed"]: "failed",
    }
    assert [line.split()[0] for line in lines] == ["done", "running", "pending", "pending", "retrying", "failed"]
    by_id = {line.split()[1]: line for line in lines}
    steps = {r.run_id: r.config.train.steps for r in runs}
    assert f" 7/{steps[ids['running']]} " in by_id[ids["running"]]
    assert by_id[ids["failed"]].endswith("ConfigError: mesh 'data=3' needs 3 devices")
    assert by_id[ids["failed"]].split()[3] == "2"  # tries
    assert by_id[ids["retrying"]].endswith("killed by signal 9 (Killed)")


def test_status_json_gives_the_time_left_at_the_measured_rate(sweep, capsys):
    spec, runs, ids, out = sweep
    assert main(["sweep", "status", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["counts"] == {"done": 1, "running": 1, "pending": 2, "retrying": 1, "failed": 1}
    eta = {r["run_id"]: r["eta_s"] for r in shown["runs"]}
    by_id = {r.run_id: r for r in runs}
    measured = [(16, by_id[ids["done"]].accounting.compute / DONE_IN_S)]
    running = by_id[ids["running"]]
    expected = runner.estimate_seconds(spec, running, measured) * (1 - 7 / running.config.train.steps)
    assert eta[ids["running"]] == pytest.approx(expected, rel=1e-12)
    assert eta[ids["done"]] is None and eta[ids["failed"]] is None
    assert shown["eta_s"] == pytest.approx(sum(e for e in eta.values() if e is not None), rel=1e-12)


def test_status_of_a_directory_without_a_store_is_a_one_line_error(tmp_path, capsys):
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert "holds no results.sqlite" in capsys.readouterr().err
