"""swarm.bench.serving_load: the novel workload's tables hold cells no cache has seen (every non-empty cell changed,
never the same twice, empty cells kept empty), and the report names what it served and each workload's row."""

from __future__ import annotations

import random

from swarm.bench import serving_load as bench
from swarm.client import AnnotationError, Table

TABLE = Table([["Berlin", "", "12"], ["Paris", " ", "12"]], name="t")


def test_novel_tables_change_every_cell_and_never_repeat() -> None:
    rnd = random.Random(0)
    first, second = bench.with_novel_cells(TABLE, rnd, 1), bench.with_novel_cells(TABLE, rnd, 2)
    cells = [c for t in (first, second) for row in t.rows for c in row if c.strip()]
    assert len(cells) == len(set(cells)) == 8  # the two "12"s too: no cell seen before, even within a table
    assert all(c.split(" ")[0] in {"Berlin", "Paris", "12"} for c in cells)  # the value itself is kept
    assert [row[1] for row in first.rows] == ["", " "]  # empty stays empty


def test_the_report_has_a_row_per_workload_and_counts_the_specialists() -> None:
    outcome = bench.Outcome(latencies_ms=[10.0, 30.0], seconds=2.0, specialists_missing=1, degraded=1)
    other = bench.Outcome(latencies_ms=[5.0], seconds=2.0)
    outcome.attached = {"cached_client": other.summary()}
    processes = {"annotation (1)": 2**30, "specialist temporal (2)": 2**29, "specialist people (3)": 2**29}
    result = {
        "workloads": {"novel": outcome.summary(), "contention": outcome.summary()},
        "swarm": bench.describe_swarm(False, "tiny", processes),
        "machine": "m",
        "admission_budget_bytes": 2**30,
        "clients": 4,
        "command": "python -m swarm.bench.serving_load",
        "median_table": "8 x 5",
        "wide_every": 10,
        "wide_columns": 128,
        "huge_every": 25,
        "peak_rss_bytes": 2**31,
        "idle_rss_bytes": 2**31,
        "process_rss_bytes": processes,
        "machine_memory_bytes": 2**34,
        "processes_lost": 0,
        "load_average": [1, 2],
        "process_private_bytes": {name: b // 4 for name, b in processes.items()},
        "torch_import_rss_bytes": 500 * 2**20,
        "cached_tables": 64,
    }
    text = bench.markdown(result)
    assert "(2 untrained `tiny` specialists + primary)" in text
    assert "| novel: " in text and "| 1.0 | 20.0 | 30.0 | 0 | 1 | 2 |" in text
    assert "meanwhile, 1 client of cached" in text and "specialist temporal (2) 512" in text
    assert "private (unshared) memory per process at idle: annotation (1) 256" in text and "is 500 MiB" in text


def test_private_memory_is_what_a_process_does_not_share() -> None:
    import os

    mine = bench.private_bytes(os.getpid())
    assert 0 < mine < bench.rss_bytes(os.getpid())  # the interpreter's own pages are shared with nobody else
    assert bench.private_bytes(2**22 + 1) == 0  # no such process


def test_a_refusal_up_front_is_told_from_a_deadline_that_ran_out() -> None:
    assert bench.refused_up_front(AnnotationError("RESOURCE_EXHAUSTED", "send at most 300 columns"))
    assert bench.refused_up_front(AnnotationError("DEADLINE_EXCEEDED", "refused up front: 14,162 never-seen"))
    assert not bench.refused_up_front(AnnotationError("DEADLINE_EXCEEDED", "Deadline Exceeded"))
    assert not bench.refused_up_front(AnnotationError("RESOURCE_EXHAUSTED", "Concurrent RPC limit exceeded!"))
