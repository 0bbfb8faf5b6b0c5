"""`swarm serve-specialist` and `swarm serve-annotation`: the gRPC servers' command-line front ends.

Heavy imports (torch, grpc, the models) happen inside the commands so `swarm --help` stays fast.
`python -m swarm.trainer.grpc_commands ...` runs these commands without the rest of the CLI.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

DEFAULT_HOST = "127.0.0.1"


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _parse_addresses(pairs: list[str]) -> dict[str, str]:
    addresses = {}
    for pair in pairs:
        name, sep, address = pair.partition("=")
        if not sep or not name or not address:
            raise typer.BadParameter(f"{pair!r}: expected NAME=HOST:PORT", param_hint="--specialist")
        addresses[name] = address
    return addresses


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
    dtype: str = typer.Option("float32", help="Model dtype."),
    wire_dtype: str | None = typer.Option(
        None, help="Send states in this dtype (bfloat16 halves the bytes)."
    ),
    max_streams: int = typer.Option(8, help="Concurrent streams; more get RESOURCE_EXHAUSTED."),
    grace_s: float = typer.Option(10.0, help="On SIGTERM, let in-flight streams finish for this long."),
    ready_file: Path | None = typer.Option(None, help="Write the bound address here as JSON once serving."),
) -> None:
    """Serve one frozen specialist's per-layer states over gRPC (swarm.v1.SpecialistService)."""
    _logging()
    from swarm.model_server.server import ServerOptions, serve

    serve(
        specialist,
        port,
        host,
        checkpoint_dir,
        config,
        dtype,
        options=ServerOptions(max_streams=max_streams, wire_dtype=wire_dtype),
        grace_s=grace_s,
        ready_file=ready_file,
    )


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
    max_cells: int = typer.Option(200_000, help="Largest table accepted, in cells."),
    grace_s: float = typer.Option(10.0, help="On SIGTERM, let in-flight requests finish for this long."),
    ready_file: Path | None = typer.Option(None, help="Write the bound address here as JSON once serving."),
) -> None:
    """Serve the annotation API (swarm.v1.AnnotationService): route, fan out to specialists, fuse, label."""
    _logging()
    from swarm.model_server.grpc_runtime import write_ready_file
    from swarm.model_server.specialist import domains
    from swarm.trainer.annotation_server import AnnotationLimits, build_server
    from swarm.trainer.specialist_client import SpecialistClient
    from swarm.trainer.swarm_local import default_annotator, start_local_swarm

    limits = AnnotationLimits(max_cells=max_cells)
    addresses = _parse_addresses(specialist)
    if addresses:
        annotator = default_annotator(list(addresses), config, primary_dir)
        with SpecialistClient(addresses) as client:
            server = build_server(annotator, client, host, port, limits).start()
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
        limits=limits,
    ) as swarm:
        typer.echo(f"specialists: {swarm.addresses}; annotation API on {swarm.annotation_address}")
        assert swarm.annotation is not None
        if ready_file is not None:
            write_ready_file(ready_file, swarm.annotation_address)
        swarm.annotation.serve_until_signalled(grace_s)


def register(app: typer.Typer) -> None:
    app.command("serve-specialist")(serve_specialist)
    app.command("serve-annotation")(serve_annotation)


if __name__ == "__main__":
    _app = typer.Typer(no_args_is_help=True)
    register(_app)
    _app()
