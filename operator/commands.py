"""The `swarm operator` and `swarm node-agent` commands (registered on the project's Typer app).

Heavy imports (kopf, aiohttp, pynvml) happen inside the commands so `swarm --help` stays fast.
`python -m swarm.operator.commands ...` runs them without the rest of the CLI (used by tests).
"""

from __future__ import annotations

import os

import typer


def operator(
    namespace: list[str] = typer.Option(None, "--namespace", "-n", help="Namespace(s) to serve (repeatable)."),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Serve every namespace."),
    liveness: str = typer.Option(
        None, "--liveness", help="kopf's own liveness endpoint (leader only), e.g. http://0.0.0.0:8080/healthz"
    ),
    leader_election: bool = typer.Option(
        True, "--leader-election/--no-leader-election", help="Reconcile only while holding the leader Lease."
    ),
    lease_name: str = typer.Option("swarm-operator", "--lease-name", help="The Lease (in the first namespace)."),
    lease_duration: int = typer.Option(
        15, "--lease-duration", min=2, help="Seconds a standby waits for a silent leader (renewal: a third of it)."
    ),
    metrics_port: int = typer.Option(
        8081, "--metrics-port", min=0, max=65535, help="Port of /metrics, /healthz and /readyz (0: none)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the Kubernetes operator for SpecialistPool and SwarmJob (kopf). With leader election (the default) any
    number of replicas may run: the holder of the Lease reconciles, the others stand by."""
    import asyncio

    import kopf

    import swarm.operator.handlers  # noqa: F401  (registers the handlers)

    if not namespace and not all_namespaces:
        namespace = [os.environ.get("SWARM_NAMESPACE") or "default"]
    kopf.configure(verbose=verbose, log_prefix=False)
    asyncio.run(
        _serve_operator(
            namespaces=[] if all_namespaces else namespace,
            lease_namespace=namespace[0] if namespace else os.environ.get("SWARM_NAMESPACE") or "default",
            liveness=liveness,
            lease_name=lease_name if leader_election else None,
            lease_duration=lease_duration,
            metrics_port=metrics_port,
        )
    )


async def _serve_operator(
    namespaces: list[str],
    lease_namespace: str,
    liveness: str | None,
    lease_name: str | None,
    lease_duration: int,
    metrics_port: int,
) -> None:
    """The metrics/probe endpoints for the whole life of the process; kopf once this replica leads (at once
    without an election: `lease_name` None). SIGTERM/SIGINT stop either phase; a lost Lease exits the process."""
    import asyncio
    import signal

    import kopf

    from swarm.operator import leader, observability
    from swarm.operator.kube import Api, load_connection

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # kopf installs its own while it runs
    health = observability.Health()
    runner = await observability.serve(metrics_port, health) if metrics_port else None

    async def operate() -> None:
        # No stop_flag for kopf: it would leave its waiter task pending on a signal and spend 5 s shutting down.
        # kopf replaces the signal handlers with its own; a signal that came before it did is sent again.
        async def resignal() -> None:
            await health.started.wait()
            if stop.is_set():
                signal.raise_signal(signal.SIGTERM)

        if stop.is_set():
            return
        resignalling = asyncio.ensure_future(resignal())
        try:
            await kopf.operator(
                standalone=True,
                clusterwide=not namespaces,
                namespaces=namespaces,
                liveness_endpoint=liveness,
                ready_flag=health.started,
            )
        finally:
            resignalling.cancel()

    try:
        if lease_name is None:
            health.set_leader(True)
            await operate()
            return
        async with Api(load_connection(), retries=0) as api:
            elector = leader.Elector(
                api, lease_namespace, lease_name, duration=lease_duration, on_change=health.set_leader
            )
            await leader.run_elected(elector, operate, stop)
    finally:
        if runner is not None:
            await runner.cleanup()


def node_agent(
    node_name: str = typer.Option(None, "--node-name", envvar="NODE_NAME", help="This node (downward API)."),
    interval: float = typer.Option(30.0, "--interval", help="Seconds between readings."),
    declared_gpus: int = typer.Option(0, "--declared-gpus", min=0, help="Fallback GPU count without NVML."),
    declared_memory_bytes: int = typer.Option(
        0, "--declared-memory-bytes", min=0, help="Fallback bytes per GPU without NVML."
    ),
    once: bool = typer.Option(False, "--once", help="Publish one reading and exit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the annotation instead of publishing it."),
) -> None:
    """Publish this node's GPU memory (NVML) as the Node annotation swarm.ai/gpu-memory."""
    import asyncio
    import logging

    from swarm.operator import node_agent as agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not node_name and not dry_run:
        raise typer.BadParameter("set --node-name or NODE_NAME (or use --dry-run)")
    asyncio.run(
        agent.run(
            node_name or "",
            interval=interval,
            declared_gpus=declared_gpus,
            declared_memory=declared_memory_bytes,
            once=once,
            dry_run=dry_run,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("operator")(operator)
    app.command("node-agent")(node_agent)


if __name__ == "__main__":
    standalone = typer.Typer(no_args_is_help=True)
    register(standalone)
    standalone()
