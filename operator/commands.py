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
    liveness: str = typer.Option(None, "--liveness", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the Kubernetes operator for SpecialistPool and SwarmJob (kopf, standalone: one replica)."""
    import kopf

    import swarm.operator.handlers  # noqa: F401  (registers the handlers)

    if not namespace and not all_namespaces:
        namespace = [os.environ.get("SWARM_NAMESPACE") or "default"]
    kopf.configure(verbose=verbose, log_prefix=False)
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=[] if all_namespaces else namespace,
        liveness_endpoint=liveness,
    )


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
