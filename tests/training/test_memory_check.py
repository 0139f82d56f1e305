"""Each run logs its peak device memory beside the planner's prediction, and says when they are 20 % apart."""

import types

import pytest

from meshlm.model.transformer import Transformer
from meshlm.parallel import planner
from meshlm.training import memory_check
from meshlm.training import metrics as metrics_lib
from meshlm.training.trainer import Trainer
from tests.training.helpers import small_config, text_corpus


def test_the_first_record_holds_xla_peak_and_the_plan_and_a_gap_past_20_percent_is_logged(tmp_path, monkeypatch):
    cfg = small_config(text_corpus(tmp_path), tmp_path, steps=4, **{"train.log_every": 2})
    # A planner that predicts double its real figure for this config: the run must say so.
    real = memory_check.planned_bytes
    monkeypatch.setattr(memory_check, "planned_bytes", lambda setup: 2 * real(setup))
    log = []
    trainer = Trainer(cfg, tmp_path / "run", log=log.append)
    trainer.run(progress=False)

    first, second = metrics_lib.read(tmp_path / "run")
    xla = trainer.setup.lower(fresh=True).compile().memory_analysis()
    peak = xla.argument_size_in_bytes + xla.output_size_in_bytes - xla.alias_size_in_bytes + xla.temp_size_in_bytes
    plan = planner.plan(cfg.model, cfg.train, cfg.mesh, 1, "cpu", mfu=1.0)
    assert first["memory_peak_bytes"] == peak
    assert first["memory_planned_bytes"] == 2 * plan.total
    assert "memory_peak_bytes" not in second
    warnings = [line for line in log if "peak device memory" in line]
    assert len(warnings) == 1 and f"{peak / (2 * plan.total):.2f}x" in warnings[0]


def test_the_check_reuses_the_first_step_s_trace_instead_of_tracing_the_model_again(tmp_path, monkeypatch):
    """Lowering the step again for XLA's memory analysis hits JAX's trace of the first call (its rates placed as the
    call places them): no second trace of the model, which at GPT-3 sizes takes seconds."""
    traced, during_check = [], []
    call = Transformer.__call__
    monkeypatch.setattr(Transformer, "__call__", lambda self, *a, **k: traced.append(1) or call(self, *a, **k))
    check = memory_check.check

    def counted(setup):
        before = len(traced)
        result = check(setup)
        during_check.append(len(traced) - before)
        return result

    monkeypatch.setattr(memory_check, "check", counted)
    cfg = small_config(text_corpus(tmp_path), tmp_path, steps=2, **{"train.eval_every": 100})
    Trainer(cfg, tmp_path / "run", log=lambda *_: None).run(progress=False)
    assert traced and during_check == [0]


@pytest.mark.parametrize("peak, warns", [(121, True), (119, False), (81, False), (79, True)])
def test_warns_past_20_percent_either_way(peak, warns):
    assert bool(memory_check.MemoryCheck(peak, "test", planned=100).warning()) == warns


def test_devices_that_count_allocations_give_their_largest_peak():
    device = lambda peak: types.SimpleNamespace(memory_stats=lambda: {"peak_bytes_in_use": peak})  # noqa: E731
    mesh = types.SimpleNamespace(local_devices=[device(5), device(9), device(7)])
    setup = types.SimpleNamespace(partitioner=types.SimpleNamespace(mesh=mesh))
    assert memory_check.measured_peak(setup) == (9.0, "device memory_stats peak_bytes_in_use")
