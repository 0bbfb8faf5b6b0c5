"""CRDs are generated from the models, checked in, and reject bad custom resources with readable messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from swarm.operator import crdgen, status
from swarm.operator.models import ConditionReason, ConditionType, SpecialistPoolSpec, SwarmJobSpec
from swarm.testing.emulator import job_body, pool_body

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(30)


def test_checked_in_crds_are_current(tmp_path: Path) -> None:
    written = crdgen.write_all(tmp_path)
    for path in written:
        checked_in = ROOT / "crds" / path.name
        assert checked_in.exists(), f"{checked_in} missing: run `make crds`"
        assert checked_in.read_text() == path.read_text(), f"{checked_in} is stale: run `make crds`"


def test_crds_are_structural_with_status_and_printer_columns() -> None:
    for info in crdgen.KINDS:
        version = crdgen.crd_for(info)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        schema = version["schema"]["openAPIV3Schema"]
        text = yaml.safe_dump(schema)
        assert "$ref" not in text and "title" not in text and "null" not in text
        assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}
    job_columns = {
        c["name"] for c in crdgen.crd_for(crdgen.KINDS[1])["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert job_columns == {"Phase", "Mode", "Specialists", "F1", "Age"}


def test_samples_and_fixtures_validate() -> None:
    for path in sorted((ROOT / "manifests" / "samples").glob("*.yaml")):
        assert crdgen.validate_resource(yaml.safe_load(path.read_text())) == [], path
    assert crdgen.validate_resource(pool_body()) == []
    assert crdgen.validate_resource(job_body()) == []


def test_sample_pool_serves_the_project_domains_from_local_paths() -> None:
    domains = yaml.safe_load((ROOT / "model_server" / "domains.yaml").read_text())
    pool = yaml.safe_load((ROOT / "manifests" / "samples" / "specialistpool.yaml").read_text())
    specialists = SpecialistPoolSpec.model_validate(pool["spec"]).specialists
    assert {s.name for s in specialists} == set(domains)  # all nine
    for s in specialists:  # nothing is downloaded at run time: paths on the /models volume
        assert s.model.startswith("/models/") and "://" not in s.model, s.model
    job = yaml.safe_load((ROOT / "manifests" / "samples" / "swarmjob.yaml").read_text())
    assert set(SwarmJobSpec.model_validate(job["spec"]).specialists) <= set(domains)


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return body


_DELETE = object()
ADAPT_JOB = job_body(mode="adapt", specialists=("a", "b"), domain="commerce")
ADAPT_MESSAGE = "mode adapt needs a domain and at least two specialists (the experts)"
CHECKPOINT_MESSAGE = (
    "checkpoint (the path of a trained primary directory) is required when mode is evaluate, annotate or parl"
)
BAD = [
    (pool_body(), "spec.specialists.0.dtype", "fp8", "spec.specialists[0].dtype: 'fp8' is not one of"),
    (pool_body(), "spec.specialists.0.params", 0, "spec.specialists[0].params: 0 is less than the minimum of 1"),
    (pool_body(), "spec.specialists.0.name", "Bad_Name", "spec.specialists[0].name: 'Bad_Name' does not match"),
    (pool_body(), "spec.specialists.0.model", _DELETE, "spec.specialists[0]: 'model' is a required property"),
    (pool_body(), "spec.specialists", [], "spec.specialists: [] should be non-empty"),
    (pool_body(), "spec.idleTimeoutSeconds", -5, "spec.idleTimeoutSeconds: -5 is less than the minimum of 0"),
    (pool_body(), "spec.memoryReservePerGpu", "1Gi", "spec.memoryReservePerGpu: '1Gi' is not of type 'integer'"),
    (pool_body(), "spec.warmSet", ["a"], "spec: Additional properties are not allowed ('warmSet' was unexpected)"),
    (job_body(), "spec.mode", "serve",
     "spec.mode: 'serve' is not one of ['train', 'evaluate', 'annotate', 'adapt', 'parl']"),
    (job_body(), "spec.mode", "adapt", f"spec: {ADAPT_MESSAGE}"),  # no domain, one specialist
    (ADAPT_JOB, "spec.domain", _DELETE, f"spec: {ADAPT_MESSAGE}"),
    (ADAPT_JOB, "spec.domain", "Commerce", "spec.domain: 'Commerce' does not"),
    (job_body(), "spec.mode", "evaluate", f"spec: {CHECKPOINT_MESSAGE}"),
    (job_body(), "spec.mode", "annotate", f"spec: {CHECKPOINT_MESSAGE}"),
    (job_body(), "spec.mode", "parl", f"spec: {CHECKPOINT_MESSAGE}"),
    (job_body(), "spec.parl", {"iterations": 0}, "spec.parl.iterations: 0 is less than the minimum of 1"),
    (job_body(), "spec.parl", {"split": "../x"}, "spec.parl.split: '../x' does not match"),
    (job_body(mode="evaluate"), "spec.checkpoint", "", "spec.checkpoint: '' should be non-empty"),
    (job_body(specialists=("a", "b", "c", "d", "e")), "spec.maxSpecialists", 4, "spec: more specialists requested"),
    (job_body(), "spec.fusion", "sum", "spec.fusion: 'sum' is not one of"),
    (job_body(), "spec.maxSpecialists", -1, "spec.maxSpecialists: -1 is less than the minimum of 0"),
    (job_body(), "spec.gpuMemoryBytes", 1048575, "spec.gpuMemoryBytes: 1048575 is less than the minimum of 1048576"),
    (job_body(), "spec.gpuMemoryBytes", "6Gi", "spec.gpuMemoryBytes: '6Gi' is not of type 'integer'"),
    (job_body(), "spec.poolRef", _DELETE, "spec: 'poolRef' is a required property"),
    (job_body(), "spec.parl", {"lambda1": -0.5}, "spec.parl.lambda1: -0.5 is less than the minimum of 0"),
    (job_body(), "spec.output", {"subPath": "x"}, "spec.output: 'claimName' is a required property"),
    (job_body(), "spec.output", {"claimName": "Runs_1"}, "spec.output.claimName: 'Runs_1' does not match"),
    (job_body(), "spec.output", {"claimName": "runs", "subPath": "../other"}, "spec.output.subPath: '../other'"),
    (job_body(), "spec.output", {"claimName": "runs", "subPath": "/abs"}, "spec.output.subPath: '/abs' does not"),
]


@pytest.mark.parametrize(("body", "path", "value", "message"), BAD, ids=[b[1] + "=" + repr(b[2]) for b in BAD])
def test_bad_resources_are_rejected_naming_the_field(body: dict[str, Any], path: str, value: Any, message: str) -> None:
    errors = crdgen.validate_resource(_with(body, path, value))
    assert any(e.startswith(message) for e in errors), errors


def test_specialist_needs_a_size() -> None:
    body = _with(pool_body(), "spec.specialists.0.params", _DELETE)
    assert crdgen.validate_resource(body) == [
        "spec.specialists[0]: {'name': 'a', 'domain': 'a labels', 'model': "
        "'/models/specialists', 'dtype': 'bfloat16'} is not valid under any of the "
        "given schemas"
    ]
    with pytest.raises(ValidationError, match="set params or residentBytes"):
        SpecialistPoolSpec.model_validate(body["spec"])


def test_cross_field_rules_in_models_and_cel() -> None:
    with pytest.raises(ValidationError, match="warm names not among specialists: zz"):
        SpecialistPoolSpec.model_validate(pool_body(warm=("zz",))["spec"])
    with pytest.raises(ValidationError, match="duplicate specialist names: a"):
        SpecialistPoolSpec.model_validate(pool_body(names=("a", "a"))["spec"])
    with pytest.raises(ValidationError, match="3 specialists requested but maxSpecialists is 2"):
        SwarmJobSpec.model_validate(job_body(specialists=("a", "b", "c"), maxSpecialists=2)["spec"])
    with pytest.raises(ValidationError, match="checkpoint .* is required when mode is evaluate, annotate or parl"):
        SwarmJobSpec.model_validate(job_body(mode="annotate")["spec"])
    assert SwarmJobSpec.model_validate(job_body(mode="evaluate", checkpoint="/models/primary")["spec"]).checkpoint
    pool_spec = crdgen.crd_for(crdgen.KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert "self.warm.all" in pool_spec["spec"]["x-kubernetes-validations"][0]["rule"]
    job_spec = crdgen.crd_for(crdgen.KINDS[1])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert job_spec["spec"]["x-kubernetes-validations"][1] == {
        "rule": "!(self.mode in ['evaluate', 'annotate', 'parl']) || has(self.checkpoint)",
        "message": CHECKPOINT_MESSAGE,
    }
    assert job_spec["spec"]["properties"]["mode"]["enum"] == ["train", "evaluate", "annotate", "adapt", "parl"]
    with pytest.raises(ValidationError, match="mode adapt needs a domain .* got domain None and 2 specialists"):
        SwarmJobSpec.model_validate(job_body(mode="adapt", specialists=("a", "b"))["spec"])
    adapt = job_body(mode="adapt", specialists=("a", "b"), domain="commerce")
    assert crdgen.validate_resource(adapt) == [] and SwarmJobSpec.model_validate(adapt["spec"]).domain == "commerce"
    # The CEL rules' Python twins (used by validate_resource) see the API server's defaults: maxSpecialists 4.
    assert crdgen.validate_resource(job_body(specialists=("a", "b", "c", "d"))) == []
    assert crdgen.validate_resource(job_body(specialists=("a", "b", "c", "d", "e"))) == [
        "spec: more specialists requested than maxSpecialists"
    ]
    assert crdgen.validate_resource(pool_body(warm=("zz",))) == [
        "spec: every name in warm must be one of the specialists"
    ]
    for mode in ("evaluate", "annotate"):
        assert crdgen.validate_resource(job_body(mode=mode, checkpoint="/models/primary")) == []


def test_defaults_match_the_models() -> None:
    spec = crdgen.crd_for(crdgen.KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    parsed = SpecialistPoolSpec.model_validate(pool_body()["spec"])
    assert (
        spec["properties"]["nodeSelector"]["default"]
        == parsed.node_selector
        == {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"}
    )
    assert spec["properties"]["memoryReservePerGpu"]["default"] == parsed.memory_reserve_per_gpu == 1 << 30


def test_wrong_kind_or_version() -> None:
    assert crdgen.validate_resource({"kind": "Pod"})[0].startswith("kind: 'Pod' is not one of")
    body = {**pool_body(), "apiVersion": "swarm.ai/v2"}
    assert crdgen.validate_resource(body) == ["apiVersion: 'swarm.ai/v2' is not served by this CRD"]


def _schema(kind_index: int) -> dict[str, Any]:
    return crdgen.crd_for(crdgen.KINDS[kind_index])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_lists_are_list_maps_and_sets() -> None:
    pool, job = _schema(0)["properties"], _schema(1)["properties"]
    specialists = pool["spec"]["properties"]["specialists"]
    assert specialists["x-kubernetes-list-type"] == "map" and specialists["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in specialists["items"]["required"]  # the API server requires map keys to be required
    assert pool["spec"]["properties"]["warm"]["x-kubernetes-list-type"] == "set"
    assert job["spec"]["properties"]["specialists"]["x-kubernetes-list-type"] == "set"
    for schema in (pool, job):
        conditions = schema["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert item["required"] == ["type", "status", "reason", "message", "lastTransitionTime"]
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert item["properties"]["reason"]["pattern"] == "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
        assert item["properties"]["reason"]["maxLength"] == 1024
        assert item["properties"]["message"]["maxLength"] == 32768
        assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
        assert item["properties"]["observedGeneration"] == {"format": "int64", "minimum": 0, "type": "integer"}


def test_duplicates_are_rejected_as_the_api_server_does() -> None:
    assert crdgen.validate_resource(pool_body(names=("a", "b", "a"), warm=())) == [
        'spec.specialists[2]: Duplicate value: map[string]interface {}{"name":"a"}'
    ]
    assert crdgen.validate_resource(pool_body(warm=("a", "a"))) == ['spec.warm[1]: Duplicate value: "a"']
    assert crdgen.validate_resource(job_body(specialists=("b", "c", "b"))) == [
        'spec.specialists[2]: Duplicate value: "b"'
    ]
    with pytest.raises(ValidationError, match="duplicate names in warm: a"):
        SpecialistPoolSpec.model_validate(pool_body(warm=("a", "a"))["spec"])
    with pytest.raises(ValidationError, match="duplicate names in specialists: b"):
        SwarmJobSpec.model_validate(job_body(specialists=("b", "b"))["spec"])


def test_pool_status_rows_carry_placement_and_readiness() -> None:
    """A specialist's status row: the node and GPU index it is placed on, whether its Deployment reports it ready,
    and why not (the scheduler's message)."""
    placed = {
        "name": "a",
        "state": "Warm",
        "replicas": 1,
        "residentBytes": 1 << 30,
        "node": "gpu-1",
        "gpu": 0,
        "ready": False,
        "message": "Unschedulable: 0/1 nodes are available: 1 Insufficient swarm.ai/gpu-memory-mib.",
    }
    cold = {"name": "b", "state": "Cold", "replicas": 0, "residentBytes": 1 << 30, "ready": False}
    assert crdgen.validate_resource({**pool_body(), "status": {"specialists": [placed, cold]}}) == []
    errors = crdgen.validate_resource({**pool_body(), "status": {"specialists": [{**placed, "gpu": -1}]}})
    assert errors and all(e.startswith("status.specialists[0].gpu") for e in errors), errors
    errors = crdgen.validate_resource({**pool_body(), "status": {"specialists": [{**placed, "ready": "yes"}]}})
    assert errors and all(e.startswith("status.specialists[0].ready") for e in errors), errors
    assert SwarmJobSpec.model_validate(job_body()["spec"]).gpu_memory_bytes == 6 * 1024**3


GOOD_CONDITION = {
    "type": "Ready",
    "status": "True",
    "reason": "Reconciled",
    "message": "",
    "lastTransitionTime": "2025-01-01T00:00:00Z",
    "observedGeneration": 1,
}
BAD_CONDITIONS = [
    ({k: v for k, v in GOOD_CONDITION.items() if k != "lastTransitionTime"}, "'lastTransitionTime' is a required"),
    ({k: v for k, v in GOOD_CONDITION.items() if k != "reason"}, "'reason' is a required property"),
    ({k: v for k, v in GOOD_CONDITION.items() if k != "message"}, "'message' is a required property"),
    ({**GOOD_CONDITION, "status": "Maybe"}, "'Maybe' is not one of"),
    ({**GOOD_CONDITION, "reason": ""}, "'' should be non-empty"),
    ({**GOOD_CONDITION, "reason": "not ok"}, "'not ok' does not match"),
    ({**GOOD_CONDITION, "reason": "Ok_"}, None),
    ({**GOOD_CONDITION, "lastTransitionTime": "yesterday"}, "'yesterday' is not a 'date-time'"),
    ({**GOOD_CONDITION, "observedGeneration": -1}, "-1 is less than the minimum of 0"),
    ({**GOOD_CONDITION, "message": "x" * 32769}, "is too long"),
]


@pytest.mark.parametrize(("cond", "message"), BAD_CONDITIONS, ids=[m or "valid" for _, m in BAD_CONDITIONS])
def test_conditions_have_the_metav1_shape(cond: dict[str, Any], message: str | None) -> None:
    for body in (pool_body(), job_body()):
        errors = crdgen.validate_resource({**body, "status": {"conditions": [cond]}})
        if message is None:
            assert errors == []
        else:
            assert errors and all(e.startswith("status.conditions[0]") for e in errors), errors
            assert any(message in e for e in errors), errors


def test_condition_types_are_unique_and_written_conditions_validate() -> None:
    twice = {**pool_body(), "status": {"conditions": [GOOD_CONDITION, {**GOOD_CONDITION, "status": "False"}]}}
    assert crdgen.validate_resource(twice) == [
        'status.conditions[1]: Duplicate value: map[string]interface {}{"type":"Ready"}'
    ]
    written = status.merge_conditions(
        [],
        [
            status.condition(ConditionType.Ready, True, ConditionReason.Reconciled),
            status.condition(ConditionType.BudgetExceeded, False, ConditionReason.WithinBudget, "x" * 40000),
        ],
        now=status.now_iso(),
        generation=None,
    )
    assert all("observedGeneration" not in c for c in written)  # optional: left out, never null
    assert len(written[0]["message"]) == 32768
    assert crdgen.validate_resource({**pool_body(), "status": {"conditions": written}}) == []


def _named(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], "name": name}}


