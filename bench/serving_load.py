"""Load test of the serving path: a whole local swarm (annotation server + one specialist process per domain) on
loopback, driven by concurrent clients for a bounded time.

1. sustained: SOTAB-median tables (the bundled SOTAB sample's tables whose width is within the interquartile range
   of widths) sent by `--clients` threads back to back; tables/s, client-side p50/p99 latency, errors.
2. wide_mix: the same, but one table in `--wide-every` is a wide one (`--wide-columns` columns of SOTAB cells) and
   one in `--huge-every` is over the per-table cap (1,024 columns): refused at once with RESOURCE_EXHAUSTED saying
   how many columns fit (counted as `refused_over_cap`, not as errors).

The swarm runs with the admission budget set to the machine's memory (`--memory-budget-mb` = MemTotal, or the
cgroup limit); the process tree's resident memory is sampled every 100 ms (`peak_rss_bytes`), and a process of the
swarm that dies or is restarted counts in `processes_lost`. With `runs/demo` (after `make demo`) the swarm is
`swarm up` on the demo's trained models; without it, `swarm serve-annotation --local` with untrained models of
`--config` (default small, the demo's size: the same memory and compute per table).

Run: `.venv/bin/python bench/serving_load.py [--quick]`; writes reports/bench_serving.json and .md. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from swarm.model_server.admission import machine_memory_bytes
from swarm.model_server.grpc_runtime import wait_serving
from swarm.model_server.launcher import process_tree, rss_bytes
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "sotab-v2-sample"
MiB = 1 << 20


# -- tables ----------------------------------------------------------------------------------------------------


def sotab_tables() -> list[apb.Table]:
    """The sample's tables as request messages (the load generator drives raw stubs to control concurrency)."""
    from swarm.trainer.sotab import load_split

    tables = [t for split in ("validation", "training") for t in load_split(DATA / split).tables.values()]
    return [apb.Table(name=t.name, rows=[apb.Row(cells=[c[i] for c in t.columns]) for i in range(t.n_rows)])
            for t in tables]


