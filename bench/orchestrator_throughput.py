"""Throughput of the serving path with 0, 1, 3 and 8 specialists, relative to the primary alone.

The design's claim: specialists run in parallel with each other, so a table costs one critical step
(S_main + max_i S_sub,i) however many specialists read it, and the swarm keeps most of the primary-only throughput
(goals: >= 0.95x / 0.9x / 0.8x at 1 / 3 / 8 specialists; the design expects 0.9 / 0.85 / 0.7). Models are untrained
(`--config`, default tiny): weights do not change the compute. The tables are the bundled SOTAB validation split
(`data/sotab-v2-sample/validation`), in a fixed order; their names are never sent (each is sent as `table-<i>`).
The k specialists are the first k domains of `domains.yaml` (replicas `temporal@1`, ...: DOMAIN@K names beyond them).

Two measurements per specialist count k (`--counts`, default 0,1,3,8):

1. end to end: a real local swarm on loopback (`start_local_swarm` with k specialist processes and the annotation
   server in this process; for k = 0, which `start_local_swarm` refuses, a primary without specialists served as
   `swarm up` serves one). After a warm-up, one `swarm.client.Annotator` annotates the fixed list of tables one
   after another (unary Annotate) for `--seconds`; tables/s and `ratio_to_primary_only` (tables/s / tables/s
   at k = 0). Every process shares this machine's CPUs: on a 2-core machine the specialist processes compete with
   the primary for the cores, so this ratio measures CPU contention as much as the design.
2. stages, timed one by one in this one process with no swarm running and one torch thread, median over
   `--repeats` per table: routing (the policy's wide plan: the primary's first layer, the complexity head, the
   router), each specialist's `extract_states` on the table's routed (serialized) columns, and the primary's full
   pass (`PrimaryAnnotator.annotate` fusing its k specialists' states and decoding their beliefs, serialization and
   tokenization included). With a core (or an accelerator) per model, a table's critical path is routing + its
   slowest specialist + the fused primary: `critical_path_ratio` = sum over tables of the primary-alone time / sum
   of the critical paths; a pipeline of tables runs at the pace of its slowest stage: `pipelined_ratio` = the same
   sum / sum of the slowest stage per table; `fused_primary_ratio` = the fused primary's time / the primary
   alone's (goals: <= 1.05 / 1.1 / 1.25 at 1 / 3 / 8). The serial sum (every stage one after another) is reported
   beside them. `stages`, `pipelined_ratio` and `critical_path_ratio` in the JSON are keyed by specialist count.

Run: `.venv/bin/python -m swarm.bench.orchestrator_throughput [--quick] [--config tiny|small]`; writes
reports/bench_throughput.json and .md. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from swarm import client
from swarm.model_server.model.specialist import Specialist, domain_of, domains, untrained
from swarm.model_server.model.tables import Table
from swarm.model_server.serving.launcher import served_swarm, start_local_swarm
from swarm.model_server.serving.primary_annotator import PrimaryAnnotator
from swarm.trainer.data.sotab import load_dataset

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "data" / "sotab-v2-sample" / "validation"
GOALS = {1: 0.95, 3: 0.9, 8: 0.8}  # tables/s relative to the primary alone (end to end, pipelined, critical path)
FUSED_GOALS = {1: 1.05, 3: 1.1, 8: 1.25}  # the fused primary's pass relative to the primary alone's, at most
DESIGN_EXPECTS = {1: 0.9, 3: 0.85, 8: 0.7}
MAX_MESSAGE_BYTES = 64 << 20
T = TypeVar("T")


# -- tables and specialists ------------------------------------------------------------------------------------


def validation_tables(limit: int = 0) -> list[Table]:
    """The bundled SOTAB validation tables, sorted by name (a fixed order); the first `limit` when limit > 0."""
    split = load_dataset(VALIDATION)["validation"]
    tables = [split.tables[name] for name in sorted(split.tables)]
    return tables[:limit] if limit > 0 else tables


def to_request(table: Table, index: int) -> client.Table:
    """The table as an annotation request, named by its position only (its SOTAB name is never sent)."""
    rows = [[column[i] for column in table.columns] for i in range(table.n_rows)]
    return client.Table(rows, name=f"table-{index}")


def specialist_names(k: int) -> list[str]:
    """k specialist names: the domains in file order, then replicas DOMAIN@1, DOMAIN@2, ... of them."""
    order = list(domains())
    return [order[i % len(order)] + (f"@{i // len(order)}" if i >= len(order) else "") for i in range(k)]


def untrained_specialist(name: str, config: str) -> Specialist:
    """An untrained specialist as `swarm serve-specialist` builds one: replica K of a domain gets seed K."""
    replica = name.partition("@")[2]
    specialist = untrained(domain_of(name).name, config, seed=int(replica or 0))
    specialist.name = name
    return specialist


# -- 1. end to end ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def annotation_service(k: int, config: str, device: str) -> Iterator[str]:
    """The address of an annotation API with k specialist processes (k = 0: the primary alone).

    k = 0 is served as `swarm up` serves a primary without specialists (launcher.served_swarm). k > 0 cannot be:
    served_swarm serves the specialists a trained primary's model.json names, from their directories, while this
    benchmark serves untrained specialists by name, replicas (`temporal@1`) included; start_local_swarm, which
    served_swarm uses for those, serves them here."""
    if k == 0:
        with served_swarm(PrimaryAnnotator.untrained([], config=config, device=device), device=device) as server:
            yield server.address
        return
    with start_local_swarm(specialist_names(k), config=config, device=device) as swarm:
        yield swarm.annotation_address


@dataclass
class Drive:
    tables: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    degraded: int = 0  # answered with a specialist missing

    @property
    def tables_per_s(self) -> float:
        return self.tables / self.seconds if self.seconds else 0.0


def drive(address: str, tables: Sequence[client.Table], seconds: float, timeout_s: float) -> Drive:
    """One client annotating `tables` in order (cycling) with unary Annotate, back to back, for `seconds` (the call
    in flight at the end finishes and counts). No retries: a refusal counts as an error."""
    out = Drive()
    with client.Annotator(address, timeout_s=timeout_s, max_message_bytes=MAX_MESSAGE_BYTES,
                          max_retries=0) as annotator:
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            table = tables[i % len(tables)]
            t0 = time.perf_counter()
            try:
                reply = annotator.annotate(table.rows, name=table.name)
            except client.AnnotationError as exc:
                out.errors[exc.code] = out.errors.get(exc.code, 0) + 1
            else:
                out.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                out.tables += 1
                out.degraded += bool(reply.specialists_missing)
            i += 1
        out.seconds = time.perf_counter() - start
    return out


def end_to_end(k: int, tables: Sequence[client.Table], config: str, device: str, seconds: float, warmup_s: float,
               timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    with annotation_service(k, config, device) as address:
        startup_s = time.perf_counter() - started
        drive(address, tables, warmup_s, timeout_s)
        time.sleep(1.0)  # let start-up and warm-up work settle
        run = drive(address, tables, seconds, timeout_s)
        primary_threads = torch.get_num_threads()  # the swarm sets the primary's share while it runs
    lat = sorted(run.latencies_ms)
    cpus = os.cpu_count() or 1
    return {
        "specialists": k,
        "names": specialist_names(k),
        "tables_per_s": round(run.tables_per_s, 3),
        "tables": run.tables,
        "seconds": round(run.seconds, 2),
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
        "errors": run.errors,
        "degraded_tables": run.degraded,
        "startup_s": round(startup_s, 1),
        # start_local_swarm's share per specialist process and for the primary in this process (k = 0: torch's
        # default, every core: the primary alone has the machine).
        "specialist_torch_threads": max(1, cpus // (k + 1)) if k else None,
        "primary_torch_threads": primary_threads,
    }


# -- 2. critical path ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = fn()
    return (time.perf_counter() - start) * 1e3, value


def primary_time(primary: PrimaryAnnotator, table: Table, states: dict[str, list[torch.Tensor]],
                 routing: dict[str, list[int]]) -> float:
    """ms of one full primary pass on the table: the annotator memoizes its last fusion per table (route, deep
    stages and annotate share it), so it is told to forget before every timed run."""
    primary.forget()
    return timed(lambda: primary.annotate(table, states, routing))[0]


@dataclass
class StageTimes:
    """Median ms per table of every stage: `routing[t]` (the policy's wide plan for table t: the primary's first
    layer, the complexity head and the router), `primary[k][t]` (the primary fusing k specialists' states and
    decoding their beliefs on table t) and `specialist[name][t]` (extract_states on table t's routed columns; 0
    when routed none)."""

    names: list[str]
    routing: list[float]
    primary: dict[int, list[float]]
    specialist: dict[str, list[float]]


def stage_times(tables: Sequence[Table], counts: Sequence[int], config: str, device: str, repeats: int
                ) -> StageTimes:
    """Every stage of every table, timed separately in this process (call it under `torch_threads(1)`)."""
    names = specialist_names(max(counts, default=0))
    specialists = {name: untrained_specialist(name, config) for name in names}
    primaries = {k: PrimaryAnnotator.untrained(names[:k], config=config, device=device) for k in {0, *counts}}
    router = primaries[max(primaries)]  # routes every specialist (wide search), as the served primary does

    def route_time(table: Table) -> float:
        router.forget()  # the wide plan is memoized per table
        return timed(lambda: router.route(table))[0]

    def measure(table: Table, runs: int) -> tuple[dict[str, float], dict[int, float], float]:
        texts = router.serialize(table)  # the annotation server serializes once and sends each its columns
        routing = {name: cols for name, cols in router.route(table).items() if cols}
        route_ms = statistics.median([route_time(table) for _ in range(runs)])
        spec_runs: dict[str, list[float]] = {name: [0.0] for name in names}
        states: dict[str, list[torch.Tensor]] = {}
        for name, cols in routing.items():
            columns = [texts[i] for i in cols]
            spec_runs[name] = []
            for _ in range(runs):
                ms, states[name] = timed(partial(specialists[name].extract_states, columns))
                spec_runs[name].append(ms)
        prim: dict[int, float] = {}
        for k, primary in primaries.items():
            arrived = {n: states[n] for n in names[:k] if n in states}
            routes = {n: routing[n] for n in names[:k] if n in routing}
            prim[k] = statistics.median([primary_time(primary, table, arrived, routes) for _ in range(runs)])
        return {name: statistics.median(r) for name, r in spec_runs.items()}, prim, route_ms

    for _ in range(2):  # first calls allocate and pick kernels
        measure(tables[0], 1)
    out = StageTimes(names, [], {k: [] for k in primaries}, {name: [] for name in names})
    for table in tables:
        spec, prim, route_ms = measure(table, repeats)
        out.routing.append(route_ms)
        for name, ms in spec.items():
            out.specialist[name].append(ms)
        for k, ms in prim.items():
            out.primary[k].append(ms)
    return out


def critical_path(k: int, times: StageTimes) -> dict[str, object]:
    """The k-specialist swarm from its stage times, against the primary alone (`primary[0]`): with a core or an
    accelerator per model, a table's critical path is routing + its slowest specialist + the fused primary
    (S_main + max_i S_sub,i), and a pipeline of tables runs at the pace of its slowest stage."""
    names = times.names[:k]
    n = len(times.primary[0])
    routing = times.routing if k else [0.0] * n  # the primary alone routes nothing
    slowest = [max((times.specialist[s][t] for s in names), default=0.0) for t in range(n)]
    crit = [routing[t] + slowest[t] + times.primary[k][t] for t in range(n)]
    serial = [routing[t] + times.primary[k][t] + sum(times.specialist[s][t] for s in names) for t in range(n)]
    pipelined = [max(routing[t], slowest[t], times.primary[k][t]) for t in range(n)]
    alone = sum(times.primary[0])

    def ratio(total: float) -> float | None:
        return round(alone / total, 3) if total else None

    return {
        "specialists": k,
        "critical_path_ratio": ratio(sum(crit)),
        "pipelined_ratio": ratio(sum(pipelined)),
        "serial_ratio": ratio(sum(serial)),
        "fused_primary_ratio": round(sum(times.primary[k]) / alone, 3) if alone else None,
        "critical_path_ms_per_table": round(sum(crit) / n, 3),
        "serial_ms_per_table": round(sum(serial) / n, 3),
        "stages": {
            "primary_alone_ms": round(alone / n, 3),
            "routing_ms": round(sum(routing) / n, 3),
            "fused_primary_ms": round(sum(times.primary[k]) / n, 3),
            "slowest_specialist_ms": round(sum(slowest) / n, 3),
            "specialist_ms": {s: round(sum(times.specialist[s]) / n, 3) for s in names},
        },
    }


# -- report ----------------------------------------------------------------------------------------------------


def _goal_cell(k: int, ratio: float | None) -> str:
    if k not in GOALS or ratio is None:
        return "-"
    return f"{'met' if ratio >= GOALS[k] else 'missed'} (>= {GOALS[k]})"


def _fused_cell(k: int, ratio: float | None) -> str:
    if k not in FUSED_GOALS or ratio is None:
        return "-"
    return f"{'met' if ratio <= FUSED_GOALS[k] else 'missed'} (<= {FUSED_GOALS[k]})"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Serving throughput with 0-8 specialists, relative to the primary alone",
        "",
        f"Untrained `{result['config']}` models on {m['platform']} ({m['cpu_count']} CPUs), device "
        f"{result['device']}; {result['tables']} SOTAB validation tables in a fixed order (median "
        f"{result['median_columns']:g} columns x {result['median_rows']:g} rows). Command: `{result['command']}`.",
        "",
        "| specialists | tables/s (end to end) | ratio to primary only | critical-path ratio | critical path ms/table "
        "| serial ms/table | goal (end to end / critical path) | design expects |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["throughput"]:
        k = row["specialists"]
        ratio = row["ratio_to_primary_only"]
        lines.append(
            f"| {k} | {row['tables_per_s']} | {ratio if ratio is not None else '-'} | {row['critical_path_ratio']} | "
            f"{row['critical_path_ms_per_table']} | {row['serial_ms_per_table']} | "
            f"{_goal_cell(k, ratio)} / {_goal_cell(k, row['critical_path_ratio'])} | "
            f"{DESIGN_EXPECTS.get(k, '-')} |"
        )
    lines += [
        "",
        "Per stage (ms per table, one torch thread, mean over the tables):",
        "",
        "| specialists | routing | fused primary (x alone) | slowest specialist | pipelined ratio | critical-path "
        "ratio | goal (fused / pipelined) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["critical_path"]:
        k, st = row["specialists"], row["stages"]
        lines.append(
            f"| {k} | {st['routing_ms']} | {st['fused_primary_ms']} ({row['fused_primary_ratio']}) | "
            f"{st['slowest_specialist_ms']} | {row['pipelined_ratio']} | {row['critical_path_ratio']} | "
            f"{_fused_cell(k, row['fused_primary_ratio'])} / {_goal_cell(k, row['pipelined_ratio'])} |"
        )
    e2e = {d["specialists"]: d for d in result["end_to_end"]}
    lines += [
        "",
        "Goals: at least 0.95x / 0.9x / 0.8x the primary-only throughput with 1 / 3 / 8 specialists; the design "
        "expects 0.9 / 0.85 / 0.7 (one critical step per table: S_main + max_i S_sub,i).",
        "",
        f"- End to end: one client, unary Annotate back to back for {result['seconds']:g} s after a "
        f"{result['warmup_s']:g} s warm-up, through the real annotation server and k specialist processes on "
        f"loopback. On this {m['cpu_count']}-core machine the specialist processes compete with the primary for the "
        "cores (on a 2-core machine, any k >= 1 oversubscribes them), so the end-to-end ratio measures CPU "
        "contention as much as the design. Errors: "
        + ", ".join(f"k={k}: {sum(d['errors'].values())}" for k, d in e2e.items())
        + "; tables answered with a specialist missing: "
        + ", ".join(f"k={k}: {d['degraded_tables']}" for k, d in e2e.items()) + ".",
        f"- Stages: timed one by one in one process with no swarm running and one torch thread, median of "
        f"{result['repeats']} runs per table and stage. Critical path = routing + the slowest of its k specialists "
        "+ the fused primary (fusing the k specialists' states and decoding their beliefs); critical-path ratio = "
        "sum of primary-only times / sum of critical paths (the end-to-end ratio with a core or accelerator per "
        "model); pipelined ratio = the same sum / sum of each table's slowest stage (tables streamed through the "
        "stages). Serial = every stage one after another.",
        f"- 1-minute load average before / after: {result['load_average'][0]} / {result['load_average'][1]} (other "
        "work on the machine slows the end-to-end numbers).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tiny", help="Config of the untrained primary and specialists (tiny, small).")
    p.add_argument("--seconds", type=float, default=20.0, help="End-to-end measurement per specialist count.")
    p.add_argument("--warmup-s", type=float, default=3.0, help="End-to-end warm-up per specialist count.")
    p.add_argument("--counts", default="0,1,3,8", help="Comma-separated specialist counts (0: the primary alone).")
    p.add_argument("--tables", type=int, default=0, help="Use the first N validation tables (0: all).")
    p.add_argument("--repeats", type=int, default=5, help="Timed runs per table and stage (the median is kept).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--quick", action="store_true", help="5 s per count, 3 repeats per stage.")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    a = p.parse_args(argv)
    seconds = 5.0 if a.quick else a.seconds
    warmup_s = min(a.warmup_s, 2.0) if a.quick else a.warmup_s
    repeats = 3 if a.quick else a.repeats
    counts = sorted({int(c) for c in a.counts.split(",") if c.strip()})
    if any(c < 0 for c in counts):
        p.error("--counts must be non-negative")

    tables = validation_tables(a.tables)
    requests = [to_request(t, i) for i, t in enumerate(tables)]
    load_before = os.getloadavg()[0]

    e2e = []
    for k in counts:
        print(f"end to end: {k} specialist(s) ...", file=sys.stderr, flush=True)
        e2e.append(end_to_end(k, requests, a.config, a.device, seconds, warmup_s, a.timeout_s))
        print(f"  {e2e[-1]['tables_per_s']} tables/s", file=sys.stderr, flush=True)
    print("critical path: per-stage times ...", file=sys.stderr, flush=True)
    with torch_threads(1):
        times = stage_times(tables, counts, a.config, a.device, repeats)
    crit = {k: critical_path(k, times) for k in counts}

    base = next((d["tables_per_s"] for d in e2e if d["specialists"] == 0), None)
    throughput = [
        {
            "specialists": d["specialists"],
            "tables_per_s": d["tables_per_s"],
            "ratio_to_primary_only": round(d["tables_per_s"] / base, 3) if base else None,
            "critical_path_ratio": crit[d["specialists"]]["critical_path_ratio"],
            "critical_path_ms_per_table": crit[d["specialists"]]["critical_path_ms_per_table"],
            "serial_ms_per_table": crit[d["specialists"]]["serial_ms_per_table"],
        }
        for d in e2e
    ]
    command = " ".join(["python -m swarm.bench.orchestrator_throughput", *(sys.argv[1:] if argv is None else argv)])
    result = {
        "throughput": throughput,
        "end_to_end": e2e,
        "critical_path": list(crit.values()),
        # The stages and both ratios per specialist count (the keys), from `critical_path`.
        "stages": {str(k): c["stages"] for k, c in crit.items()},
        "pipelined_ratio": {str(k): c["pipelined_ratio"] for k, c in crit.items()},
        "critical_path_ratio": {str(k): c["critical_path_ratio"] for k, c in crit.items()},
        "fused_primary_ratio": {str(k): c["fused_primary_ratio"] for k, c in crit.items()},
        "config": a.config,
        "device": a.device,
        "tables": len(tables),
        "median_columns": statistics.median(t.n_columns for t in tables),
        "median_rows": statistics.median(t.n_rows for t in tables),
        "seconds": seconds,
        "warmup_s": warmup_s,
        "repeats": repeats,
        "goals": {str(k): v for k, v in GOALS.items()},
        "fused_primary_goals": {str(k): v for k, v in FUSED_GOALS.items()},
        "design_expects": {str(k): v for k, v in DESIGN_EXPECTS.items()},
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "command": command,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_throughput.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (a.out / "bench_throughput.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