LENGTH = "<root>: metadata.name must be at most 63 characters"
DNS = "<root>: metadata.name must be a DNS-1035 label"
DASHES = "<root>: metadata.name must not contain '--'"
NAMES = [
    (pool_body(), "p" * 63, []),
    (pool_body(), "p" * 64, [LENGTH]),
    (pool_body(), "x--y", [DASHES]),
    (pool_body(), "9pool", [DNS]),
    (pool_body(), "pool-", [DNS]),
    (pool_body(), "my.pool", [DNS]),
    (job_body(), "j" * 63, []),
    (job_body(), "j" * 64, [LENGTH]),
    (job_body(), "job--2", []),  # a job's objects are JOB-primary: "--" is harmless there
    (job_body(), "2job", [DNS]),
]


@pytest.mark.parametrize(("body", "name", "expected"), NAMES, ids=[f"{b['kind']}:{n}" for b, n, _ in NAMES])
def test_names_are_dns_labels_that_fit_label_values(body: dict[str, Any], name: str, expected: list[str]) -> None:
    errors = crdgen.validate_resource(_named(body, name))
    assert len(errors) == len(expected) and all(e.startswith(x) for e, x in zip(errors, expected, strict=True)), errors
    info = crdgen.KINDS[0] if body["kind"] == "SpecialistPool" else crdgen.KINDS[1]
    rules = _schema(crdgen.KINDS.index(info))["x-kubernetes-validations"]
    assert [r["rule"] for r in rules if "metadata.name" in r["rule"]][0] == "size(self.metadata.name) <= 63"


