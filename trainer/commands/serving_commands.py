"""`swarm serve-specialist`, `swarm serve-annotation` and `swarm up`: the gRPC servers' command-line front ends.

Heavy imports (torch, grpc, the models) happen inside the commands so `swarm --help` stays fast.

Limits (see README, "Annotation API"): memory admission (`--memory-budget-mb`, `--max-request-mb`), compute slots
(`--max-concurrent`), queueing (`--max-queued`, `--max-queue-wait-s`), deadlines (`--request-timeout-s`,
`--stream-idle-s`), streams (`--max-streams`) and transport security (`--tls-dir`, `--client-ca`,
`--auth-token-file` for the annotation API; `--specialist-tls-dir` / `$SWARM_TLS_DIR` for mTLS with specialists).
A server asked to bind an address other than loopback without TLS refuses to start unless given `--insecure`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field

from swarm.trainer.commands.cli_options import (
    DEMO_RUN_DIR,
    DEVICE_OPTION,
    ENDPOINTS_ENV,
    PRECISION_OPTION,
    DType,
    Precision,
    endpoints_or_env,
    fail,
    parse_endpoints,
    publish,
    use_devices,
)
from swarm.trainer.commands.config_options import Flag, config_options, field_option

if TYPE_CHECKING:
    from swarm.model_server.serving.annotation_server import AnnotationLimits
    from swarm.model_server.serving.grpc_runtime import ServerSecurity
    from swarm.model_server.serving.primary_annotator import PrimaryAnnotator
    from swarm.model_server.serving.specialist_server import ServerOptions

DEFAULT_HOST = "127.0.0.1"
MIB = 1 << 20
# A swarm started by one command (annotation server + local specialists) shares one memory budget: the annotation
# server gets this share, the local specialists split the rest evenly.
ANNOTATION_SHARE = 0.6
DEFAULT_SWARM_BUDGET_FRACTION = 0.5  # of the machine's (or the pod's) memory, when --memory-budget-mb is not given

def refuse_exposed(host: str, has_tls: bool, insecure: bool, what: str, token: bool = False) -> None:
    """The CLI's error (exit 2) for serving `what` in plaintext on an address that is not loopback, unless
    --insecure says so."""
    from swarm.model_server.serving.grpc_runtime import is_loopback

    if has_tls or insecure or is_loopback(host):
        return
    risk = ("the bearer token and every table would travel in plaintext" if token
            else "anyone who can reach it could call it, with no TLS or authentication")
    fail(f"refusing to serve {what} on {host} (not loopback) without TLS: {risk}; pass --tls-dir DIR, or --insecure "
         "to serve plaintext anyway on a network you trust")


# Fields both servers' settings have (Annotated: the type, the command line and the description, once).
HealthPort = Annotated[int | None, Flag(envvar="SWARM_HEALTH_PORT"), Field(
    description="Also serve gRPC health alone, in plaintext, on this port (for kubelet probes when the main port has "
    "TLS).")]
Insecure = Annotated[bool, Flag("--insecure"), Field(
    description="Serve plaintext on a --host that is not loopback (refused without it): only on a network you trust.")]
ReadyFile = Annotated[Path | None, Field(description="Write the bound address here as JSON once serving.")]


class ServingSettings(BaseModel):
    """The annotation server's settings: the options `serve-annotation` and `up` share, each field one option
    (`config_options`: its default and description are the option's)."""

    model_config = ConfigDict(frozen=True)

    port: int = Field(50050, description="Port of the annotation API (0: any free port; see --ready-file).")
    host: str = Field(DEFAULT_HOST, description="Interface of the annotation API (local specialists stay on "
                      "loopback); 0.0.0.0 for all: then use --tls-dir and --auth-token-file or --client-ca (without "
                      "TLS it refuses to start unless given --insecure).")
    ready_file: ReadyFile = None
    memory_budget_mb: float | None = Field(
        None, description="Memory budget in MiB of the tables being served at once (estimated: columns x tokens x "
        "states); with local specialists, of the whole swarm (60% for the annotation server, the rest split among "
        "the specialists). Default: half of the machine's (or the container's) memory.")
    max_request_mb: float = Field(2048.0, description="Largest estimated memory of one table, MiB (RESOURCE_EXHAUSTED "
                                  "over it, saying how many columns per table fit).")
    max_cells: int = Field(200_000, description="Largest table accepted, in cells.")
    max_columns: int = Field(1024, description="Widest table accepted, in columns.")
    max_concurrent: int = Field(4, description="Tables computed at once.")
    max_queued: int = Field(8, description="Tables waiting for admission; more get RESOURCE_EXHAUSTED at once.")
    max_queue_wait_s: float = Field(10.0, description="Longest wait for admission, seconds (then RESOURCE_EXHAUSTED).")
    max_streams: int = Field(4, description="Concurrent AnnotateStream calls; more get RESOURCE_EXHAUSTED.")
    request_timeout_s: float = Field(300.0, description="Server-side deadline of one table, seconds (the client's own "
                                     "deadline applies when earlier).")
    stream_idle_s: float = Field(30.0, description="Close an AnnotateStream that sends no table for this long, "
                                 "seconds.")
    tls_dir: Annotated[Path | None, Flag(envvar="SWARM_ANNOTATION_TLS_DIR")] = Field(
        None, description="Serve the annotation API over TLS with DIR/tls.crt and DIR/tls.key. Default: plaintext, "
        "which is only safe on loopback.")
    client_ca: Path | None = Field(None, description="Require annotation clients to present certificates signed by "
                                   "this CA (mTLS; needs --tls-dir).")
    auth_token_file: Annotated[Path | None, Flag(envvar="SWARM_AUTH_TOKEN_FILE")] = Field(
        None, description="Require `authorization: Bearer <token>` (the file's content) on every annotation call "
        "(health excepted).")
    specialist_tls_dir: Annotated[Path | None, Flag(envvar="SWARM_TLS_DIR")] = Field(
        None, description="mTLS with the specialists: DIR/tls.crt and tls.key identify this server, DIR/ca.crt "
        "verifies them (local specialists serve with the same folder).")
    health_port: HealthPort = None
    policy: str | None = Field(
        None, description="Orchestrator policy directory (`swarm train --mode parl`); default: the primary's "
        "orchestrator/ folder when it has one; `none`: every specialist reads every column.")
    spawn_budget: int | None = Field(None, ge=0, description="Most distinct specialists one table may use (wide and "
                                     "deep together); default: all the primary fuses.")
    insecure: Insecure = False
    require_specialists: Annotated[bool, Flag("--require-specialists")] = Field(
        False, description="Answer UNAVAILABLE (with a retry hint) instead of a degraded annotation when a specialist "
        "routed columns delivers no states.")

    def budgets(self, local_specialists: int) -> tuple[int, int]:
        """(annotation server bytes, bytes per local specialist)."""
        from swarm.model_server.serving.admission import machine_memory_bytes

        total = (int(self.memory_budget_mb * MIB) if self.memory_budget_mb
                 else int(machine_memory_bytes() * DEFAULT_SWARM_BUDGET_FRACTION))
        if local_specialists == 0:
            return total, 0
        return int(total * ANNOTATION_SHARE), int(total * (1 - ANNOTATION_SHARE) / local_specialists)

    def limits(self, local_specialists: int) -> AnnotationLimits:
        from swarm.model_server.serving.annotation_server import AnnotationLimits

        return AnnotationLimits(
            max_cells=self.max_cells,
            max_columns=self.max_columns,
            max_concurrent=self.max_concurrent,
            max_queued=self.max_queued,
            max_streams=self.max_streams,
            memory_budget_bytes=self.budgets(local_specialists)[0],
            max_request_bytes=int(self.max_request_mb * MIB),
            max_queue_wait_s=self.max_queue_wait_s,
            max_request_s=self.request_timeout_s,
            stream_idle_s=self.stream_idle_s,
            require_specialists=self.require_specialists,
            calibrate_encoder=True,
        )

    def specialist_args(self, local_specialists: int) -> list[str]:
        each = self.budgets(local_specialists)[1]
        return ["--memory-budget-mb", f"{each / MIB:.0f}"] if each else []

    def security(self) -> ServerSecurity:
        """The annotation API's security; also exports --specialist-tls-dir as $SWARM_TLS_DIR for the specialist
        client and local specialists."""
        from swarm.model_server.serving.grpc_runtime import TLS_DIR_ENV, ServerSecurity, TlsFiles, read_token

        refuse_exposed(self.host, self.tls_dir is not None, self.insecure, "the annotation API",
                       token=self.auth_token_file is not None)
        if self.specialist_tls_dir is not None:
            os.environ[TLS_DIR_ENV] = str(self.specialist_tls_dir)
        if self.client_ca is not None and self.tls_dir is None:
            fail("--client-ca needs --tls-dir (the server's own certificate)")
        try:
            return ServerSecurity(
                tls=TlsFiles.from_dir(self.tls_dir) if self.tls_dir is not None else None,
                client_ca=self.client_ca,
                token=read_token(self.auth_token_file) if self.auth_token_file is not None else None,
            )
        except (OSError, ValueError) as exc:
            fail(str(exc))


class SpecialistSettings(BaseModel):
    """A specialist server's settings: the options of `serve-specialist` (each field one option, see
    `config_options`), turned into the server's ServerOptions."""

    model_config = ConfigDict(frozen=True)

    port: int = Field(50051, description="Port to listen on (0: any free port; see --ready-file).")
    host: str = Field(DEFAULT_HOST, description="Interface to bind; 0.0.0.0 for all (mind the network).")
    ready_file: ReadyFile = None
    max_streams: int = Field(8, description="Concurrent streams; more get RESOURCE_EXHAUSTED.")
    max_message_mb: float = Field(4.0, description="Largest gRPC message accepted or sent, MiB.")
    chunk_kb: int = Field(3072, description="State bytes per streamed message, KiB (below the message limit, with "
                          "room for the chunk's other fields).")
    chunk_delay_s: Annotated[float, Flag(hidden=True)] = Field(0.0, description="Tests only: sleep between chunks.")
    batch_columns: int = Field(64, description="Columns per forward pass (bounds activation memory).")
    memory_budget_mb: float | None = Field(
        None, description="Memory budget of the requests served at once, MiB (estimated: columns x tokens x "
        "states). Default: a quarter of the machine's (or the container's) memory.")
    max_request_mb: float = Field(1024.0, description="Largest estimated memory of one request, MiB.")
    max_queue_wait_s: float = Field(10.0, description="Longest wait for memory, seconds (then RESOURCE_EXHAUSTED).")
    request_timeout_s: float = Field(300.0, description="Server-side deadline of one stream, seconds.")
    tls_dir: Annotated[Path | None, Flag(envvar="SWARM_TLS_DIR")] = Field(
        None, description="Serve mTLS: DIR/tls.crt and tls.key, and callers must present certificates signed by "
        "DIR/ca.crt. Default: plaintext, which is only safe on loopback.")
    health_port: HealthPort = None
    insecure: Insecure = False

    def server_options(self, wire_dtype: str | None) -> ServerOptions:
        """The server's options; the CLI's error for a chunk that leaves no room in a message, or unreadable TLS
        files."""
        from swarm.model_server.serving.grpc_runtime import MiB, mtls_server_security
        from swarm.model_server.serving.specialist_server import ServerOptions

        if (self.chunk_kb << 10) + (64 << 10) > self.max_message_mb * MiB:
            fail(f"--chunk-kb {self.chunk_kb} leaves no room under --max-message-mb {self.max_message_mb:g} for the "
                 "chunk's other fields (keep it 64 KiB below)")
        try:
            security = mtls_server_security(self.tls_dir) if self.tls_dir is not None else None
        except (OSError, ValueError) as exc:
            fail(str(exc))
        return ServerOptions(
            max_streams=self.max_streams,
            max_message_bytes=int(self.max_message_mb * MiB),
            chunk_bytes=self.chunk_kb << 10,
            chunk_delay_s=self.chunk_delay_s,
            wire_dtype=wire_dtype,
            batch_columns=self.batch_columns,
            memory_budget_bytes=int(self.memory_budget_mb * MiB) if self.memory_budget_mb else None,
            max_request_bytes=int(self.max_request_mb * MiB),
            max_queue_wait_s=self.max_queue_wait_s,
            max_request_s=self.request_timeout_s,
            security=security,
            health_port=self.health_port,
        )


# Options that annotate shares with the annotation server.
POLICY_OPTION = field_option(ServingSettings, "policy")
SPAWN_BUDGET_OPTION = field_option(ServingSettings, "spawn_budget")


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@config_options("settings", SpecialistSettings)
def serve_specialist(
    *,
    specialist: str = typer.Option(..., help="Specialist (domain) name, e.g. temporal."),
    checkpoint_dir: Path | None = typer.Option(
        None,
        help="Folder holding <NAME>/ specialist directories (or one specialist directory). "
        "Without it an UNTRAINED specialist is served, for tests and smoke runs.",
    ),
    config: str = typer.Option("tiny", help="Model config of an untrained specialist."),
    device: str = DEVICE_OPTION,
    dtype: DType = typer.Option(DType["float32"], help="Model dtype."),
    wire_dtype: DType | None = typer.Option(None, help="Send states in this dtype (bfloat16 halves the bytes)."),
    torch_threads: int | None = typer.Option(None, help="CPU threads for torch (local swarms share the cores)."),
    cpus: str | None = typer.Option(None, help="Run on these cores only, e.g. 2,3 (a local swarm gives each "
                                    "specialist its own where there is a core per process)."),
    grace_s: float = typer.Option(10.0, help="On SIGTERM, let in-flight streams finish for this long."),
    settings: SpecialistSettings,
) -> None:
    """Serve one frozen specialist's per-layer states over gRPC (swarm.v1.SpecialistService)."""
    from swarm.model_server.serving.launcher import die_with_parent

    die_with_parent()  # first: a local swarm's specialist must not outlive it
    _logging()
    refuse_exposed(settings.host, settings.tls_dir is not None, settings.insecure, f"specialist {specialist!r}")
    if cpus:
        from swarm.model_server.serving.launcher import pin_to

        try:
            pin_to([int(c) for c in cpus.split(",") if c.strip()])
        except (ValueError, OSError) as exc:
            fail(f"--cpus {cpus!r}: {exc}")
    device = use_devices(device, Precision["auto"])
    from swarm.model_server.serving.specialist_server import serve

    options = settings.server_options(wire_dtype.value if wire_dtype else None)
    try:
        serve(specialist, settings.port, settings.host, checkpoint_dir, config, dtype.value, device, options=options,
              grace_s=grace_s, ready_file=settings.ready_file, torch_threads=torch_threads)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@config_options("settings", ServingSettings)
def serve_annotation(
    *,
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
    grace_s: float = typer.Option(10.0, help="On SIGTERM, let in-flight requests finish for this long."),
    settings: ServingSettings,
) -> None:
    """Serve the annotation API (swarm.v1.AnnotationService): route (the primary's orchestrator policy when it has
    one), fan out to specialists, deepen ambiguous columns, fuse, label."""
    _logging()
    device = use_devices(device, dtype)
    security = settings.security()
    addresses = parse_endpoints(specialist)
    if addresses:
        _serve_remote(addresses, settings, security, config, primary_dir, device, grace_s)
        return
    from swarm.model_server.model.specialist import domains

    names = [n.strip() for n in local.split(",") if n.strip()] if local else list(domains())
    _serve_local(names, settings, security, config, checkpoint_dir, primary_dir, device, grace_s)


def _annotator(names: list[str], config: str, primary_dir: Path | None, device: str,
               settings: ServingSettings) -> PrimaryAnnotator:
    from swarm.model_server.serving.launcher import default_annotator

    try:
        return default_annotator(names, config, primary_dir, device, settings.policy, settings.spawn_budget)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _serve_remote(addresses: dict[str, str], settings: ServingSettings, security: ServerSecurity, config: str,
                  primary_dir: Path | None, device: str, grace_s: float) -> None:
    """The annotation API in front of running specialist servers."""
    from swarm.model_server.serving.launcher import served_swarm

    annotator = _annotator(list(addresses), config, primary_dir, device, settings)
    with served_swarm(annotator, addresses, device=device, host=settings.host, port=settings.port,
                      limits=settings.limits(0), security=security, health_port=settings.health_port) as server:
        server.serve_until_signalled(grace_s, settings.ready_file)


def _serve_local(names: list[str], settings: ServingSettings, security: ServerSecurity, config: str,
                 checkpoint_dir: Path | None, primary_dir: Path | None, device: str, grace_s: float) -> None:
    """The annotation API with local specialist processes (untrained without checkpoints)."""
    from swarm.model_server.serving.grpc_runtime import write_ready_file
    from swarm.model_server.serving.launcher import start_local_swarm

    annotator = _annotator(names, config, primary_dir, device, settings) if primary_dir is not None else None
    with start_local_swarm(
        names,
        annotator=annotator,
        config=config,
        checkpoint_dir=checkpoint_dir,
        primary_dir=primary_dir,
        annotation_host=settings.host,
        annotation_port=settings.port,
        device=device,
        limits=settings.limits(len(names)),
        server_args=settings.specialist_args(len(names)),
        security=security,
        health_port=settings.health_port,
    ) as swarm:
        typer.echo(f"specialists: {swarm.addresses}; annotation API on {swarm.annotation_address}")
        assert swarm.annotation is not None
        if settings.ready_file is not None:
            write_ready_file(settings.ready_file, swarm.annotation_address, specialists=swarm.addresses,
                             health_address=swarm.annotation.health_address)
        swarm.annotation.serve_until_signalled(grace_s)


def annotate(
    data: Path = typer.Option(..., help="SOTAB-format directory: a split, or splits (see --split)."),
    checkpoint: Path = typer.Option(..., help="Trained primary directory (model.safetensors + model.json)."),
    split: str | None = typer.Option(None, help="Which split when DATA holds several (default: validation)."),
    out: Path = typer.Option(Path("predictions.csv"), help="Predictions as table_name,column_index,label,confidence,"
                                                         "specialists,deep_steps,evidence; one row per column."),
    json_out: Path | None = typer.Option(None, "--json", help="Summary (latency, critical steps, F1 if labelled)."),
    specialist: list[str] = typer.Option(
        [], help=f"Remote specialist NAME=HOST:PORT (repeat; default: ${ENDPOINTS_ENV}, else local processes)."),
    policy: str | None = POLICY_OPTION,
    spawn_budget: int | None = SPAWN_BUDGET_OPTION,
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
) -> None:
    """Annotate every column of every table through the annotation API (gRPC), scoring it when labels exist; the
    CSV names the specialists each column used and its deep steps, the summary the mean critical steps, calls per
    column and complexity."""
    import csv
    import json

    from swarm.model_server.model.tables import DataError
    from swarm.trainer.commands.annotation_run import annotate_split
    from swarm.trainer.reports import write_json
    from swarm.trainer.training.evaluate import pick_split

    device = use_devices(device, dtype)
    endpoints = endpoints_or_env(specialist)
    try:
        target = pick_split(data, split)
        result = annotate_split(target, checkpoint, endpoints or None, device, policy, spawn_budget)
    except (DataError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["table_name", "column_index", "label", "confidence", "specialists", "deep_steps",
                         "evidence"])
        for a in result.annotations:
            writer.writerows([a.table_name, c.column, c.label, f"{c.confidence:.4f}", " ".join(c.specialists),
                              c.deep_steps, " | ".join(c.evidence)] for c in a.columns)
    summary = result.summary()
    publish({k: summary[k] for k in ("micro_f1", "macro_f1") if k in summary}
            | {"throughput": summary["columns"] / max(result.seconds, 1e-9),
               "critical_steps": summary["critical_steps_max"]})
    if json_out is not None:
        write_json(json_out, summary)
    typer.echo(json.dumps(summary, indent=2))


@config_options("settings", ServingSettings)
def up(
    *,
    run_dir: Path = typer.Option(DEMO_RUN_DIR, help="A released swarm (`swarm release` or `swarm demo` output: "
                                 "the primary in RUN_DIR/model, its specialists and policy)."),
    device: str = DEVICE_OPTION,
    dtype: Precision = PRECISION_OPTION,
    settings: ServingSettings,
    torch_threads: int | None = typer.Option(
        None, min=1, help="CPU threads for torch in each process (the primary's and every specialist's). Default: "
        "the cores divided among the processes; where there is a core per process each is also pinned to its own."),
) -> None:
    """Start the whole swarm locally (supervised specialist processes + annotation API) from a demo run (or any
    run directory with a trained primary in RUN_DIR/model, e.g. runs/orchestrator/released)."""
    import signal
    import threading

    from swarm.trainer.experiments.demo import served_primary

    _logging()
    device = use_devices(device, dtype)
    security = settings.security()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from swarm.model_server.model.devices import resolve_device
    from swarm.model_server.serving.primary_annotator import PrimaryAnnotator

    try:
        model_dir = served_primary(run_dir)
        annotator = PrimaryAnnotator.load(model_dir, resolve_device(device), settings.policy, settings.spawn_budget)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    from swarm.model_server.serving.launcher import served_swarm

    local = len(annotator.specialist_names)
    with served_swarm(annotator, device=device, host=settings.host, port=settings.port, limits=settings.limits(local),
                      server_args=settings.specialist_args(local), security=security,
                      health_port=settings.health_port, torch_threads=torch_threads) as server:
        from swarm.model_server.serving.grpc_runtime import write_ready_file

        if settings.ready_file is not None:
            write_ready_file(settings.ready_file, server.address, health_address=server.health_address)
        typer.echo(f"swarm up: annotation API on {server.address} (Ctrl-C to stop)")
        stop.wait()


def register(app: typer.Typer) -> None:
    app.command("serve-specialist")(serve_specialist)
    app.command("serve-annotation")(serve_annotation)
    app.command()(annotate)
    app.command()(up)

