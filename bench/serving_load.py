"""Load test of the serving path: a whole local swarm (annotation server + one specialist process per domain) on
loopback, driven by concurrent clients for a bounded time.

1. sustained: `--sustained-tables` SOTAB-median tables (the bundled SOTAB sample's tables whose width is within the
   interquartile range of widths), each annotated once before the clock starts so that their cells are cached,
   then sent by `--clients` threads back to back; tables/s, client-side p50/p99 latency, errors.
2. wide_mix: the same, but one table in `--wide-every` is a wide one (`--wide-columns` columns of SOTAB cells) and
   one in `--huge-every` is 1,024 columns wide: answered within its deadline, or refused at once with
   RESOURCE_EXHAUSTED saying how many columns fit or with DEADLINE_EXCEEDED saying its never-seen cells cannot be
   encoded before its deadline (any table refused so counts in `refused_up_front`, by kind, not as an error).
3. novel: the SOTAB-median tables again, every non-empty cell given a random suffix, so no cell of any table was
   ever seen by any cache (what every real user's data is): the cost of encoding cells, not of looking them up.
4. contention: four clients send 200-row x 5-column tables of never-seen cells back to back while one more
   client sends cached SOTAB-median tables: what the novel tables cost everyone else (`cached_client`).

Each workload reports tables/s, client-side p50/p99, errors and `specialists_missing` (specialists left out of
replies, all tables together; `degraded_tables` counts the tables). `--workloads` picks which run.

The swarm runs with the admission budget set to the machine's memory (`--memory-budget-mb` = MemTotal, or the
cgroup limit); the process tree's resident memory is sampled every 100 ms (`peak_rss_bytes`), and a process of the
swarm that dies or is restarted counts in `processes_lost`. Per process, its resident and its private (unshared)
memory at idle, beside what a bare `import torch` of this venv holds resident (the floor of any model process).
With `runs/demo` (after `make demo`) the swarm is `swarm up` on the demo's trained models; without it (or with
`--untrained`), `swarm serve-annotation --local` with untrained models of `--config` (default small, the demo's
size: the same memory and compute per table).

Run: `.venv/bin/python -m swarm.bench.serving_load [--quick]`; writes reports/bench_serving.json and .md.
Loopback only; the load generator is swarm.client's Annotator, one per client thread, without retries.
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

from swarm.client import AnnotationError, Annotator, Table
from swarm.model_server.serving.admission import machine_memory_bytes
from swarm.model_server.serving.grpc_runtime import wait_serving
from swarm.model_server.serving.launcher import process_tree, rss_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "sotab-v2-sample"
MiB = 1 << 20
MAX_MESSAGE_BYTES = 64 * MiB  # the 1,024-column table fits


# -- tables ----------------------------------------------------------------------------------------------------


def sotab_tables() -> list[Table]:
    """The sample's tables as requests (row-major cells, as swarm.client sends them)."""
    from swarm.trainer.data.sotab import load_split

    tables = [t for split in ("validation", "training") for t in load_split(DATA / split).tables.values()]
    return [Table([[c[i] for c in t.columns] for i in range(t.n_rows)], name=t.name) for t in tables]


