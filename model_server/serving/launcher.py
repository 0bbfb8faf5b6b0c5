"""The embedded local swarm: N supervised specialist server processes on loopback plus an in-process annotation
server.

`start_local_swarm(["temporal", "geographic"])` (names → untrained tiny specialists, or specialist directories
/ `checkpoint_dir` for trained ones) starts one `swarm serve-specialist` process per specialist on a free port
(each binds port 0 and publishes its address in a ready file: no port races), waits for health SERVING, serves
the annotation API in this process, and tears everything down (SIGTERM, then SIGKILL) on exit. Used by
`swarm serve-annotation`, the throughput benchmark, the integration tests and `served_swarm`: a trained primary
served with its own specialists (`swarm up`, `swarm annotate`, `swarm demo`), or in front of remote ones.

Supervision:
- children die with the parent: each specialist runs in a process group of its own and asks the kernel for
  SIGTERM when the thread that started it goes (prctl PR_SET_PDEATHSIG, set by the child as it starts); all
  specialists are started by one supervisor thread that lives as long as the swarm, so "the thread that started
  it" is the swarm. A SIGKILLed `swarm up` therefore takes its specialists with it, and they stop computing for
  the calls it abandoned (their streams are cancelled with its connections);
- a specialist that exits is reaped at once (no zombie), reported (exit status, the tail of its log), and restarted
  with exponential backoff (0.5 s doubling to 30 s; back to 0.5 s once it has run for a minute), on its old port
  when it is free (else a new one, and the client is re-pointed). The annotation server's health reports
  `swarm.v1.AnnotationService` NOT_SERVING while one is missing (see annotation_server);
- nothing is left on disk: the ready files live in a temporary folder only while a specialist starts, and the
  logs are unlinked files the parent keeps open (their tail is read back for error messages).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.manifest import SpecialistManifest
from swarm.model_server.serving.annotation_server import AnnotationLimits, AnnotationServer, build_annotation_server
from swarm.model_server.serving.annotator import TableAnnotator
from swarm.model_server.serving.grpc_runtime import ClientTls, ServerSecurity, read_ready_file, wait_serving
from swarm.model_server.serving.specialist_client import RetryPolicy, SpecialistClient

if TYPE_CHECKING:
    from swarm.model_server.serving.primary_annotator import PrimaryAnnotator

log = logging.getLogger(__name__)

# The one command line of the specialist server (`swarm serve-specialist`), as this interpreter runs it.
SWARM_CLI = (sys.executable, "-m", "swarm.trainer.commands.cli")

AnnotatorFactory = Callable[[list[str]], TableAnnotator]

PR_SET_PDEATHSIG = 1
PARENT_PID_ENV = "SWARM_PARENT_PID"
_LOG_TAIL_BYTES = 64 << 10


def _resolve_prctl() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True).prctl if name and sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _resolve_prctl()


def die_with_parent() -> None:
    """In a specialist started by a local swarm (the launcher names its pid in SWARM_PARENT_PID): ask the kernel
    for SIGTERM when the thread that started it goes, and exit at once if it already has.

    Set by the child after exec rather than between fork and exec: a preexec function would make Python fork
    (not vfork) the multi-threaded parent, and gRPC's fork handlers then run in a child that has none of gRPC's
    threads, which can abort it (seen: "epoll_wait error: Bad file descriptor" and SIGABRT under load). The death
    signal still refers to the parent thread that spawned the child, so the semantics are the same.
    """
    parent = os.environ.pop(PARENT_PID_ENV, None)
    if parent is None:
        return
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before the prctl: nobody would stop this process
        os._exit(1)


def cpu_shares(processes: int, cpus: Sequence[int]) -> list[list[int]] | None:
    """Cores of their own for `processes` processes (the first share for the annotation server's primary, then one
    per specialist): `cpus` split into contiguous shares whose sizes differ by at most one. None when there are
    fewer cores than processes: shared cores are left to the kernel's scheduler, which balances them better than a
    fixed pinning would."""
    cpus = sorted(cpus)
    if processes <= 0 or len(cpus) < processes:
        return None
    size, extra = divmod(len(cpus), processes)
    shares, start = [], 0
    for i in range(processes):
        end = start + size + (1 if i < extra else 0)
        shares.append(cpus[start:end])
        start = end
    return shares


def pin_to(cpus: Sequence[int]) -> None:
    """Run this process on `cpus` only (Linux; elsewhere a no-op)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))


