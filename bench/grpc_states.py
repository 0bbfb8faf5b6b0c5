"""Benchmark of the gRPC layer: state-streaming throughput against a raw TCP socket, and annotation latency.

1. Throughput: 32 columns of base-size states (12 layers x 12 heads x 64x64, bf16, ~38 MB) streamed by a
   specialist server process in benchmark mode (synthetic states: the base model is not run on CPU), received
   and reassembled by SpecialistClient; the same bytes sent over a raw loopback TCP socket by another process.
2. Annotation: p50/p99 latency and tables/s through the annotation API with 1, 3 and 8 local tiny specialist
   processes (real models, untrained).

Run: `.venv/bin/python bench/grpc_states.py [--quick]`; writes reports/bench_grpc.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from swarm.model_server.grpc_runtime import MiB, read_ready_file, wait_serving
from swarm.trainer.specialist_client import SpecialistClient
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import annotation_pb2_grpc as apb_grpc

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
SPECIALIST_COUNTS = (1, 3, 8)
MESSAGE_LIMIT = 64 * MiB


def _spawn_server(workdir: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    ready = workdir / f"ready-{time.monotonic_ns()}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm.model_server.server", "--ready-file", str(ready), *args],
        stderr=subprocess.DEVNULL,
    )
    while (address := read_ready_file(ready)) is None:
        if proc.poll() is not None:
            raise RuntimeError(f"benchmark server exited with {proc.returncode}")
        time.sleep(0.05)
    wait_serving(address, 120)
    return proc, address


def _timed(fn: Callable[[], int], repeats: int) -> tuple[int, list[float]]:
    fn()  # warm-up: connections, allocator, server-side state cache
    times, nbytes = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        nbytes = fn()
        times.append(time.perf_counter() - start)
    return nbytes, times


def grpc_throughput(workdir: Path, repeats: int, chunk_kb: int) -> dict[str, float]:
    proc, address = _spawn_server(
        workdir,
        "--specialist",
        "temporal",
        "--synthetic",
        "base",
        "--dtype",
        "bfloat16",
        "--chunk-kb",
        str(chunk_kb),
        "--max-message-mb",
        "64",
    )
    columns = [f"column {i}" for i in range(BATCH)]
    try:
        with SpecialistClient({"temporal": address}, max_message_bytes=MESSAGE_LIMIT) as client:

            def fetch() -> int:
                result = client.fetch({"temporal": columns})
                if result.missing:
                    raise RuntimeError(f"benchmark stream failed: {result.missing}")
                return result.bytes_received

            nbytes, times = _timed(fetch, repeats)
    finally:
        proc.terminate()
        proc.wait()
    return {"bytes": nbytes, "median_s": statistics.median(times), "best_s": min(times)}


def _raw_server(payload_bytes: int) -> None:
    """Child process: answer every 1-byte request with the payload, length-prefixed, over one connection."""
    payload = memoryview(
        bytearray(os.urandom(1 << 20)) * (payload_bytes >> 20) + bytearray(payload_bytes % MiB)
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
        with conn:
            while conn.recv(1):
                conn.sendall(len(payload).to_bytes(8, "little"))
                conn.sendall(payload)


def raw_socket_throughput(payload_bytes: int, repeats: int) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--raw-server", str(payload_bytes)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    buffer = bytearray(payload_bytes)
    view = memoryview(buffer)
    try:
        with socket.create_connection(("127.0.0.1", port)) as conn:

            def fetch() -> int:
                conn.sendall(b"?")
                header = conn.recv(8, socket.MSG_WAITALL)
                size = int.from_bytes(header, "little")
                got = 0
                while got < size:
                    got += conn.recv_into(view[got:size])
                return got

            nbytes, times = _timed(fetch, repeats)
    finally:
        proc.terminate()
        proc.wait()
    return {"bytes": nbytes, "median_s": statistics.median(times), "best_s": min(times)}


def _annotator_factory() -> tuple[Callable[[list[str]], object], str]:
    try:
        from swarm.trainer.primary_annotator import PrimaryAnnotator
    except ImportError:
        # Until the primary annotator lands, the tests' mean-state annotator (a real tiny model) stands in.
        import importlib.util

        spec = importlib.util.spec_from_file_location("grpc_test_support", ROOT / "tests/grpc/conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.MeanStateAnnotator, "MeanStateAnnotator (tests/grpc/conftest.py)"
    return (
        lambda names: PrimaryAnnotator.untrained(names, config="tiny")
    ), "PrimaryAnnotator.untrained(tiny)"


def _bench_table(i: int) -> apb.Table:
    rows = [
        [
            f"2021-0{1 + r % 9}-1{r % 10}",
            f"City {r + i}",
            f"{r * 1.5:.2f}",
            f"Name {r} {i}",
            f"item-{r}",
            f"{r % 7} stars",
            f"https://example.org/{r}",
        ]
        for r in range(33)
    ]  # SOTAB medians: 7 cols, 33 rows
    return apb.Table(name=f"bench-{i}", rows=[apb.Row(cells=r) for r in rows])


def annotation_latency(
    n_specialists: int, tables: int, factory: Callable[[list[str]], object]
) -> dict[str, float]:
    from swarm.model_server.specialist import domains
    from swarm.trainer.swarm_local import start_local_swarm

    names = [*domains()][:n_specialists]
    names += [f"{d}@{k}" for k in range(1, 4) for d in domains()][: n_specialists - len(names)]
    with start_local_swarm(names, annotator=factory) as swarm:  # type: ignore[arg-type]
        stub = apb_grpc.AnnotationServiceStub(grpc.insecure_channel(swarm.annotation_address))
        for i in range(3):
            stub.Annotate(_bench_table(i), timeout=120)
        latencies = []
        start = time.perf_counter()
        for i in range(tables):
            t0 = time.perf_counter()
            reply = stub.Annotate(_bench_table(i), timeout=120)
            latencies.append((time.perf_counter() - t0) * 1e3)
            if reply.specialists_missing:
                raise RuntimeError(f"specialists missing during the benchmark: {reply.specialists_missing}")
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "specialists": n_specialists,
        "tables": tables,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "tables_per_s": tables / wall,
    }


def _pct(sorted_values: list[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    parser.add_argument("--chunk-kb", type=int, default=4096, help="state chunk size for the throughput test")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--raw-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server is not None:
        _raw_server(args.raw_server)
        return
    repeats, tables = (4, 20) if args.quick else (10, 60)
    print(
        "throughput: benchmark-mode specialist server with SYNTHETIC base-size states (the base model is not "
        "run on CPU); the wire path (codec, gRPC, reassembly) is the real one",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        grpc_run = grpc_throughput(Path(tmp), repeats, args.chunk_kb)
    raw_run = raw_socket_throughput(int(grpc_run["bytes"]), repeats)
    grpc_gbps = grpc_run["bytes"] / grpc_run["median_s"] / 1e9
    raw_gbps = raw_run["bytes"] / raw_run["median_s"] / 1e9
    print(
        f"  payload {grpc_run['bytes'] / 1e6:.1f} MB: gRPC {grpc_gbps:.2f} GB/s, "
        f"raw socket {raw_gbps:.2f} GB/s "
        f"({100 * grpc_gbps / raw_gbps:.0f}% of raw)",
        flush=True,
    )
    factory, annotator_name = _annotator_factory()
    print(f"annotation latency ({annotator_name}, tiny specialists as local processes):", flush=True)
    rows = []
    for n in SPECIALIST_COUNTS:
        row = annotation_latency(n, tables, factory)
        rows.append(row)
        print(
            f"  {n} specialists: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
            f"{row['tables_per_s']:.1f} tables/s",
            flush=True,
        )
    report = {
        "payload_mb": grpc_run["bytes"] / 1e6,
        "batch_columns": BATCH,
        "chunk_kb": args.chunk_kb,
        "states": "synthetic base-size (12 layers x 12 heads x 64x64), bfloat16",
        "repeats": repeats,
        "grpc_gbps": grpc_gbps,
        "grpc_best_gbps": grpc_run["bytes"] / grpc_run["best_s"] / 1e9,
        "raw_socket_gbps": raw_gbps,
        "raw_socket_best_gbps": raw_run["bytes"] / raw_run["best_s"] / 1e9,
        "grpc_vs_raw": grpc_gbps / raw_gbps,
        "annotator": annotator_name,
        "annotate_p50_ms": rows[0]["p50_ms"],
        "annotate_p99_ms": rows[0]["p99_ms"],
        "annotation": rows,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "grpc": grpc.__version__,
        },
        "quick": args.quick,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_grpc.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "bench_grpc.md").write_text(_markdown(report), encoding="utf-8")
    print(f"wrote {args.out / 'bench_grpc.json'} and {args.out / 'bench_grpc.md'}")


def _markdown(r: dict) -> str:
    lines = [
        "# gRPC benchmark",
        "",
        f"Machine: {r['machine']['platform']}, {r['machine']['cpu_count']} CPUs, "
        f"Python {r['machine']['python']}, "
        f"grpcio {r['machine']['grpc']}{' (quick run)' if r['quick'] else ''}.",
        "",
        "## State streaming",
        "",
        f"{r['batch_columns']} columns of {r['states']} = {r['payload_mb']:.1f} MB per request, "
        f"{r['chunk_kb']} KiB chunks. The specialist server ran in benchmark mode "
        "(synthetic states; the base model is not run on CPU).",
        "",
        "| path | median GB/s | best GB/s |",
        "|---|---|---|",
        f"| gRPC StreamStates (SpecialistClient, reassembled tensors) | {r['grpc_gbps']:.2f} | "
        f"{r['grpc_best_gbps']:.2f} |",
        f"| raw TCP socket, same bytes | {r['raw_socket_gbps']:.2f} | {r['raw_socket_best_gbps']:.2f} |",
        "",
        f"gRPC reaches {100 * r['grpc_vs_raw']:.0f}% of the raw socket (goal: at least 50%).",
        "",
        "## Annotation latency",
        "",
        f"Annotator: {r['annotator']}; tiny specialists as local processes; "
        "SOTAB-median tables (7 columns, 33 rows).",
        "",
        "| specialists | p50 ms | p99 ms | tables/s |",
        "|---|---|---|---|",
        *(
            f"| {a['specialists']} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | {a['tables_per_s']:.1f} |"
            for a in r["annotation"]
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
