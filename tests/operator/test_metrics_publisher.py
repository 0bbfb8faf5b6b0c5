"""publish_metrics (trainer/commands/metrics_publisher.py): a trainer writes its metrics, as one JSON object, to its
container's termination message file ($SWARM_TERMINATION_MESSAGE), which the operator reads back from the pod's
status (status.metrics_from_pod); outside a trainer pod or on failure it logs one line and returns False, never
raises. No API access at all (the trainer has no token)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from swarm.operator import builders, status
from swarm.trainer.commands import metrics_publisher
from swarm.trainer.commands.metrics_publisher import ENV_TERMINATION_MESSAGE, publish_metrics

pytestmark = pytest.mark.timeout(30)
METRICS = {"micro_f1": 0.81, "macro_f1": 0.62, "throughput": 950.5, "critical_steps": 7, "loss": 0.3}
WRITTEN = {"microF1": 0.81, "macroF1": 0.62, "throughput": 950.5, "criticalSteps": 7}


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TERMINATION_MESSAGE, raising=False)


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == metrics_publisher.__name__]


def test_env_name_is_the_one_the_operator_sets() -> None:
    assert ENV_TERMINATION_MESSAGE == builders.TERMINATION_MESSAGE_ENV
    assert builders.TERMINATION_MESSAGE_PATH == "/dev/termination-log"


def test_message_value_maps_keys_and_drops_the_rest() -> None:
    assert metrics_publisher.message_value(
        {
            **METRICS,
            "criticalSteps": 7.0,
            "throughput": math.nan,
            "macroF1": None,
            "flag": True,
            "micro_f1": math.inf,
            "microF1": 0.5,
            "text": "0.9",
        }  # type: ignore[dict-item]
    ) == {"microF1": 0.5, "macroF1": 0.62, "criticalSteps": 7}
    # camelCase keys pass as they are; criticalSteps becomes an int; bool is not a number.
    value = metrics_publisher.message_value({"macroF1": 0.4, "critical_steps": 3.0, "throughput": False})
    assert value == {"macroF1": 0.4, "criticalSteps": 3} and type(value["criticalSteps"]) is int
    assert metrics_publisher.message_value({"loss": 1.0, "throughput": -math.inf}) == {}


def test_writes_the_termination_message_from_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "termination-log"
    monkeypatch.setenv(ENV_TERMINATION_MESSAGE, str(target))
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        assert publish_metrics(METRICS) is True
    text = target.read_text()
    assert json.loads(text) == WRITTEN
    assert text == json.dumps(WRITTEN, sort_keys=True)  # one compact object, stable key order
    assert len(text.encode()) <= metrics_publisher.TERMINATION_MESSAGE_LIMIT
    assert len(_records(caplog)) == 1 and str(target) in _records(caplog)[0]

    # A second call replaces the message (the kubelet reads the file once, at exit).
    assert publish_metrics({"micro_f1": 0.5}) is True
    assert json.loads(target.read_text()) == {"microF1": 0.5}


def test_explicit_path_wins_over_the_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TERMINATION_MESSAGE, str(tmp_path / "from-env"))
    assert publish_metrics(METRICS, path=tmp_path / "given") is True
    assert json.loads((tmp_path / "given").read_text()) == WRITTEN
    assert not (tmp_path / "from-env").exists()


def test_the_operator_reads_back_what_was_written(tmp_path: Path) -> None:
    """The file's content, as the kubelet reports it in the pod's status, is what the operator copies."""
    target = tmp_path / "termination-log"
    assert publish_metrics(METRICS, path=target) is True
    pod = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 0, "message": target.read_text()}}}
            ],
        }
    }
    assert status.metrics_from_pod(pod) == (WRITTEN, None)


def test_not_in_a_trainer_pod(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        assert publish_metrics(METRICS) is False
    assert _records(caplog) == [f"metrics not published: not in a swarm trainer pod ({ENV_TERMINATION_MESSAGE} unset)"]
    caplog.clear()
    monkeypatch.setenv(ENV_TERMINATION_MESSAGE, "")
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        assert publish_metrics(METRICS) is False
    assert len(_records(caplog)) == 1 and "not in a swarm trainer pod" in _records(caplog)[0]


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda tmp: tmp / "missing-dir" / "termination-log", id="no-such-directory"),
        pytest.param(lambda tmp: tmp, id="a-directory"),
        pytest.param(lambda tmp: tmp / "file" / "termination-log", id="under-a-file"),
    ],
)
def test_unwritable_path_returns_false(where: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    target = where(tmp_path)
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        assert publish_metrics(METRICS, path=target) is False
    messages = _records(caplog)
    assert len(messages) == 1 and messages[0].startswith(f"metrics not published: {target}: "), messages


def test_failures_return_false_and_never_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "termination-log"
    monkeypatch.setenv(ENV_TERMINATION_MESSAGE, str(target))
    with caplog.at_level(logging.INFO, logger=metrics_publisher.__name__):
        # Nothing to publish: no known key, or only non-finite values.
        assert publish_metrics({"loss": 1.0}) is False
        assert publish_metrics({"micro_f1": math.nan, "throughput": math.inf}) is False
        # Over the kubelet's limit (not reachable with the four known keys: the guard is forced here).
        monkeypatch.setattr(metrics_publisher, "TERMINATION_MESSAGE_LIMIT", 8)
        assert publish_metrics(METRICS) is False
    messages = _records(caplog)
    assert len(messages) == 3 and all(m.startswith("metrics not published: ") for m in messages), messages
    assert "termination message limit" in messages[2]
    assert not target.exists()  # nothing half-written


# "It never raises": an int too large for a float is dropped like a non-finite number (nothing left to publish), and
# a path the OS refuses to parse (a NUL byte) is a failed write.
@pytest.mark.parametrize(
    ("metrics", "where"),
    [
        pytest.param({"critical_steps": 10**400}, "termination-log", id="int-too-large-for-a-float"),
        pytest.param({"micro_f1": 0.5}, "termination\0log", id="nul-in-the-path"),
    ],
)
def test_never_raises_on_odd_input(metrics: dict[str, Any], where: str, tmp_path: Path) -> None:
    assert publish_metrics(metrics, path=f"{tmp_path}/{where}") is False
