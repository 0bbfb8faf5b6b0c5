"""The operator and the CLI agree: the CRDs' enums are the CLI's choices, and every command line the operator puts
into a pod parses with the real `swarm` CLI (parsing only: nothing is executed)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer
import yaml
from typer.core import TyperGroup

from swarm.model_server import choices
from swarm.operator import budget, builders
from swarm.operator.models import DType, FusionMode, Mode, SpecialistPoolSpec, SwarmJobSpec
from swarm.testing.emulator import job_body, pool_body
from swarm.trainer.commands import cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------------------------- enums
def _crd_spec(kind: str) -> dict[str, Any]:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind:
            return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    raise AssertionError(f"no CRD for {kind} in crds/")


def test_crd_enums_are_the_clis_choices() -> None:
    from swarm.model_server.model.fusion import MODES  # imports torch: only here

    fusion = _crd_spec("SwarmJob")["properties"]["fusion"]
    dtype = _crd_spec("SpecialistPool")["properties"]["specialists"]["items"]["properties"]["dtype"]
    assert fusion["enum"] == list(choices.FUSION_MODES) == list(MODES) == [m.value for m in FusionMode]
    assert dtype["enum"] == list(choices.DTYPE_NAMES) == [d.value for d in DType]
    assert fusion["default"] in choices.FUSION_MODES and dtype["default"] in choices.DTYPE_NAMES
    assert set(budget.DTYPE_BYTES) == set(choices.DTYPE_NAMES)  # the budget knows every dtype's size


def test_max_specialists_default_is_the_shared_one() -> None:
    assert _crd_spec("SwarmJob")["properties"]["maxSpecialists"]["default"] == choices.DEFAULT_MAX_SPECIALISTS
    assert SwarmJobSpec.model_validate(job_body()["spec"]).max_specialists == choices.DEFAULT_MAX_SPECIALISTS


# ---------------------------------------------------------------------------------------------- command lines
@pytest.fixture(scope="module")
def swarm_cli() -> TyperGroup:
    """The `swarm` command group with every command registered, as `swarm.trainer.commands.cli.main` builds it (on a
    fresh Typer app, so the module's own app is left alone)."""
    app = typer.Typer(no_args_is_help=True)
    with mock.patch.object(cli, "app", app):
        cli._register_all()
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return group


def _parses(group: TyperGroup, command: list[str]) -> Any:
    """Parse a pod's command line (`swarm SUBCOMMAND ...`) with the real CLI: the subcommand's context."""
    executable, name, *args = command
    assert executable == "swarm", command
    assert name in group.commands, f"`swarm {name}` is not a command of the CLI"
    try:
        return group.commands[name].make_context("swarm", args)
    except typer.TyperException as exc:  # typer's (vendored) click usage errors
        pytest.fail(f"`{' '.join(command)}` does not parse: {exc}")


def _cpu_only(template: dict[str, Any]) -> dict[str, Any]:
    """A template without the nvidia RuntimeClass or a GPU request (a custom ConfigMap): its pods get
    `--device cpu`."""
    template = copy.deepcopy(template)
    template["spec"].pop("runtimeClassName", None)
    for kind in ("requests", "limits"):
        template["spec"]["containers"][0]["resources"].get(kind, {}).pop(builders.GPU_RESOURCE, None)
    return template


TEMPLATES = {"gpu": builders.default_templates()}
TEMPLATES["cpu"] = {name: _cpu_only(t) for name, t in TEMPLATES["gpu"].items()}
DEVICES = {"gpu": "cuda", "cpu": "cpu"}


def _pools() -> list[dict[str, Any]]:
    sample = yaml.safe_load((ROOT / "manifests" / "samples" / "specialistpool.yaml").read_text())
    sample["metadata"].setdefault("namespace", "swarm")
    return [pool_body(), sample]


def _jobs() -> list[dict[str, Any]]:
    """A job of every mode, and the samples."""
    jobs = [
        job_body("train", fusion="concat_project", maxSpecialists=2),
        job_body("evaluate", mode="evaluate", checkpoint="/models/primary/sotab"),
        job_body("annotate", mode="annotate", checkpoint="/models/primary/sotab"),
        job_body("adapt", mode="adapt", specialists=("a", "b"), domain="commerce"),
        job_body("parl", mode="parl", checkpoint="/models/primary/sotab", parl={"spawnBudget": 2}),
    ]
    for path in sorted((ROOT / "manifests" / "samples").glob("swarmjob*.yaml")):
        sample = yaml.safe_load(path.read_text())
        sample["metadata"].setdefault("namespace", "swarm")
        jobs.append(sample)
    assert {Mode(j["spec"]["mode"]) for j in jobs} == set(Mode), "a SwarmJob mode without a command line checked"
    return jobs


def _with_uid(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["uid"] = f"{body['metadata']['name']}-uid"
    return body


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_specialist_command_parses(swarm_cli: TyperGroup, kind: str) -> None:
    checked = 0
    for pool in map(_with_uid, _pools()):
        spec = SpecialistPoolSpec.model_validate(pool["spec"])
        for specialist in spec.specialists:
            deployment = builders.specialist_deployment(
                pool, specialist, 1, spec.node_selector, TEMPLATES[kind]["specialist"]
            )
            command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
            params = _parses(swarm_cli, command).params
            assert params["specialist"] == specialist.name and params["device"] == DEVICES[kind]
            assert str(params["dtype"]) == specialist.dtype and params["port"] == builders.SPECIALIST_PORT
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_trainer_command_parses(swarm_cli: TyperGroup, kind: str) -> None:
    for job in map(_with_uid, _jobs()):
        spec = SwarmJobSpec.model_validate(job["spec"])
        experts = {name: "/models/specialists" for name in spec.specialists} if spec.mode == Mode.adapt else None
        pod = builders.trainer_pod(job, spec, {}, TEMPLATES[kind]["trainer"], experts=experts)
        command = pod["spec"]["containers"][0]["command"]
        assert command[1] == builders.MODE_COMMANDS[Mode(spec.mode)]
        params = _parses(swarm_cli, command).params
        assert params["device"] == DEVICES[kind], command
        assert str(params["data"]) == spec.data
        if spec.mode == Mode.train:
            assert params["fusion"] == spec.fusion and params["max_specialists"] == spec.max_specialists
        elif spec.mode == Mode.adapt:
            assert params["domain"] == spec.domain and len(params["expert"]) == len(spec.specialists)
        elif spec.mode == Mode.parl:
            assert str(params["mode"]) == "parl" and str(params["checkpoint"]) == spec.checkpoint
            assert params["iterations"] == spec.parl.iterations and params["split"] == spec.parl.split
            assert params["anneal"] == pytest.approx(spec.parl.anneal_steps / spec.parl.iterations)
            assert str(params["policy_out"]) == builders.POLICY_DIR
        else:
            assert str(params["checkpoint"]) == spec.checkpoint


def test_an_unknown_option_would_be_caught(swarm_cli: TyperGroup) -> None:
    """The check above is not vacuous: a command line the CLI does not know fails to parse."""
    with pytest.raises(typer.TyperException, match="no-such-flag"):
        swarm_cli.commands["eval"].make_context("swarm", ["--data", "/d", "--checkpoint", "/c", "--no-such-flag"])
    with pytest.raises(typer.BadParameter):
        swarm_cli.commands["serve-specialist"].make_context("swarm", ["--specialist", "a", "--dtype", "fp8"])
