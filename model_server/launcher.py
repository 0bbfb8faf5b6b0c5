"""The embedded local swarm: N specialist server processes on loopback plus an in-process annotation server.

`start_local_swarm(["temporal", "geographic"])` (names → untrained tiny specialists, or specialist directories
/ `checkpoint_dir` for trained ones) starts one `swarm serve-specialist` process per specialist
on a free port (each binds port 0 and publishes its address in a ready file: no port races), waits for health
SERVING, serves the annotation API in this process, and tears everything down (SIGTERM, then SIGKILL) on exit.
Used by `swarm up`, `swarm demo` and the integration tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarm.model_server.annotation_server import AnnotationLimits, build_annotation_server
from swarm.model_server.annotator import TableAnnotator
from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.grpc_runtime import ManagedServer, read_ready_file, wait_serving
from swarm.model_server.specialist_client import RetryPolicy, SpecialistClient

log = logging.getLogger(__name__)

# The one command line of the specialist server (`swarm serve-specialist`), as this interpreter runs it.
SWARM_CLI = (sys.executable, "-m", "swarm.trainer.cli")

AnnotatorFactory = Callable[[list[str]], TableAnnotator]


@dataclass
class SpecialistProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except FileNotFoundError:
            return "(no log)"


@dataclass
class LocalSwarm:
    specialists: dict[str, SpecialistProcess]
    client: SpecialistClient
    annotator: TableAnnotator | None = None
    annotation: ManagedServer | None = None
    workdir: Path = field(default_factory=Path)

    @property
    def addresses(self) -> dict[str, str]:
        return {name: proc.address for name, proc in self.specialists.items()}

    @property
    def annotation_address(self) -> str:
        if self.annotation is None:
            raise RuntimeError("this local swarm runs no annotation server")
        return self.annotation.address

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one specialist process (tests use SIGKILL to lose a specialist mid-stream)."""
        self.specialists[name].process.send_signal(sig)


def _resolve(spec: str | Path, checkpoint_dir: Path | None) -> tuple[str, list[str]]:
    """(specialist name, server arguments) for a name or a specialist directory."""
    path = Path(spec)
    if (path / "specialist.json").is_file():
        name = json.loads((path / "specialist.json").read_text(encoding="utf-8"))["name"]
        return name, ["--checkpoint-dir", str(path)]
    name = str(spec)
    return name, ([] if checkpoint_dir is None else ["--checkpoint-dir", str(checkpoint_dir)])


def default_annotator(names: list[str], config: str, primary_dir: Path | None, device: str = DEVICE_AUTO
                      ) -> TableAnnotator:
    from swarm.model_server.devices import resolve_device
    from swarm.model_server.primary_annotator import PrimaryAnnotator

    if primary_dir is not None:
        return PrimaryAnnotator.load(primary_dir, resolve_device(device))
    log.warning("no primary checkpoint: the local swarm annotates with an UNTRAINED %s primary", config)
    return PrimaryAnnotator.untrained(names, config=config, device=resolve_device(device))


def _start(name: str, args: list[str], workdir: Path, host: str) -> SpecialistProcess:
    ready = workdir / f"{name}.ready.json"
    log_path = workdir / f"{name}.log"
    cmd = [
        *SWARM_CLI,
        "serve-specialist",
        "--specialist",
        name,
        "--host",
        host,
        "--port",
        "0",
        "--ready-file",
        str(ready),
        *args,
    ]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    return SpecialistProcess(name, proc, log_path)


def _await_ready(proc: SpecialistProcess, workdir: Path, deadline: float) -> None:
    ready = workdir / f"{proc.name}.ready.json"
    while (address := read_ready_file(ready)) is None:
        if proc.process.poll() is not None:
            raise RuntimeError(
                f"specialist {proc.name} exited with {proc.process.returncode}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"specialist {proc.name} did not start in time:\n{proc.log_tail()}")
        time.sleep(0.05)
    proc.address = address
    wait_serving(address, max(1.0, deadline - time.monotonic()), "swarm.v1.SpecialistService")


def _stop(procs: Sequence[SpecialistProcess], grace_s: float) -> None:
    for proc in procs:
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.process.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("specialist %s ignored SIGTERM; killing it", proc.name)
            proc.process.kill()
            proc.process.wait()


@contextlib.contextmanager
def start_local_swarm(
    specialists: Sequence[str | Path],
    *,
    annotator: TableAnnotator | AnnotatorFactory | None = None,
    config: str = "tiny",
    checkpoint_dir: Path | None = None,
    primary_dir: Path | None = None,
    host: str = "127.0.0.1",
    annotation_host: str | None = None,
    annotation_port: int = 0,
    with_annotation: bool = True,
    server_args: Sequence[str] = (),
    per_specialist_args: Mapping[str, Sequence[str]] | None = None,
    torch_threads: int | None = None,
    device: str = DEVICE_AUTO,
    limits: AnnotationLimits | None = None,
    retry: RetryPolicy | None = None,
    startup_timeout_s: float = 120.0,
    stop_grace_s: float = 5.0,
) -> Iterator[LocalSwarm]:
    """Start the specialists (names or directories) and, unless `with_annotation=False`, the annotation API.

    `annotator` is an TableAnnotator, a factory taking the specialist names, or None for the PrimaryAnnotator
    (loaded from `primary_dir`, else untrained). `server_args`/`per_specialist_args` are extra
    `swarm serve-specialist` options (e.g. `--dtype bfloat16`).
    """
    if not specialists:
        raise ValueError("a local swarm needs at least one specialist")
    # One share of the CPUs per specialist and one for the in-process primary: oversubscribed OpenMP threads
    # spin and starve the other processes (1 specialist on 2 cores ran 15x slower with 2 threads each).
    threads = torch_threads or max(1, (os.cpu_count() or 1) // (len(specialists) + 1))
    workdir = Path(tempfile.mkdtemp(prefix="swarm-local-"))
    procs: dict[str, SpecialistProcess] = {}
    client: SpecialistClient | None = None
    server: ManagedServer | None = None
    try:
        for spec in specialists:
            name, args = _resolve(spec, checkpoint_dir)
            if name in procs:
                raise ValueError(f"specialist {name!r} given twice")
            extra = [*server_args, *(per_specialist_args or {}).get(name, ())]
            procs[name] = _start(
                name, [*args, "--config", config, "--torch-threads", str(threads), "--device", device, *extra],
                workdir, host
            )
        deadline = time.monotonic() + startup_timeout_s
        for proc in procs.values():
            _await_ready(proc, workdir, deadline)
        client = SpecialistClient({n: p.address for n, p in procs.items()}, retry=retry)
        swarm = LocalSwarm(procs, client, workdir=workdir)
        if with_annotation:
            names = list(procs)
            if annotator is None:
                swarm.annotator = default_annotator(names, config, primary_dir, device)
            else:
                # An TableAnnotator may itself be callable (an nn.Module); a class or function is a factory.
                is_factory = isinstance(annotator, type) or not hasattr(annotator, "annotate")
                swarm.annotator = annotator(names) if is_factory else annotator
            server = build_annotation_server(swarm.annotator, client, annotation_host or host, annotation_port,
                                             limits).start()
            swarm.annotation = server
        log.info(
            "local swarm up: %s%s",
            swarm.addresses,
            f", annotation on {server.address}" if server is not None else "",
        )
        yield swarm
    finally:
        if server is not None:
            server.stop(stop_grace_s)
        if client is not None:
            client.close()
        _stop(list(procs.values()), stop_grace_s)
        shutil.rmtree(workdir, ignore_errors=True)