def median_tables(tables: list[apb.Table]) -> list[apb.Table]:
    widths = sorted(len(t.rows[0].cells) for t in tables)
    low, high = widths[len(widths) // 4], widths[(3 * len(widths)) // 4]
    return [t for t in tables if low <= len(t.rows[0].cells) <= high]


def wide_table(tables: list[apb.Table], columns: int, rows: int, seed: int) -> apb.Table:
    """`columns` real SOTAB columns side by side (cells drawn from the sample's columns, `rows` rows)."""
    rnd = random.Random(seed)
    pool = [[row.cells[j] for row in t.rows] for t in tables for j in range(len(t.rows[0].cells))]
    picked = [rnd.choice(pool) for _ in range(columns)]
    return apb.Table(
        name=f"wide-{columns}-{seed}",
        rows=[apb.Row(cells=[col[i % len(col)] for col in picked]) for i in range(rows)],
    )


# -- the swarm -------------------------------------------------------------------------------------------------


@dataclass
class Swarm:
    process: subprocess.Popen[bytes]
    address: str
    log: Path
    pids: list[int] = field(default_factory=list)


def start_swarm(workdir: Path, budget_mb: int, config: str, extra: list[str]) -> Swarm:
    ready = workdir / "ready.json"
    log = workdir / "swarm.log"
    if (ROOT / "runs" / "demo").is_dir():
        command = ["up", "--run-dir", str(ROOT / "runs" / "demo")]
    else:
        command = ["serve-annotation", "--config", config]
    cmd = [sys.executable, "-m", "swarm.trainer.cli", *command, "--port", "0", "--ready-file", str(ready),
           "--device", "cpu", "--memory-budget-mb", str(budget_mb), *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 300
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"the swarm did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    address = json.loads(ready.read_text())["address"]
    wait_serving(address, 120)
    return Swarm(proc, address, log, process_tree(proc.pid))


def stop_swarm(swarm: Swarm) -> None:
    if swarm.process.poll() is None:
        swarm.process.send_signal(signal.SIGTERM)
        try:
            swarm.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(swarm.process.pid, signal.SIGKILL)
            swarm.process.wait()


class RssSampler:
    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(rss_bytes(p) for p in process_tree(self.pid)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- load ------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    refused_over_cap: int = 0
    degraded: int = 0
    missing_reasons: dict[str, int] = field(default_factory=dict)  # status code of a missing specialist -> count
    wide_latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

        out: dict[str, object] = {
            "tables_per_s": round(len(lat) / self.seconds, 2) if self.seconds else 0.0,
            "p50_ms": round(statistics.median(lat), 1) if lat else None,
            "p99_ms": pct(0.99),
            "errors": sum(self.errors.values()),
            "tables": len(lat),
            "seconds": round(self.seconds, 1),
            "error_codes": self.errors,
            "degraded_tables": self.degraded,
            "missing_specialist_codes": self.missing_reasons,
        }
        if self.wide_latencies_ms or self.refused_over_cap:
            wide = sorted(self.wide_latencies_ms)
            out |= {"wide_tables": len(wide), "wide_p50_ms": round(statistics.median(wide), 1) if wide else None,
                    "refused_over_cap": self.refused_over_cap}
        return out


def drive(address: str, next_table: Callable[[int], tuple[apb.Table, str]], clients: int, seconds: float,
          timeout_s: float) -> Outcome:
    """`clients` threads calling Annotate back to back for `seconds` (calls started before the end finish)."""
    outcome = Outcome()
    lock = threading.Lock()
    counter = iter(range(10**9))
    end = time.monotonic() + seconds

    def client() -> None:
        channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20),
                                                           ("grpc.max_send_message_length", 64 << 20)])
        stub = apb_grpc.AnnotationServiceStub(channel)
        while time.monotonic() < end:
            with lock:
                i = next(counter)
            table, kind = next_table(i)
            start = time.perf_counter()
            try:
                reply = stub.Annotate(table, timeout=timeout_s)
            except grpc.RpcError as exc:
                with lock:
                    if kind == "huge" and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED \
                            and "send at most" in (exc.details() or ""):
                        outcome.refused_over_cap += 1
                    else:
                        outcome.errors[exc.code().name] = outcome.errors.get(exc.code().name, 0) + 1
                continue
            ms = (time.perf_counter() - start) * 1e3
            with lock:
                outcome.latencies_ms.append(ms)
                if kind == "wide":
                    outcome.wide_latencies_ms.append(ms)
                if reply.specialists_missing:
                    outcome.degraded += 1
                    for missing in reply.specialists_missing:
                        code = missing.reason.split(":", 1)[0]
                        outcome.missing_reasons[code] = outcome.missing_reasons.get(code, 0) + 1
        channel.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcome.seconds = time.monotonic() - started
    return outcome