def median_tables(tables: list[Table]) -> list[Table]:
    widths = sorted(len(t.rows[0]) for t in tables)
    low, high = widths[len(widths) // 4], widths[(3 * len(widths)) // 4]
    return [t for t in tables if low <= len(t.rows[0]) <= high]


def wide_table(tables: list[Table], columns: int, rows: int, seed: int) -> Table:
    """`columns` real SOTAB columns side by side (cells drawn from the sample's columns, `rows` rows)."""
    rnd = random.Random(seed)
    pool = [[row[j] for row in t.rows] for t in tables for j in range(len(t.rows[0]))]
    picked = [rnd.choice(pool) for _ in range(columns)]
    return Table([[col[i % len(col)] for col in picked] for i in range(rows)], name=f"wide-{columns}-{seed}")


# -- the swarm -------------------------------------------------------------------------------------------------


@dataclass
class Swarm:
    process: subprocess.Popen[bytes]
    address: str
    log: Path
    pids: list[int] = field(default_factory=list)


def start_swarm(workdir: Path, budget_mb: int, config: str, extra: list[str], demo: bool) -> Swarm:
    ready = workdir / "ready.json"
    log = workdir / "swarm.log"
    command = ["up", "--run-dir", str(ROOT / "runs" / "demo")] if demo else ["serve-annotation", "--config", config]
    cmd = [sys.executable, "-m", "swarm.trainer.commands.cli", *command, "--port", "0", "--ready-file", str(ready),
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


def describe_swarm(demo: bool, config: str, per_process: dict[str, int]) -> str:
    """The swarm served, with its number of specialists (counted from its processes)."""
    specialists = sum(1 for name in per_process if name.startswith("specialist "))
    if demo:
        return f"`swarm up` on runs/demo ({specialists} specialists + primary)"
    return f"`swarm serve-annotation --local` ({specialists} untrained `{config}` specialists + primary)"


def private_bytes(pid: int) -> int:
    """Memory only this process holds (Private_Clean + Private_Dirty: not the libraries' pages it shares with the
    swarm's other processes); 0 when it is gone."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


def torch_floor_bytes() -> int:
    """Resident memory of a Python process of this venv that has only imported torch."""
    probe = "import torch\nprint(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) * 1024


def process_label(pid: int) -> str:
    """What a process of the swarm is: `annotation`, `specialist <name>`, or its command's first words."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return f"pid {pid}"
    if "--specialist" in argv:
        return f"specialist {argv[argv.index('--specialist') + 1]}"
    if any(a in ("serve-annotation", "up") for a in argv):
        return "annotation"
    return " ".join(Path(a).name for a in argv[:3] if a)[:60]


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
    refused_up_front: int = 0
    refused_by_kind: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    missing_reasons: dict[str, int] = field(default_factory=dict)  # status code of a missing specialist -> count
    specialists_missing: int = 0  # specialists left out of replies, all tables together
    attached: dict[str, object] = field(default_factory=dict)  # summaries of other clients driven meanwhile
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
            "max_ms": round(lat[-1], 1) if lat else None,
            "errors": sum(self.errors.values()),
            "tables": len(lat),
            "seconds": round(self.seconds, 1),
            "error_codes": self.errors,
            "degraded_tables": self.degraded,
            "specialists_missing": self.specialists_missing,
            "missing_specialist_codes": self.missing_reasons,
        }
        out |= self.attached
        if self.refused_up_front:
            out |= {"refused_up_front": self.refused_up_front, "refused_by_kind": self.refused_by_kind}
        if self.wide_latencies_ms:
            wide = sorted(self.wide_latencies_ms)
            out |= {"wide_tables": len(wide), "wide_p50_ms": round(statistics.median(wide), 1)}
        return out


def with_novel_cells(table: Table, rnd: random.Random, serial: int) -> Table:
    """The table with every non-empty cell given a random suffix: cells no cache has seen."""
    return Table(
        [[f"{cell} {rnd.getrandbits(40):010x}" if cell.strip() else cell for cell in row] for row in table.rows],
        name=f"{table.name}-novel-{serial}",
    )


def annotator(address: str, timeout_s: float) -> Annotator:
    """A client of the swarm without retries: the load generator counts every refusal itself (a retry would hide
    the server's backpressure and stretch the latency it measures)."""
    return Annotator(address, timeout_s=timeout_s, max_message_bytes=MAX_MESSAGE_BYTES, max_retries=0)


def drive(address: str, next_table: Callable[[int], tuple[Table, str]], clients: int, seconds: float,
          timeout_s: float) -> Outcome:
    """`clients` threads calling Annotate back to back for `seconds` (calls started before the end finish)."""
    outcome = Outcome()
    lock = threading.Lock()
    counter = iter(range(10**9))
    end = time.monotonic() + seconds

    def client() -> None:
        with annotator(address, timeout_s) as connection:
            while time.monotonic() < end:
                with lock:
                    i = next(counter)
                table, kind = next_table(i)
                start = time.perf_counter()
                try:
                    reply = connection.annotate(table.rows, name=table.name)
                except AnnotationError as exc:
                    with lock:
                        if refused_up_front(exc):  # backpressure the server chose, not a failure
                            outcome.refused_up_front += 1
                            outcome.refused_by_kind[kind] = outcome.refused_by_kind.get(kind, 0) + 1
                        else:
                            outcome.errors[exc.code] = outcome.errors.get(exc.code, 0) + 1
                    continue
                ms = (time.perf_counter() - start) * 1e3
                with lock:
                    outcome.latencies_ms.append(ms)
                    if kind == "wide":
                        outcome.wide_latencies_ms.append(ms)
                    outcome.specialists_missing += len(reply.specialists_missing)
                    if reply.specialists_missing:
                        outcome.degraded += 1
                        for missing in reply.specialists_missing:
                            code = missing.reason.split(":", 1)[0]
                            outcome.missing_reasons[code] = outcome.missing_reasons.get(code, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcome.seconds = time.monotonic() - started
    return outcome


WORKLOADS = ("sustained", "wide_mix", "novel", "contention")


def warm_up(address: str, table: Callable[[int], tuple[Table, str]], count: int, clients: int,
            timeout_s: float) -> None:
    """Annotate tables 0..count-1 of `table` once each (split over `clients` threads): their cells are then cached."""
    from concurrent.futures import ThreadPoolExecutor

    def annotate(connection: Annotator, i: int) -> None:
        request = table(i)[0]
        connection.annotate(request.rows, name=request.name)

    with annotator(address, timeout_s) as connection, ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: annotate(connection, i), range(count)))


def torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


def refused_up_front(exc: AnnotationError) -> bool:
    """A table the server refused before computing anything: over a per-table cap, or never-seen cells it cannot
    encode before the table's deadline."""
    return ((exc.code == "RESOURCE_EXHAUSTED" and "send at most" in exc.message)
            or (exc.code == "DEADLINE_EXCEEDED" and "refused up front" in exc.message))


def contended(address: str, big: Callable[[int], tuple[Table, str]],
              cached: Callable[[int], tuple[Table, str]], seconds: float, timeout_s: float) -> Outcome:
    """Four clients of `big` tables and, at the same time, one client of `cached` ones; the big tables' outcome
    with the cached client's summary attached (`cached_client`)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        heavy = pool.submit(drive, address, big, 4, seconds, timeout_s)
        light = pool.submit(drive, address, cached, 1, seconds, timeout_s)
        outcome, other = heavy.result(), light.result()
    outcome.attached = {"cached_client": other.summary()}
    return outcome


def _row(label: str, w: dict) -> str:
    return (f"| {label} | {w['tables_per_s']} | {w['p50_ms']} | {w['p99_ms']} | {w['errors']} | "
            f"{w['specialists_missing']} | {w['tables']} |")


def markdown(result: dict) -> str:
    runs = result["workloads"]
    labels = {
        "sustained": f"sustained: {result['cached_tables']} SOTAB-median tables ({result['median_table']}), cells "
                     "cached (each annotated once before)",
        "wide_mix": f"wide_mix: 1 in {result['wide_every']} tables {result['wide_columns']} columns wide, 1 in "
                    f"{result['huge_every']} 1,024 columns wide",
        "novel": "novel: the same SOTAB-median tables, every cell given a random suffix (never seen)",
        "contention": "contention: 4 clients of 200 x 5 tables of never-seen cells",
    }
    lines = [
        "# Serving under load",
        "",
        f"{result['swarm']} on {result['machine']}; admission budget "
        f"{result['admission_budget_bytes'] / 2**30:.1f} GiB (the machine's memory), {result['clients']} client "
        f"threads on loopback. Command: `{result['command']}`.",
        "",
        "| workload | tables/s | p50 ms | p99 ms | errors | specialists missing | tables |",
        "|---|---|---|---|---|---|---|",
        *(_row(labels[name], runs[name]) for name in WORKLOADS if name in runs),
        *([_row("contention: meanwhile, 1 client of cached SOTAB-median tables", runs["contention"]["cached_client"])]
          if "contention" in runs else []),
        "",
    ]
    if "contention" in runs:
        c = runs["contention"]["cached_client"]
        lines.append(f"- contention: the cached client's slowest table took {c['max_ms']} ms while the novel 200 x 5 "
                     "tables ran.")
    if "wide_mix" in runs:
        w = runs["wide_mix"]
        lines.append(f"- wide tables served: {w.get('wide_tables', 0)} (p50 {w.get('wide_p50_ms')} ms); tables "
                     f"refused up front (not errors), by kind: {w.get('refused_by_kind') or 'none'}.")
    lines += [
        "- tables answered degraded (a specialist missing), by workload: "
        + ", ".join(f"{name} {w['degraded_tables']} ({w['missing_specialist_codes'] or 'none'})"
                    for name, w in runs.items()) + "; a specialist that cannot answer within the specialist "
        "timeout is left out and the reply says so (`degraded`).",
        f"- peak RSS of the swarm's processes: {result['peak_rss_bytes'] / 2**30:.2f} GiB (idle before the load: "
        f"{result['idle_rss_bytes'] / 2**30:.2f} GiB; per process: "
        f"{', '.join(f'{name} {b / 2**20:.0f}' for name, b in result['process_rss_bytes'].items())} MiB; machine "
        f"memory "
        f"{result['machine_memory_bytes'] / 2**30:.1f} GiB).",
        "- private (unshared) memory per process at idle: "
        f"{', '.join(f'{name} {b / 2**20:.0f}' for name, b in result['process_private_bytes'].items())} MiB; a "
        f"bare `import torch` of this venv (torch {torch_version()}, the CUDA build) is "
        f"{result['torch_import_rss_bytes'] / 2**20:.0f} MiB resident on its own.",
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
    p.add_argument("--untrained", action="store_true",
                   help="Serve untrained models of --config even when runs/demo exists (e.g. built before a change "
                        "of the domains).")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--sustained-tables", type=int, default=64,
                   help="How many SOTAB-median tables the cached workloads cycle through (each warmed once).")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="Length of the sustained and novel workloads (the mix: 4/3 of it).")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"Comma-separated, of {', '.join(WORKLOADS)}.")
    p.add_argument("--wide-columns", type=int, default=128)
    p.add_argument("--wide-every", type=int, default=10)
    p.add_argument("--huge-every", type=int, default=25)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--quick", action="store_true", help="15 s per workload.")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    a = p.parse_args(argv)
    seconds = 15.0 if a.quick else a.seconds
    chosen = [w.strip() for w in a.workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        p.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")

    tables = sotab_tables()
    median = median_tables(tables)
    widths = sorted(len(t.rows[0]) for t in median)
    rows = sorted(len(t.rows) for t in median)
    rnd = random.Random(0)
    cached = rnd.sample(median, min(a.sustained_tables, len(median)))
    novel_rnd = random.Random()  # suffixes never repeat across runs: nothing cached on disk can match them
    wides = [wide_table(tables, a.wide_columns, 20, seed) for seed in range(8)]
    huge = wide_table(tables, 1024, 20, 99)

    def sustained(i: int) -> tuple[Table, str]:
        return rnd.choice(cached), "median"

    def warm(i: int) -> tuple[Table, str]:
        return cached[i % len(cached)], "median"

    def mixed(i: int) -> tuple[Table, str]:
        if i % a.huge_every == a.huge_every - 1:
            return huge, "huge"
        if i % a.wide_every == a.wide_every - 1:
            return wides[i % len(wides)], "wide"
        return rnd.choice(cached), "median"

    def novel(i: int) -> tuple[Table, str]:
        return with_novel_cells(rnd.choice(median), novel_rnd, i), "novel"

    def long_novel(i: int) -> tuple[Table, str]:
        return with_novel_cells(wide_table(tables, 5, 200, 1000 + i), novel_rnd, i), "novel"

    plans: dict[str, tuple[Callable[[int], tuple[Table, str]], float]] = {
        "sustained": (sustained, seconds), "wide_mix": (mixed, seconds * 4 / 3), "novel": (novel, seconds)}
    demo = (ROOT / "runs" / "demo").is_dir() and not a.untrained
    budget = machine_memory_bytes()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        swarm = start_swarm(Path(tmp), budget // MiB, a.config, [], demo)
        try:
            warm_up(swarm.address, warm, len(cached), a.clients, a.timeout_s)
            time.sleep(2.0)
            pids = process_tree(swarm.process.pid)
            per_process = {f"{process_label(p)} ({p})": rss_bytes(p) for p in pids}
            private = {f"{process_label(p)} ({p})": private_bytes(p) for p in pids}
            with RssSampler(swarm.process.pid) as sampler:
                runs = {name: drive(swarm.address, plans[name][0], a.clients, plans[name][1], a.timeout_s)
                        for name in plans if name in chosen}
                if "contention" in chosen:
                    runs["contention"] = contended(swarm.address, long_novel, sustained, seconds, a.timeout_s)
            survivors = process_tree(swarm.process.pid)
            log = swarm.log.read_text(errors="replace")
        finally:
            stop_swarm(swarm)
    # A process of the swarm that is gone, or a specialist the supervisor had to restart (its new process would
    # otherwise hide the loss).
    lost = max(len(set(swarm.pids) - set(survivors)), log.count("restarting it in"))
    swarm_kind = describe_swarm(demo, a.config, per_process)
    result = {
        "workloads": {name: outcome.summary() for name, outcome in runs.items()},
        "peak_rss_bytes": sampler.peak,
        "idle_rss_bytes": sum(per_process.values()),
        "process_rss_bytes": per_process,
        "process_private_bytes": private,
        "torch_import_rss_bytes": torch_floor_bytes(),
        "cached_tables": len(cached),
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
        "command": " ".join(["python -m swarm.bench.serving_load", *(sys.argv[1:] if argv is None else argv)]).strip(),
        # Other work on the machine competes for the same CPUs: the 1-minute load average before and after.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_serving.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (a.out / "bench_serving.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
