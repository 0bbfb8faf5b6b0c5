"""Helpers of the serving tests (loopback only): a CLI swarm as a real process tree, resident-memory sampling,
test certificates, an annotator wrapper to override one stage of, plain state-chunk encoding and decoding."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from swarm.model_server.serving import codec
from swarm.model_server.serving.grpc_runtime import wait_serving
from swarm.model_server.serving.launcher import process_tree, rss_bytes
from swarm.v1 import annotation_pb2 as apb
from swarm.v1 import specialist_pb2 as pb

MiB = 1 << 20


def encode_states(
    states: Sequence[Tensor], chunk_bytes: int = codec.DEFAULT_CHUNK_BYTES, specialist: str = ""
) -> Iterator[pb.StateChunk]:
    """StateChunk messages with their bytes inline (the server's serializer appends them without a copy)."""
    for header, data in codec.iter_chunks(states, chunk_bytes):
        yield codec.to_message(header, data, specialist=specialist)


def decode_states(chunks: Iterable[pb.StateChunk | codec.WireChunk], source: str = "stream") -> list[Tensor]:
    """The layer tensors of one stream's chunks (the client's StateAssembler, fed all at once)."""
    assembler = codec.StateAssembler(source)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.result()


class DelegatingAnnotator:
    """A `TableAnnotator` that hands every stage to `inner`; tests subclass it to change one stage."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.specialist_names = inner.specialist_names  # type: ignore[attr-defined]
        self.model = getattr(inner, "model", None)

    def serialize(self, table: object) -> list[str]:
        return self.inner.serialize(table)  # type: ignore[attr-defined]

    def route(self, table: object) -> dict[str, list[int]]:
        return self.inner.route(table)  # type: ignore[attr-defined]

    def next_stage(self, *args: object) -> dict[str, list[int]]:
        return self.inner.next_stage(*args)  # type: ignore[attr-defined]

    def annotate(self, *args: object) -> object:
        return self.inner.annotate(*args)  # type: ignore[attr-defined]


@dataclass
class CliSwarm:
    process: subprocess.Popen[bytes]
    address: str
    specialists: dict[str, str]
    log: Path

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)


def _read_json(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


@contextmanager
def cli_swarm(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> Iterator[
        CliSwarm]:
    """`swarm serve-annotation --local ... ARGS` as a real process tree on loopback; killed (group) on exit."""
    ready = tmp_path / "swarm.ready.json"
    log = tmp_path / "swarm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarm.trainer.commands.cli", "serve-annotation", "--port", "0",
             "--ready-file", str(ready), "--device", "cpu", *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
        )
    try:
        end = time.monotonic() + timeout_s
        while (info := _read_json(ready)) is None:
            if proc.poll() is not None:
                raise AssertionError(f"swarm exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            if time.monotonic() > end:
                raise AssertionError(f"swarm did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        wait_serving(info["address"], 60)
        yield CliSwarm(proc, info["address"], info.get("specialists", {}), log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass
class PeakRss:
    """Samples the resident bytes of a process tree every `interval_s` while running (a context manager)."""

    pids: list[int]
    interval_s: float = 0.02
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def total(self) -> int:
        return sum(rss_bytes(p) for p in self.pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.peak = self.total()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.total())


@dataclass(frozen=True)
class Pki:
    """A CA and certificates it signed, in cert-manager's folder layout (tls.crt, tls.key, ca.crt)."""

    ca: Path
    server: Path  # server certificate for localhost / 127.0.0.1
    client: Path  # client certificate (mTLS)
    peer: Path  # both (a local swarm: one folder for the specialists and their client)
    stranger: Path  # a client certificate from another CA


def make_pki(root: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    def make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(k, hashes.SHA256()))
        return cert, k

    def issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str, server: bool, client: bool = False
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        usages = [u for u, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                                      (ExtendedKeyUsageOID.CLIENT_AUTH, client or not server)) if wanted]
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca[0].subject)
                   .public_key(k.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(ca[1], hashes.SHA256()), k

    def write(folder: Path, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], ca: x509.Certificate) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tls.crt").write_bytes(pair[0].public_bytes(serialization.Encoding.PEM))
        (folder / "tls.key").write_bytes(pem_key(pair[1]))
        (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        return folder

    ca = make_ca("swarm test CA")
    other = make_ca("another CA")
    ca_file = root / "ca.crt"
    root.mkdir(parents=True, exist_ok=True)
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=ca_file,
        server=write(root / "server", issue(ca, "localhost", server=True), ca[0]),
        client=write(root / "client", issue(ca, "swarm-primary", server=False), ca[0]),
        peer=write(root / "peer", issue(ca, "localhost", server=True, client=True), ca[0]),
        stranger=write(root / "stranger", issue(other, "stranger", server=False), ca[0]),
    )


NOVEL_KINDS = ["Berlin", "2021-03-0", "+49 30 2261", "EUR 12.", "Hotel Adlon", "Maria Schmidt"]


def novel_table(tag: str, columns: int, rows: int, name: str = "novel") -> apb.Table:
    """A table whose every cell is new to any cache: SOTAB-like values, each with the suffix `tag` and its place."""
    return apb.Table(name=name, rows=[
        apb.Row(cells=[f"{NOVEL_KINDS[c % len(NOVEL_KINDS)]}{r} {tag}-{c}-{r}" for c in range(columns)])
        for r in range(rows)
    ])


def stats_of(seen: dict[str, pb.StreamStats], name: str, chunk: codec.WireChunk) -> None:
    """A SpecialistClient `on_chunk` hook keeping each specialist's last StreamStats in `seen`."""
    if chunk.message.HasField("stats"):
        seen[name] = chunk.message.stats
