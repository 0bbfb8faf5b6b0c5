"""`swarm serve-specialist` and `swarm serve-annotation`: the gRPC servers' command-line front ends.

Heavy imports (torch, grpc, the models) happen inside the commands so `swarm --help` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from swarm.trainer.cli_options import DEVICE_OPTION, PRECISION_OPTION, DType, Precision, fail, use_devices
from swarm.trainer.train_commands import ENDPOINTS_ENV, parse_endpoints, publish

DEFAULT_HOST = "127.0.0.1"


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve_specialist(
    specialist: str = typer.Option(..., help="Specialist (domain) name, e.g. temporal."),
    port: int = typer.Option(50051, help="Port to listen on (0: any free port; see --ready-file)."),
    host: str = typer.Option(DEFAULT_HOST, help="Interface to bind; 0.0.0.0 for all (mind the network)."),
    checkpoint_dir: Path | None = typer.Option(
        None,
        help="Folder holding <NAME>/ specialist directories (or one specialist directory). "
        "Without it an UNTRAINED specialist is served, for tests and smoke runs.",
    ),
    config: str = typer.Option("tiny", help="Model config of an untrained specialist."),
    device: str = DEVICE_OPTION,
    dtype: DType = typer.Option(DType.float32, help="Model dtype."),
    wire_dtype: DType | None = typer.Option(None, help="Send states in this dtype (bfloat16 halves the bytes)."),
    max_streams: int = typer.Option(8, help="Concurrent streams; more get RESOURCE_EXHAUSTED."),
    max_message_mb: float = typer.Option(4.0, help="Largest gRPC message accepted or sent, MiB."),
    chunk_kb: int = typer.Option(4096, help="State bytes per streamed message, KiB (below the message limit)."),
    chunk_delay_s: float = typer.Option(0.0, hidden=True, help="Tests only: sleep between chunks."),
    torch_threads: int | None = typer.Option(None, help="CPU threads for torch (local swarms share the cores)."),
    grace_s: float = typer.Option(10.0, help="On SIGTERM, let in-flight streams finish for this long."),
    ready_file: Path | None = typer.Option(None, help="Write the bound address here as JSON once serving."),
) -> None:
    """Serve one frozen specialist's per-layer states over gRPC (swarm.v1.SpecialistService)."""
    _logging()
    device = use_devices(device, Precision.auto)
    from swarm.model_server.grpc_runtime import MiB
    from swarm.model_server.specialist_server import ServerOptions, serve

    options = ServerOptions(
        max_streams=max_streams,
        max_message_bytes=int(max_message_mb * MiB),
        chunk_bytes=chunk_kb << 10,
        chunk_delay_s=chunk_delay_s,
        wire_dtype=wire_dtype.value if wire_dtype else None,
    )
    try:
        serve(specialist, port, host, checkpoint_dir, config, dtype.value, device, options=options, grace_s=grace_s,
              ready_file=ready_file, torch_threads=torch_threads)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def serve_annotation(
    port: int = typer.Option(50050, help="Port to listen on (0: any free port; see --ready-file)."),
    host: str = typer.Option(DEFAULT_HOST, help="Interface to bind; 0.0.0.0 for all (mind the network)."),
    specialist: list[str] = typer.Option(
        [],
        help="A running specialist server, NAME=HOST:PORT (repeat). Without any, local specialist "
        "processes are started (see --local).",
    ),
    local: str | None = typer.Option(
        None,
        help="Comma-separated specialists to start locally "
        "(default: every domain) when no --specialist is given.",
    ),
    checkpoint_dir: Path | None = typer.Option(None, help="Specialist checkpoints for local specialists."),
    primary_dir: Path | None = typer.Option(
        None, help="Primary checkpoint; without it the primary is untrained."
    ),
    config: str = typer.Option("tiny", help="Model config of untrained models."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
    max_cells: int = typer.Option(200_000, help="Largest table accepted, in cells."),
    grace_s: float = typer.Option(10.0, help="On SIGTERM, let in-flight requests finish for this long."),
    ready_file: Path | None = typer.Option(None, help="Write the bound address here as JSON once serving."),
) -> None:
    """Serve the annotation API (swarm.v1.AnnotationService): route, fan out to specialists, fuse, label."""
    _logging()
    device = use_devices(device, dtype)
    from swarm.model_server.annotation_server import AnnotationLimits, build_annotation_server
    from swarm.model_server.grpc_runtime import write_ready_file
    from swarm.model_server.launcher import default_annotator, start_local_swarm
    from swarm.model_server.specialist import domains
    from swarm.model_server.specialist_client import SpecialistClient

    limits = AnnotationLimits(max_cells=max_cells)
    addresses = parse_endpoints(specialist)
    if addresses:
        annotator = default_annotator(list(addresses), config, primary_dir, device)
        with SpecialistClient(addresses) as client:
            server = build_annotation_server(annotator, client, host, port, limits).start()
            server.serve_until_signalled(grace_s, ready_file)
        return
    names = [n.strip() for n in local.split(",") if n.strip()] if local else list(domains())
    with start_local_swarm(
        names,
        config=config,
        checkpoint_dir=checkpoint_dir,
        primary_dir=primary_dir,
        host=host,
        annotation_port=port,
        device=device,
        limits=limits,
    ) as swarm:
        typer.echo(f"specialists: {swarm.addresses}; annotation API on {swarm.annotation_address}")
        assert swarm.annotation is not None
        if ready_file is not None:
            write_ready_file(ready_file, swarm.annotation_address)
        swarm.annotation.serve_until_signalled(grace_s)


def annotate(
    data: Path = typer.Option(..., help="SOTAB-format directory: a split, or splits (see --split)."),
    checkpoint: Path = typer.Option(..., help="Trained primary directory (model.safetensors + model.json)."),
    split: str | None = typer.Option(None, help="Which split when DATA holds several (default: validation)."),
    out: Path = typer.Option(Path("predictions.csv"), help="Predictions as table_name,column_index,label,confidence."),
    json_out: Path | None = typer.Option(None, "--json", help="Summary (latency, critical steps, F1 if labelled)."),
    specialist: list[str] = typer.Option(
        [], help=f"Remote specialist NAME=HOST:PORT (repeat; default: ${ENDPOINTS_ENV}, else local processes)."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Annotate every column of every table through the annotation API (gRPC), scoring it when labels exist."""
    import csv
    import json
    import os

    from swarm.trainer.annotation_run import annotate_split
    from swarm.trainer.evaluate import pick_split
    from swarm.trainer.reports import write_json
    from swarm.trainer.sotab import DataError

    device = use_devices(device, dtype)
    endpoints = parse_endpoints(specialist or os.environ.get(ENDPOINTS_ENV, "").split(","))
    try:
        target = pick_split(data, split)
        result = annotate_split(target, checkpoint, endpoints or None, device)
    except (DataError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["table_name", "column_index", "label", "confidence"])
        for a in result.annotations:
            writer.writerows([a.table_name, c.column, c.label, f"{c.confidence:.4f}"] for c in a.columns)
    summary = result.summary()
    publish({k: summary[k] for k in ("micro_f1", "macro_f1") if k in summary}
            | {"throughput": summary["columns"] / max(result.seconds, 1e-9),
               "critical_steps": summary["critical_steps_max"]})
    if json_out is not None:
        write_json(json_out, summary)
    typer.echo(json.dumps(summary, indent=2))


def up(
    run_dir: Path = typer.Option(Path("runs/demo"), help="A `swarm demo` run: specialists and the fused primary."),
    port: int = typer.Option(50050, help="Annotation API port."),
    host: str = typer.Option(DEFAULT_HOST, help="Interface of the annotation API; 0.0.0.0 for all: it has no TLS or "
                             "authentication, so only on a network you trust."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Start the whole swarm locally (specialist processes + annotation API on loopback) from a demo run."""
    import signal
    import threading

    from swarm.trainer.annotation_run import annotation_endpoint
    from swarm.trainer.demo import served_primary

    _logging()
    device = use_devices(device, dtype)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with annotation_endpoint(served_primary(run_dir), port=port, device=device, host=host) as address:
        typer.echo(f"swarm up: annotation API on {address} (Ctrl-C to stop)")
        stop.wait()


def register(app: typer.Typer) -> None:
    app.command("serve-specialist")(serve_specialist)
    app.command("serve-annotation")(serve_annotation)
    app.command()(annotate)
    app.command()(up)

