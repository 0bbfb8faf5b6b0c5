"""The report commands on data they cannot read: the CLI's one error (exit 2, the reason), no traceback, and nothing
written to the reports folder."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.mark.parametrize("command", ["fusion-report", "accuracy-report", "orchestrator-report"])
def test_a_report_on_missing_data_exits_2_saying_why(command: str, tmp_path: Path) -> None:
    from swarm.trainer.commands.cli import _register_all, app

    if not app.registered_commands:
        _register_all()
    missing = tmp_path / "no-such-dataset"
    options = ["--data", str(missing), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    if command != "fusion-report":
        options += ["--reports-dir", str(tmp_path / "reports")]
    result = CliRunner().invoke(app, [command, *options])
    assert result.exit_code == 2, result.output
    assert f"{missing}: data directory does not exist" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "reports").exists()