def test_double_dashes_are_refused_in_specialist_and_pool_references() -> None:
    assert crdgen.validate_resource(pool_body(names=("a", "y--z"), warm=()))[0].startswith(
        "spec.specialists[1].name: 'y--z' does not match"
    )
    assert crdgen.validate_resource(job_body(pool="x--y"))[0].startswith("spec.poolRef: 'x--y' does not match")
    assert crdgen.validate_resource(job_body(pool="p" * 63)) == []  # any valid pool name can be referenced
    with pytest.raises(ValidationError, match="pattern"):
        SpecialistPoolSpec.model_validate(pool_body(names=("y--z",), warm=())["spec"])


def test_operator_refuses_bad_names_the_api_server_let_in() -> None:
    from swarm.operator.job import parse_job
    from swarm.operator.pool import parse_pool

    spec, message = parse_pool(_named(pool_body(), "x--y"))
    assert spec is None and message.startswith("metadata.name must not contain '--'")
    spec, message = parse_job(_named(job_body(), "j" * 64))
    assert spec is None and message.startswith("metadata.name must be at most 63 characters")
    assert parse_pool(pool_body())[0] is not None and parse_job(job_body())[0] is not None


IMMUTABLE = "<root>: spec is immutable once the trainer pod exists: delete and re-create the SwarmJob"


