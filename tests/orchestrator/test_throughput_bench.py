"""swarm.bench.orchestrator_throughput: every timed primary run is a real pass (not the annotator's memo), and the
critical path is the primary plus the slowest of its specialists, by hand."""

import pytest

from swarm.bench import orchestrator_throughput as bench
from swarm.model_server.model.primary import PrimaryModel


def test_every_timed_primary_run_is_a_full_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    passes = 0
    forward = PrimaryModel.forward

    def counted(self: PrimaryModel, *args: object, **kwargs: object) -> object:
        nonlocal passes
        passes += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(PrimaryModel, "forward", counted)
    tables = [t for t in bench.validation_tables(6) if all(any(v.strip() for v in c) for c in t.columns)][:2]
    times = bench.stage_times(tables, [0, 1], "tiny", "cpu", repeats=3)
    # two warm-up measurements of the first table (one run each) and three timed runs per table, for k = 0 and 1;
    # each run groups the table's columns by the specialists that read them: here one group (all or none)
    assert passes == 2 * 2 * 1 + len(tables) * 2 * 3
    assert all(ms > 0 for ms in times.primary[0] + times.primary[1] + times.specialist[times.names[0]])
    assert len(times.routing) == len(tables) and all(ms > 0 for ms in times.routing)


def test_critical_path_is_routing_plus_the_slowest_specialist_plus_the_fused_primary() -> None:
    times = bench.StageTimes(names=["a", "b"], routing=[0.5, 0.5],
                             primary={0: [2.0, 2.0], 1: [3.0, 3.0], 2: [4.0, 4.0]},
                             specialist={"a": [1.0, 5.0], "b": [3.0, 1.0]})
    two = bench.critical_path(2, times)
    assert two["critical_path_ms_per_table"] == pytest.approx((0.5 + 4 + 3 + 0.5 + 4 + 5) / 2)
    assert two["serial_ms_per_table"] == pytest.approx((0.5 + 4 + 1 + 3 + 0.5 + 4 + 5 + 1) / 2)
    assert two["critical_path_ratio"] == pytest.approx(round(4 / 17, 3))
    # A pipeline runs at its slowest stage's pace: the fused primary (4) on table 0, the specialist a (5) on table 1.
    assert two["pipelined_ratio"] == pytest.approx(round(4 / 9, 3))
    assert two["fused_primary_ratio"] == pytest.approx(2.0)
    assert two["stages"] == {"primary_alone_ms": 2.0, "routing_ms": 0.5, "fused_primary_ms": 4.0,
                             "slowest_specialist_ms": 4.0, "specialist_ms": {"a": 3.0, "b": 2.0}}
    alone = bench.critical_path(0, times)
    assert alone["critical_path_ratio"] == alone["pipelined_ratio"] == alone["fused_primary_ratio"] == 1.0
    assert alone["stages"]["routing_ms"] == 0.0  # the primary alone routes nothing
