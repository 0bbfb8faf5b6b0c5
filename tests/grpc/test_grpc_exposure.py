"""Exposure (issue #29): the serving commands refuse a non-loopback --host without TLS unless --insecure, before
anything is bound or loaded; the server's warning does not claim there is no authentication when a token is set."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from swarm.model_server.serving.grpc_runtime import ManagedServer, ServerSecurity, is_loopback

pytestmark = pytest.mark.timeout(120)

REFUSED = "without TLS"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarm.trainer.commands.cli", *args, "--port", "0"],
                          capture_output=True, text=True, timeout=90)


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", "192.168.1.2"]))


@pytest.mark.parametrize(
    ("command", "what"),
    [(["serve-annotation", "--host", "0.0.0.0"], "the annotation API"),
     (["up", "--host", "0.0.0.0"], "the annotation API"),
     (["serve-specialist", "--specialist", "temporal", "--host", "0.0.0.0"], "specialist 'temporal'")],
    ids=["serve-annotation", "up", "serve-specialist"],
)
def test_a_non_loopback_host_without_tls_is_refused(command: list[str], what: str) -> None:
    done = _cli(*command)
    assert done.returncode == 2, done.stderr
    assert f"refusing to serve {what} on 0.0.0.0 (not loopback) {REFUSED}" in done.stderr
    assert "--insecure" in done.stderr and "Traceback" not in done.stderr


def test_a_token_without_tls_is_not_called_unauthenticated(tmp_path: object) -> None:
    token = tmp_path / "token"  # type: ignore[operator]
    token.write_text("s3cret")
    done = _cli("serve-annotation", "--host", "0.0.0.0", "--auth-token-file", str(token))
    assert done.returncode == 2
    assert "bearer token and every table would travel in plaintext" in done.stderr
    assert "no TLS or authentication" not in done.stderr


@pytest.mark.parametrize("command", ["serve-annotation", "up"])
def test_insecure_lets_a_plaintext_host_through(command: str) -> None:
    """With --insecure the exposure check passes and the next check of the options speaks (nothing is bound)."""
    done = _cli(command, "--host", "0.0.0.0", "--insecure", "--client-ca", "/nonexistent-ca.pem")
    assert done.returncode == 2 and "--client-ca needs --tls-dir" in done.stderr, done.stderr
    assert REFUSED not in done.stderr


@pytest.mark.parametrize(("token", "warning", "not_said"), [
    ("s3cret", "the bearer token and every table travel in plaintext", "WITHOUT TLS or authentication"),
    (None, "WITHOUT TLS or authentication", "bearer token"),
])
def test_the_plaintext_warning_says_what_is_exposed(caplog: pytest.LogCaptureFixture, token: str | None,
                                                    warning: str, not_said: str) -> None:
    caplog.set_level(logging.WARNING, logger="swarm.model_server.serving.grpc_runtime")
    server = ManagedServer([], "0.0.0.0", 0, 2, 1 << 20, security=ServerSecurity(token=token))
    server.stop(0)  # never started: nothing was served
    assert warning in caplog.text and not_said not in caplog.text
    caplog.clear()
    loopback = ManagedServer([], "127.0.0.1", 0, 2, 1 << 20, security=ServerSecurity(token=token))
    loopback.stop(0)
    assert "WITHOUT TLS" not in caplog.text


@pytest.mark.parametrize("cpus", ["abc", "9999"], ids=["not-a-number", "no-such-core"])
def test_a_bad_cpus_list_is_a_clear_error(cpus: str) -> None:
    """serve-specialist --cpus (a local swarm's pinning) names cores: anything else exits 2 saying so, before a
    model is loaded or a port bound."""
    done = _cli("serve-specialist", "--specialist", "temporal", "--cpus", cpus)
    assert done.returncode == 2, done.stderr
    assert f"--cpus {cpus!r}" in done.stderr and "Traceback" not in done.stderr
