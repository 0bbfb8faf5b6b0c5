"""What the operator refuses of a job before it gets a trainer pod (operator/admission.py, issue #31 defect 6): the
pure checks, and job.py / pool.py acting on them against an in-memory API."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from fake_api import FakeApi
from status_conditions import find_condition

from swarm.operator import admission, builders, job, pool
from swarm.operator.kube import DEPLOYMENTS, EVENTS, JOBS, PODS, POOLS
from swarm.operator.models import ConditionReason, ConditionType, SpecialistPoolSpec, SwarmJobSpec
from swarm.operator.nodes import reading
from swarm.testing.emulator import gpu_node, job_body, pool_body

pytestmark = pytest.mark.timeout(30)
TEMPLATES = builders.default_templates()


def _spec(**extra: Any) -> SwarmJobSpec:
    return SwarmJobSpec.model_validate(job_body(**extra)["spec"])


def _job(**extra: Any) -> tuple[dict[str, Any], SwarmJobSpec]:
    body = job_body(**extra)
    body["metadata"]["uid"] = "uid-1"
    return body, SwarmJobSpec.model_validate(body["spec"])


def _pool(**extra: Any) -> SpecialistPoolSpec:
    return SpecialistPoolSpec.model_validate(pool_body(**extra)["spec"])


# ---------------------------------------------------------------------------------------------- extraArgs
@pytest.mark.parametrize(
    ("mode", "extra", "args", "reserved"),
    [
        ("train", {}, ["--run-dir", "/var/lib/swarm/other"], ["--run-dir"]),
        ("train", {}, ["--seed", "7", "--run-dir=/tmp/x"], ["--run-dir"]),
        ("train", {}, ["--device", "cpu", "--data", "/data/x", "--device=cuda"], ["--device", "--data"]),
        ("evaluate", {"checkpoint": "/models/p"}, ["--json", "/tmp/m.json"], ["--json"]),
        ("annotate", {"checkpoint": "/models/p"}, ["--out", "/tmp/p.csv", "--checkpoint", "/x"],
         ["--out", "--checkpoint"]),
        ("parl", {"checkpoint": "/models/p"}, ["--policy-out", "/x", "--iterations", "3"],
         ["--policy-out", "--iterations"]),
        ("adapt", {"domain": "commerce", "specialists": ("a", "b")}, ["--expert", "c=/x"], ["--expert"]),
    ],
)  # fmt: skip
def test_extra_args_may_not_set_the_operators_flags(
    mode: str, extra: dict[str, Any], args: list[str], reserved: list[str]
) -> None:
    spec = _spec(mode=mode, extraArgs=args, **extra)
    assert builders.reserved_flags(spec) == reserved
    refusal = admission.refusal(spec, None, TEMPLATES)
    assert refusal is not None and refusal[0] == ConditionReason.ReservedFlag
    assert all(flag in refusal[1] for flag in reserved), refusal
    with pytest.raises(ValueError, match="extraArgs set flags the operator sets"):
        builders.trainer_command(spec, dict.fromkeys(spec.specialists, "/models/x"))


@pytest.mark.parametrize(
    ("mode", "extra", "args"),
    [
        ("train", {}, ["--seed", "7", "--epochs", "2"]),
        ("train", {}, ["--", "--run-dir"]),  # after `--` nothing is an option
        ("evaluate", {"checkpoint": "/models/p"}, ["--run-dir", "/var/lib/swarm/run"]),  # the operator sets none
    ],
)
def test_other_extra_args_are_appended(mode: str, extra: dict[str, Any], args: list[str]) -> None:
    spec = _spec(mode=mode, extraArgs=args, **extra)
    assert builders.reserved_flags(spec) == [] and admission.refusal(spec, None, TEMPLATES) is None
    assert builders.trainer_command(spec)[-len(args) :] == args


# ---------------------------------------------------------------------------------------------- output claims
def test_an_output_claim_must_be_on_the_pools_allow_list() -> None:
    spec = _spec(output={"claimName": "swarm-runs"})
    assert _pool().output_claims == []  # none by default
    refusal = admission.output_refusal(spec, _pool(), TEMPLATES)
    assert refusal is not None and refusal[0] == ConditionReason.OutputClaimNotAllowed
    assert "'swarm-runs' is not in the outputClaims of SpecialistPool 'pool' (allowed: none)" in refusal[1]
    assert admission.output_refusal(spec, _pool(outputClaims=["swarm-runs"]), TEMPLATES) is None
    other = admission.output_refusal(spec, _pool(outputClaims=["team-a", "team-b"]), TEMPLATES)
    assert other is not None and "(allowed: team-a, team-b)" in other[1]
    assert admission.output_refusal(_spec(), _pool(), TEMPLATES) is None  # no output: an emptyDir
    assert admission.output_refusal(spec, None, TEMPLATES) is None  # the pool is not known yet


@pytest.mark.parametrize("claim", [builders.MODELS_CLAIM, builders.DATA_CLAIM])
def test_a_claim_the_templates_mount_is_never_an_output(claim: str) -> None:
    """The served models' claim (and the data sets') stays read-only whatever the pool lists."""
    assert admission.mounted_claims(TEMPLATES) == {builders.MODELS_CLAIM, builders.DATA_CLAIM}
    job, spec = _job(output={"claimName": claim})
    refusal = admission.output_refusal(spec, _pool(outputClaims=[claim]), TEMPLATES)
    assert refusal is not None and refusal[0] == ConditionReason.OutputClaimNotAllowed
    assert "mounted by the pod templates" in refusal[1]
    assert admission.refusal(spec, None, TEMPLATES) == refusal  # known without the pool
    with pytest.raises(ValueError, match="mounted by the trainer pod template"):
        builders.trainer_pod(job, spec, {}, TEMPLATES["trainer"])


def test_output_claims_are_claim_names_without_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate names in outputClaims: runs"):
        _pool(outputClaims=["runs", "runs"])
    with pytest.raises(ValueError, match="outputClaims"):
        _pool(outputClaims=["Runs_1"])


# ---------------------------------------------------------------------------------------------- job.reconcile
@pytest.mark.parametrize(
    ("pool_extra", "job_extra", "reason", "text"),
    [
        ({}, {"output": {"claimName": "swarm-runs"}}, ConditionReason.OutputClaimNotAllowed, "(allowed: none)"),
        ({"outputClaims": ["swarm-models"]}, {"output": {"claimName": "swarm-models"}},
         ConditionReason.OutputClaimNotAllowed, "mounted by the pod templates"),
        ({}, {"extraArgs": ["--run-dir", "/var/lib/swarm/x"]}, ConditionReason.ReservedFlag, "--run-dir"),
    ],
)  # fmt: skip
def test_a_refused_job_fails_before_its_pool_plans_for_it(
    pool_extra: dict[str, Any], job_extra: dict[str, Any], reason: ConditionReason, text: str
) -> None:
    api = FakeApi()
    api.put(POOLS, pool_body(**pool_extra))
    body = api.put(JOBS, job_body(**job_extra))
    nodes = [reading(gpu_node("gpu-1"))]
    claims = [job.claim_of(body)]
    outcome = asyncio.run(job.reconcile(api, "swarm", "job", nodes, claims, TEMPLATES))  # type: ignore[arg-type]
    assert outcome.phase == "Failed" and outcome.retry is None
    st = api.peek(JOBS, "swarm", "job")["status"]
    spec_valid = find_condition(st, ConditionType.SpecValid)
    assert (st["phase"], spec_valid["status"], spec_valid["reason"]) == ("Failed", "False", reason)
    assert text in spec_valid["message"] and st["message"] == spec_valid["message"] and st["completionTime"]
    assert api.peek(PODS, "swarm", "job-primary") is None
    assert not [o for (plural, _, _), o in api.objects.items() if plural == DEPLOYMENTS.plural]  # pool not planned
    events = [o for (plural, _, _), o in api.objects.items() if plural == EVENTS.plural]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", reason)]


def test_a_pool_plans_for_no_job_it_would_refuse() -> None:
    """The pool's own reconcile (the resync, another job's) may run before the refused job's: its claim scales
    nothing up. A job that is running keeps what it holds whatever its spec says."""
    api = FakeApi()
    api.put(POOLS, pool_body(outputClaims=["swarm-runs"]))
    nodes = [reading(gpu_node("gpu-1"))]
    bodies = {
        "other-claim": job_body("other-claim", specialists=("b",), output={"claimName": "team-x"}),
        "models": job_body("models", specialists=("b",), output={"claimName": builders.MODELS_CLAIM}),
        "flags": job_body("flags", specialists=("c",), extraArgs=["--device", "cpu"]),
    }
    claims = [job.claim_of(b) for b in bodies.values()]
    assert [(c.output, c.refused) for c in claims] == [("team-x", False), (builders.MODELS_CLAIM, False), (None, True)]
    result = asyncio.run(pool.reconcile(api, "swarm", "pool", nodes, claims, TEMPLATES))  # type: ignore[arg-type]
    assert result.admitted == {"a"} and not result.trainers  # the warm one alone
    allowed = job.claim_of(job_body("allowed", specialists=("b",), output={"claimName": "swarm-runs"}))
    running = replace(claims[2], running=True)
    result = asyncio.run(pool.reconcile(api, "swarm", "pool", nodes, [allowed, running], TEMPLATES))  # type: ignore[arg-type]
    assert result.admitted == {"a", "b", "c"} and set(result.trainers) == {"allowed", "flags"}