def available_cpus() -> list[int]:
    """The cores this process may run on (its affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc; Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, i = [pid], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    return tree


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class SpecialistProcess:
    """One specialist of the swarm; `process` is its current incarnation (a restart replaces it)."""

    name: str
    process: subprocess.Popen[bytes]
    log_fd: int
    args: list[str] = field(default_factory=list)
    address: str = ""
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    up: bool = False
    ready_file: Path | None = None  # while starting

    def log_tail(self, lines: int = 20) -> str:
        try:
            size = os.fstat(self.log_fd).st_size
            data = os.pread(self.log_fd, _LOG_TAIL_BYTES, max(0, size - _LOG_TAIL_BYTES))
        except OSError:
            return "(no log)"
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1]) if self.address else 0


@dataclass
class LocalSwarm:
    specialists: dict[str, SpecialistProcess]
    client: SpecialistClient
    annotator: TableAnnotator | None = None
    annotation: AnnotationServer | None = None
    supervisor: Supervisor | None = None

    @property
    def addresses(self) -> dict[str, str]:
        return {name: proc.address for name, proc in self.specialists.items()}

    @property
    def annotation_address(self) -> str:
        if self.annotation is None:
            raise RuntimeError("this local swarm runs no annotation server")
        return self.annotation.address

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one specialist process (tests use SIGKILL to lose a specialist mid-stream; the
        supervisor then restarts it)."""
        self.specialists[name].process.send_signal(sig)


def _resolve(spec: str | Path, checkpoint_dir: Path | None) -> tuple[str, list[str]]:
    """(specialist name, server arguments) for a name or a specialist directory."""
    path = Path(spec)
    if SpecialistManifest.is_in(path):
        name = SpecialistManifest.load(path).name
        return name, ["--checkpoint-dir", str(path)]
    name = str(spec)
    return name, ([] if checkpoint_dir is None else ["--checkpoint-dir", str(checkpoint_dir)])


def default_annotator(names: list[str], config: str, primary_dir: Path | None, device: str = DEVICE_AUTO,
                      policy: Path | str | None = None, spawn_budget: int | None = None) -> PrimaryAnnotator:
    """The trained primary in `primary_dir` (with its orchestrator policy, see PrimaryAnnotator.load), else an
    untrained one that sends every column to every specialist."""
    from swarm.model_server.model.devices import resolve_device
    from swarm.model_server.serving.primary_annotator import PrimaryAnnotator

    if primary_dir is not None:
        return PrimaryAnnotator.load(primary_dir, resolve_device(device), policy, spawn_budget)
    log.warning("no primary checkpoint: the local swarm annotates with an UNTRAINED %s primary", config)
    return PrimaryAnnotator.untrained(names, config=config, device=resolve_device(device))


def _open_log(name: str) -> int:
    """An unlinked, append-only log file: the child writes to it, the parent reads its tail; nothing remains."""
    fd, path = tempfile.mkstemp(prefix=f"swarm-{name}-", suffix=".log")
    os.close(fd)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    os.unlink(path)
    return fd