def test_job_spec_is_immutable_once_its_pod_exists() -> None:
    rule = next(r for r in _schema(1)["x-kubernetes-validations"] if "oldSelf" in r["rule"])
    assert rule == {
        "rule": "!has(oldSelf.status) || !has(oldSelf.status.pods) || size(oldSelf.status.pods) == 0 "
        "|| self.spec == oldSelf.spec",
        "message": IMMUTABLE[len("<root>: "):],
    }
    running = {**job_body(), "status": {"pods": ["job-primary"], "phase": "Running"}}
    edited = _with(running, "spec.specialists", ["c"])
    assert crdgen.validate_resource(edited, old=running) == [IMMUTABLE]
    assert crdgen.validate_resource(edited) == []  # a create: transition rules do not run
    for before in (job_body(), {**job_body(), "status": {"phase": "Pending"}}, {**running, "status": {"pods": []}}):
        assert crdgen.validate_resource(_with(before, "spec.specialists", ["c"]), old=before) == []
    # A status write keeps the spec; so does an edit that only spells out a default (both sides are defaulted).
    finished = {**running, "status": {"pods": ["job-primary"], "phase": "Failed"}}
    assert crdgen.validate_resource(finished, old=running) == []
    assert crdgen.validate_resource(_with(running, "spec.maxSpecialists", 4), old=running) == []
    # The rules on metadata.name apply to updates as well.
    assert crdgen.validate_resource(_named(running, "j" * 64), old=running)[0].startswith(LENGTH)
