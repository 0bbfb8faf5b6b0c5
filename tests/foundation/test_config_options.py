"""CLI options derived from config classes (trainer/commands/config_options.py): every derived option's default
and bounds are its config field's, a config's default change shows in --help, and what a command receives is the
config built from the options given."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from swarm.trainer.commands.cli_options import DEFAULT_DATA
from swarm.trainer.commands.config_options import ConfigArgs, Flag, config_options, derived_options, field_default
from swarm.trainer.release import ReleaseConfig


@pytest.fixture(scope="module")
def swarm_app() -> typer.Typer:
    from swarm.trainer.commands.cli import _register_all, app

    if not app.registered_commands:
        _register_all()
    return app


def _click_params(app: typer.Typer) -> dict[str, dict[str, Any]]:
    group = typer.main.get_command(app)
    return {name: {p.name: p for p in command.params}
            for name, command in group.commands.items()}


def test_every_derived_option_has_its_fields_default_and_bounds(swarm_app: typer.Typer) -> None:
    params = _click_params(swarm_app)
    checked = 0
    for info in swarm_app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__.replace("_", "-")
        for derived in derived_options(info.callback):
            field = derived.config.model_fields[derived.field]
            option = params[name][derived.parameter]
            default = option.default
            if field.is_required() and derived.field != "data":  # required on the command line too (adapt --domain)
                assert option.required, (name, derived)
                checked += 1
                continue
            expected = DEFAULT_DATA if field.is_required() else field_default(derived.config, derived.field)
            if expected in ([], None):  # a repeatable option: no default on the command line, the field's if empty
                assert default in ([], (), None), (name, derived)
            else:
                assert default == expected, (name, derived, default, expected)
            if field.description:  # (train's PARL options have the help prefix "parl: ")
                assert option.help.endswith(field.description[1:]), (name, derived)
            for rule in field.metadata:
                if hasattr(rule, "ge"):
                    assert option.min == rule.ge, (name, derived)
            checked += 1
    # train, release, demo, fusion/accuracy/orchestrator-report, serve-annotation and up derive their options
    assert checked > 80


def test_serve_annotation_and_up_share_the_serving_settings(swarm_app: typer.Typer) -> None:
    from swarm.trainer.commands.serving_commands import ServingSettings

    by_command = {info.name or info.callback.__name__: {d.parameter for d in derived_options(info.callback)}
                  for info in swarm_app.registered_commands if info.callback is not None}
    assert by_command["serve-annotation"] == by_command["up"] == set(ServingSettings.model_fields)


def test_defaults_that_disagreed_follow_the_config(swarm_app: typer.Typer) -> None:
    from swarm.trainer.experiments.fusion import FusionExperimentConfig
    from swarm.trainer.training.train import TrainConfig

    params = _click_params(swarm_app)
    assert params["fusion-report"]["pretrain_steps"].default == field_default(FusionExperimentConfig, "pretrain_steps")
    assert params["train"]["steps"].default == field_default(TrainConfig, "steps")


class Toy(BaseModel):
    """A config with what the derivation reads."""

    data: Path = Field(description="Where.")
    steps: int = Field(7, ge=1, le=100, description="Steps.")
    share: float = Field(0.5, ge=0, lt=1)
    names: list[str] | None = Field(None, description="A name (repeat).")
    fast: bool = Field(True, description="Go fast.")


def _toy_app(config: type[Toy], seen: list[Toy]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @config_options("cfg", config, flags={"data": Flag(default=Path("here")), "names": Flag("--name")})
    def run(cfg: Toy, verbose: bool = typer.Option(False)) -> None:
        seen.append(cfg)

    @app.command()
    def other() -> None:  # two commands, so `run` is a subcommand
        pass

    return app


def test_a_config_default_change_shows_in_help() -> None:
    class Longer(Toy):
        steps: int = Field(9, ge=1, le=100, description="Steps.")

    runner = CliRunner()
    for config, default in ((Toy, 7), (Longer, 9)):
        result = runner.invoke(_toy_app(config, []), ["run", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
        line = next(line for line in result.output.splitlines() if "--steps" in line)
        assert "Steps." in line and f"[default: {default}]" in line and "1<=x<=100" in line


def test_the_command_receives_the_config_built_from_its_options() -> None:
    seen: list[Toy] = []
    app = _toy_app(Toy, seen)
    runner = CliRunner()
    assert runner.invoke(app, ["run"]).exit_code == 0
    assert seen[-1] == Toy(data=Path("here"))  # a repeatable option given nothing: the field's default (None)
    result = runner.invoke(app, ["run", "--data", "d", "--steps", "3", "--name", "a", "--name", "b", "--no-fast"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == Toy(data=Path("d"), steps=3, names=["a", "b"], fast=False)
    assert runner.invoke(app, ["run", "--steps", "0"]).exit_code == 2  # ge=1: Typer's bound
    refused = runner.invoke(app, ["run", "--share", "1"])  # lt=1: checked when the config is built
    assert refused.exit_code == 2 and "--share" in refused.output


def test_misuse_is_refused_when_the_command_is_defined() -> None:
    def command(cfg: Toy, steps: int = 1) -> None:
        pass

    with pytest.raises(TypeError, match="steps"):  # the option would come twice
        config_options("cfg", Toy, flags={"data": Flag(default=Path("x"))})(command)
    with pytest.raises(TypeError, match="default"):  # a second default for a field that has one
        config_options("cfg", Toy, ("steps",), flags={"steps": Flag(default=3)})(command)
    with pytest.raises(TypeError, match="no field"):
        config_options("cfg", Toy, ("nope",))
    with pytest.raises(TypeError, match="not exposed"):
        config_options("cfg", Toy, ("steps",), flags={"fast": Flag("--quick")})
    with pytest.raises(TypeError, match="annotate"):
        config_options("cfg", ReleaseConfig, ("steps",))(command)


def test_release_builds_its_config_from_the_derived_options(swarm_app: typer.Typer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import swarm.trainer.release as release

    built: list[ReleaseConfig] = []

    def fake_build(cfg: ReleaseConfig) -> dict:
        built.append(cfg)
        return {k: None for k in ("primary", "policy", "specialists", "tables", "columns", "held_out", "seconds")}

    monkeypatch.setattr(release, "build_release", fake_build)
    monkeypatch.delenv("SWARM_SPECIALIST_ENDPOINTS", raising=False)
    runner = CliRunner()
    assert runner.invoke(swarm_app, ["release", "--device", "cpu"]).exit_code == 0
    assert built[-1] == ReleaseConfig(data=DEFAULT_DATA, device="cpu")
    result = runner.invoke(swarm_app, ["release", "--data", "d", "--split", "a", "--specialist-split", "b",
                                       "--fusion", "concat_project", "--max-specialists", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert built[-1] == ReleaseConfig(data=Path("d"), splits=["a"], specialist_splits=["b"], fusion="concat_project",
                                      max_specialists=2, device="cpu")
    assert type(built[-1].fusion) is str
    refused = runner.invoke(swarm_app, ["release", "--fusion-share", "1", "--device", "cpu"])
    assert refused.exit_code == 2 and "--fusion-share" in refused.output


def test_config_args_builds_with_what_the_command_adds() -> None:
    args = ConfigArgs(Toy, {"steps": 2, "fast": False}, {"steps": "--steps", "fast": "--fast"})
    assert args.build(data=Path("x"), fast=True) == Toy(data=Path("x"), steps=2, fast=True)