def _spawn(name: str, args: list[str], host: str, port: int, ready: Path, log_fd: int) -> subprocess.Popen[bytes]:
    cmd = [
        *SWARM_CLI,
        "serve-specialist",
        "--specialist",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--ready-file",
        str(ready),
        *args,
    ]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_PID_ENV: str(os.getpid())},
        process_group=0,  # no preexec_fn: the child is vfork-spawned and calls die_with_parent() itself
    )


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the specialist's process group (itself and anything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _await_ready(proc: SpecialistProcess, ready: Path, deadline: float, tls: ClientTls | None) -> None:
    while (address := read_ready_file(ready)) is None:
        if proc.process.poll() is not None:
            raise RuntimeError(
                f"specialist {proc.name} exited with {proc.process.returncode}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"specialist {proc.name} did not start in time:\n{proc.log_tail()}")
        time.sleep(0.05)
    proc.address = address
    wait_serving(address, max(1.0, deadline - time.monotonic()), "swarm.v1.SpecialistService", tls)


def _stop(procs: Sequence[SpecialistProcess], grace_s: float) -> None:
    for proc in procs:
        if proc.process.poll() is None:
            _signal_group(proc.process, signal.SIGTERM)
    end = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.process.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("specialist %s ignored SIGTERM; killing it", proc.name)
            _signal_group(proc.process, signal.SIGKILL)
            proc.process.wait()
        _signal_group(proc.process, signal.SIGKILL)  # anything left in its group


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts of a specialist that exited: initial, doubling up to max; reset after a
    specialist has run for `reset_after_s`."""

    initial_s: float = 0.5
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, restarts: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** max(0, restarts))


class Supervisor:
    """Starts the specialists, and restarts any that exits, on one long-lived thread (see the module doc)."""

    POLL_S = 0.2

    def __init__(self, host: str, startup_timeout_s: float, policy: RestartPolicy | None = None,
                 tls: ClientTls | None = None) -> None:
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.policy = policy or RestartPolicy()
        self.tls = tls
        self.specialists: dict[str, SpecialistProcess] = {}
        self.client: SpecialistClient | None = None
        self.restarts_total = 0
        self._requests: queue.Queue[tuple[Callable[[], object], Future[object]]] = queue.Queue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._pending: dict[str, tuple[float, Path | None]] = {}  # name -> (restart at, ready file once spawned)
        self.supervising = False  # set once the first start-up is complete
        self._thread = threading.Thread(target=self._run, name="swarm-supervisor", daemon=True)
        self._thread.start()

    # -- run on the supervisor thread ------------------------------------------------------------------------

    def _call(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the supervisor thread (the parent-death signal follows the thread that forks)."""
        done: Future[object] = Future()
        self._requests.put((fn, done))
        return done.result()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    fn, done = self._requests.get(timeout=self.POLL_S)
                except queue.Empty:
                    if self.supervising:
                        try:
                            self._watch()
                        except Exception:  # never let supervision die
                            log.exception("supervising the specialists failed")
                    continue
                try:
                    done.set_result(fn())
                except BaseException as exc:  # handed to the caller
                    done.set_exception(exc)
        finally:
            self._stopped.set()

    def _watch(self) -> None:
        now = time.monotonic()
        for name, proc in self.specialists.items():
            if name in self._pending:
                self._progress_restart(name, proc, now)
                continue
            code = proc.process.poll()  # reaps an exited child: no zombie
            if code is None:
                if proc.up and proc.restarts and now - proc.started_at > self.policy.reset_after_s:
                    proc.restarts = 0
                continue
            proc.up = False
            delay = self.policy.delay(proc.restarts)
            log.warning(
                "specialist %s (pid %d) exited with %s; restarting it in %.1fs. Last log lines:\n%s",
                name, proc.process.pid, code, delay, proc.log_tail(10),
            )
            self._pending[name] = (now + delay, None)

    def _progress_restart(self, name: str, proc: SpecialistProcess, now: float) -> None:
        at, ready = self._pending[name]
        if ready is None:
            if now < at:
                return
            ready = Path(tempfile.mkdtemp(prefix="swarm-ready-")) / f"{name}.ready.json"
            # Its old port when that is free (callers keep their address), else any free port.
            port = proc.port if proc.restarts == 0 or proc.restarts % 2 == 0 else 0
            proc.process = _spawn(name, proc.args, self.host, port, ready, proc.log_fd)
            proc.restarts += 1
            self.restarts_total += 1
            proc.started_at = now
            self._pending[name] = (now + self.startup_timeout_s, ready)
            return
        address = read_ready_file(ready)
        exited = proc.process.poll() is not None
        if address is None and not exited and now < at:
            return
        shutil.rmtree(ready.parent, ignore_errors=True)
        del self._pending[name]
        if address is None:
            if not exited:
                _signal_group(proc.process, signal.SIGKILL)
                proc.process.wait()
            log.warning("restart %d of specialist %s failed; retrying with backoff", proc.restarts, name)
            self._pending[name] = (now + self.policy.delay(proc.restarts), None)
            return
        if address != proc.address:
            proc.address = address
            if self.client is not None:
                self.client.set_address(name, address)
        proc.up = True
        log.info("specialist %s restarted (restart %d) on %s", name, proc.restarts, address)

    # -- called from the swarm's thread ----------------------------------------------------------------------

    def start(self, name: str, args: list[str]) -> SpecialistProcess:
        def spawn() -> SpecialistProcess:
            workdir = Path(tempfile.mkdtemp(prefix="swarm-ready-"))
            log_fd = _open_log(name)
            ready = workdir / f"{name}.ready.json"
            try:
                proc = SpecialistProcess(name, _spawn(name, args, self.host, 0, ready, log_fd), log_fd, args)
            except BaseException:
                os.close(log_fd)
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            proc.ready_file = ready
            self.specialists[name] = proc
            return proc

        return self._call(spawn)  # type: ignore[return-value]

    def await_ready(self, deadline: float) -> None:
        """Wait for every started specialist to serve; from then on, exits are restarted."""
        for proc in self.specialists.values():
            ready = proc.ready_file
            assert ready is not None
            try:
                _await_ready(proc, ready, deadline, self.tls)
            finally:
                shutil.rmtree(ready.parent, ignore_errors=True)
                proc.ready_file = None
            proc.up = True
        self.supervising = True

    def stop(self, grace_s: float) -> None:
        def stop_all() -> None:
            for _, ready in self._pending.values():
                if ready is not None:
                    shutil.rmtree(ready.parent, ignore_errors=True)
            self._pending.clear()
            _stop(list(self.specialists.values()), grace_s)
            for proc in self.specialists.values():
                with contextlib.suppress(OSError):
                    os.close(proc.log_fd)

        self.supervising = False
        try:
            if self._thread.is_alive():
                self._call(stop_all)
            else:
                stop_all()
        finally:
            self._stop.set()
            self._stopped.wait(5)


def _start_specialists(
    supervisor: Supervisor,
    specialists: Sequence[str | Path],
    checkpoint_dir: Path | None,
    shares: list[list[int]] | None,
    server_args: Sequence[str],
    per_specialist_args: Mapping[str, Sequence[str]] | None,
    common: list[str],
) -> None:
    """Start one server process per specialist (not awaiting them): its own arguments, then `common` (config,
    threads, device), its CPU share (`shares[i + 1]`; the first is the primary's) and the extra options."""
    for i, spec in enumerate(specialists):
        name, args = _resolve(spec, checkpoint_dir)
        if name in supervisor.specialists:
            raise ValueError(f"specialist {name!r} given twice")
        extra = [*server_args, *(per_specialist_args or {}).get(name, ())]
        pinned = ["--cpus", ",".join(map(str, shares[i + 1]))] if shares else []
        supervisor.start(name, [*args, *common, *pinned, *extra])


def _build_annotator(annotator: TableAnnotator | AnnotatorFactory | None, names: list[str], config: str,
                     primary_dir: Path | None, device: str) -> TableAnnotator:
    """The annotator given, or the one a factory builds for `names`, or (None) the default_annotator."""
    if annotator is None:
        return default_annotator(names, config, primary_dir, device)
    # An TableAnnotator may itself be callable (an nn.Module); a class or function is a factory.
    is_factory = isinstance(annotator, type) or not hasattr(annotator, "annotate")
    return cast(AnnotatorFactory, annotator)(names) if is_factory else cast(TableAnnotator, annotator)


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
    restart: RestartPolicy | None = None,
    security: ServerSecurity | None = None,
    health_port: int | None = None,
) -> Iterator[LocalSwarm]:
    """Start the specialists (names or directories) and, unless `with_annotation=False`, the annotation API.

    `annotator` is an TableAnnotator, a factory taking the specialist names, or None for the PrimaryAnnotator
    (loaded from `primary_dir`, else untrained). `server_args`/`per_specialist_args` are extra
    `swarm serve-specialist` options (e.g. `--dtype bfloat16`). `security` secures the annotation API; the
    specialists use mTLS when `$SWARM_TLS_DIR` is set (they and the client read it), else plaintext on loopback.
    """
    if not specialists:
        raise ValueError("a local swarm needs at least one specialist")
    # One share of the CPUs per specialist and one for the in-process primary: oversubscribed OpenMP threads
    # spin and starve the other processes (1 specialist on 2 cores ran 15x slower with 2 threads each). Where
    # there is a core per process, each is pinned to its share (the specialists in parallel, as the design's
    # critical path assumes); `torch_threads` overrides the threads per process, not the pinning.
    cpus = available_cpus()
    shares = cpu_shares(len(specialists) + 1, cpus)
    threads = torch_threads or max(1, len(cpus) // (len(specialists) + 1))
    tls = ClientTls.from_env()
    supervisor = Supervisor(host, startup_timeout_s, restart, tls)
    client: SpecialistClient | None = None
    server: AnnotationServer | None = None
    threads_before = torch.get_num_threads()
    try:
        _start_specialists(supervisor, specialists, checkpoint_dir, shares, server_args, per_specialist_args,
                           ["--config", config, "--torch-threads", str(threads), "--device", device])
        supervisor.await_ready(time.monotonic() + startup_timeout_s)
        procs = supervisor.specialists
        client = SpecialistClient({n: p.address for n, p in procs.items()}, retry=retry, tls=tls)
        supervisor.client = client
        swarm = LocalSwarm(procs, client, supervisor=supervisor)
        if with_annotation:
            # The primary's share, for the swarm's lifetime (restored on exit): torch's default (every core) made
            # one annotation 1.5x slower on 2 cores, its threads spinning against the specialists'.
            torch.set_num_threads(threads)
            if shares:
                pin_to(shares[0])
            built = _build_annotator(annotator, list(procs), config, primary_dir, device)
            swarm.annotator = built
            server = build_annotation_server(built, client, annotation_host or host, annotation_port,
                                             limits, security, health_port).start()
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
        supervisor.stop(stop_grace_s)
        torch.set_num_threads(threads_before)
        if shares:
            pin_to(cpus)


@contextlib.contextmanager
def served_swarm(annotator: PrimaryAnnotator, endpoints: Mapping[str, str] | None = None, *,
                 device: str = DEVICE_AUTO, host: str = "127.0.0.1", port: int = 0,
                 limits: AnnotationLimits | None = None, server_args: Sequence[str] = (),
                 security: ServerSecurity | None = None, health_port: int | None = None,
                 torch_threads: int | None = None) -> Iterator[AnnotationServer]:
    """The annotation API of a primary: in front of running specialist servers when `endpoints` is given, else
    with its own specialists (the directories its model.json names) as supervised local processes on loopback, or
    alone when it fuses none. The one way `swarm up`, `swarm serve-annotation --specialist`, `swarm annotate`,
    `swarm demo` and the throughput benchmark serve a primary."""
    if endpoints is not None or not annotator.specialist_names:
        with SpecialistClient(dict(endpoints or {})) as client:
            server = build_annotation_server(annotator, client, host, port, limits, security, health_port).start()
            try:
                yield server
            finally:
                server.stop(5.0)
        return
    if not annotator.specialist_dirs:
        raise ValueError(f"the primary fuses {annotator.specialist_names} but names no specialist directories "
                         "(an untrained primary): give the specialists' endpoints")
    with start_local_swarm(annotator.specialist_dirs, annotator=annotator, config=annotator.model.cfg.name,
                           annotation_host=host, annotation_port=port, device=device, limits=limits,
                           server_args=list(server_args), security=security, health_port=health_port,
                           torch_threads=torch_threads) as swarm:
        assert swarm.annotation is not None
        yield swarm.annotation