def markdown(result: dict) -> str:
    s, w = result["sustained"], result["wide_mix"]
    lines = [
        "# Serving under load",
        "",
        f"{result['swarm']} on {result['machine']}; admission budget "
        f"{result['admission_budget_bytes'] / 2**30:.1f} GiB (the machine's memory), {result['clients']} client "
        f"threads on loopback. Command: `{result['command']}`.",
        "",
        "| workload | tables/s | p50 ms | p99 ms | errors | tables |",
        "|---|---|---|---|---|---|",
        f"| sustained: SOTAB-median tables ({result['median_table']}) | {s['tables_per_s']} | {s['p50_ms']} | "
        f"{s['p99_ms']} | {s['errors']} | {s['tables']} |",
        f"| wide_mix: 1 in {result['wide_every']} tables {result['wide_columns']} columns wide, 1 in "
        f"{result['huge_every']} over the cap | {w['tables_per_s']} | {w['p50_ms']} | {w['p99_ms']} | {w['errors']} | "
        f"{w['tables']} |",
        "",
        f"- wide tables served: {w.get('wide_tables', 0)} (p50 {w.get('wide_p50_ms')} ms); over-cap tables refused "
        f"with RESOURCE_EXHAUSTED: {w.get('refused_over_cap', 0)}; tables answered degraded (a specialist missing): "
        f"{s['degraded_tables']} sustained, {w['degraded_tables']} wide_mix (missing specialists by status: "
        f"{s['missing_specialist_codes'] or 'none'} / {w['missing_specialist_codes'] or 'none'}; a specialist that "
        "cannot answer within the 30 s specialist timeout is left out, not waited for).",
        f"- peak RSS of the swarm's processes: {result['peak_rss_bytes'] / 2**30:.2f} GiB (idle before the load: "
        f"{result['idle_rss_bytes'] / 2**30:.2f} GiB; machine memory {result['machine_memory_bytes'] / 2**30:.1f} "
        "GiB).",
        f"- processes lost (died or restarted): {result['processes_lost']}.",
        f"- 1-minute load average before / after the run: {result['load_average'][0]} / "
        f"{result['load_average'][1]} (on {os.cpu_count()} CPUs; anything above the swarm's own load is other work "
        "on the machine, which slows these numbers).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small", help="Model config of the untrained swarm (without runs/demo).")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=60.0, help="Length of the sustained workload (the mix: 4/3 of it).")
    p.add_argument("--wide-columns", type=int, default=128)
    p.add_argument("--wide-every", type=int, default=10)
    p.add_argument("--huge-every", type=int, default=25)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--quick", action="store_true", help="15 s per workload.")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    a = p.parse_args(argv)
    seconds = 15.0 if a.quick else a.seconds

    tables = sotab_tables()
    median = median_tables(tables)
    widths = sorted(len(t.rows[0].cells) for t in median)
    rows = sorted(len(t.rows) for t in median)
    rnd = random.Random(0)
    wides = [wide_table(tables, a.wide_columns, 20, seed) for seed in range(8)]
    huge = wide_table(tables, 1024, 20, 99)

    def sustained(i: int) -> tuple[apb.Table, str]:
        return rnd.choice(median), "median"

    def mixed(i: int) -> tuple[apb.Table, str]:
        if i % a.huge_every == a.huge_every - 1:
            return huge, "huge"
        if i % a.wide_every == a.wide_every - 1:
            return wides[i % len(wides)], "wide"
        return rnd.choice(median), "median"

    budget = machine_memory_bytes()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        swarm = start_swarm(Path(tmp), budget // MiB, a.config, [])
        try:
            drive(swarm.address, sustained, a.clients, 5.0, a.timeout_s)  # warm-up
            time.sleep(2.0)
            idle = sum(rss_bytes(p) for p in process_tree(swarm.process.pid))
            with RssSampler(swarm.process.pid) as sampler:
                steady = drive(swarm.address, sustained, a.clients, seconds, a.timeout_s)
                mix = drive(swarm.address, mixed, a.clients, seconds * 4 / 3, a.timeout_s)
            survivors = process_tree(swarm.process.pid)
            log = swarm.log.read_text(errors="replace")
        finally:
            stop_swarm(swarm)
    # A process of the swarm that is gone, or a specialist the supervisor had to restart (its new process would
    # otherwise hide the loss).
    lost = max(len(set(swarm.pids) - set(survivors)), log.count("restarting it in"))
    swarm_kind = ("`swarm up` on runs/demo" if (ROOT / "runs" / "demo").is_dir()
                  else f"`swarm serve-annotation --local` (5 untrained `{a.config}` specialists + primary)")
    result = {
        "sustained": steady.summary(),
        "wide_mix": mix.summary(),
        "peak_rss_bytes": sampler.peak,
        "idle_rss_bytes": idle,
        "admission_budget_bytes": budget,
        "machine_memory_bytes": machine_memory_bytes(),
        "processes_lost": lost,
        "processes": len(swarm.pids),
        "clients": a.clients,
        "seconds_per_workload": seconds,
        "median_table": f"{statistics.median(widths):g} columns x {statistics.median(rows):g} rows, "
                        f"{widths[0]}-{widths[-1]} columns",
        "wide_columns": a.wide_columns,
        "wide_every": a.wide_every,
        "huge_every": a.huge_every,
        "swarm": swarm_kind,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {machine_memory_bytes() / 2**30:.0f} GiB",
        "command": "python bench/serving_load.py" + (" --quick" if a.quick else ""),
        # Other work on the machine competes for the same CPUs: the 1-minute load average before and after.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_serving.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (a.out / "bench_serving.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
