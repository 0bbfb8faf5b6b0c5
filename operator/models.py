"""Custom-resource models (SpecialistPool, SwarmJob): the single source of the CRD schemas and spec parsing.

The operator parses every spec through these models (so defaults and cross-field rules apply even where the API
server did not enforce them), and `crdgen` turns them into the checked-in CRD YAML.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from swarm.model_server.choices import (
    DEFAULT_MAX_SPECIALISTS,
    DTYPE_NAMES,
    FUSION_MODES,
    GROUP,
    PARL_ANNEAL,
    PARL_BETA_CALLS,
    PARL_BETA_SPAWN,
    PARL_BETA_STEPS,
    PARL_ITERATIONS,
    PARL_LAMBDA,
    PARL_MAX_DEEP,
    POOL_PLURAL,
    VERSION,
)
from swarm.model_server.choices import DEMAND_ANNOTATION as DEMAND_ANNOTATION  # re-exported: the operator reads it here

API_VERSION = f"{GROUP}/{VERSION}"
PREFIX = f"{GROUP}/"  # of the operator's labels, annotations and finalizer (swarm.ai/pool, swarm.ai/metrics, ...)

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
RTX_4090_PRODUCT = "NVIDIA-GeForce-RTX-4090"
GIB = 1024**3
MIB_BYTES = 1024**2

# No "--" inside: object names join pool and specialist with "--" (builders.specialist_object_name), so the first
# "--" splits them and no two pairs share a Deployment or Service.
DnsLabel = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
MAX_NAME = 63  # a label value (swarm.ai/pool, swarm.ai/job) and a DNS-1035 label
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
PoolName = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")]
# A PersistentVolumeClaim's name (a DNS-1123 subdomain).
ClaimName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
]
Bytes = Annotated[int, Field(ge=1, json_schema_extra={"format": "int64"})]
# A PriorityClass's name (a DNS-1123 subdomain, as scheduling.k8s.io/v1 validates it).
PriorityClassName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
]


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule: `rule` (CEL) is enforced by the API server through x-kubernetes-validations; `check` is
    the same rule in Python over the raw camelCase spec (defaults applied as the API server would), used by
    `crdgen.validate_resource` and the models' validators so all three report the same `message`."""

    rule: str
    message: str
    check: Callable[[dict[str, Any]], bool]

    def schema(self) -> JsonDict:
        return {"rule": self.rule, "message": self.message}


def cel_rules(model: type[BaseModel]) -> list[CelRule]:
    return list(getattr(model, "__cel_rules__", ()))


@dataclass(frozen=True)
class RootRule:
    """A rule on the whole object (x-kubernetes-validations at the CRD's root), where CEL sees `self.metadata.name`
    and, in a transition rule, `oldSelf`. `check(obj, old)` is its Python twin; `old` is None on create, where the
    API server skips rules that read oldSelf."""

    rule: str
    message: str
    check: Callable[[dict[str, Any], dict[str, Any] | None], bool]

    @property
    def transition(self) -> bool:
        return "oldSelf" in self.rule

    def schema(self) -> JsonDict:
        return {"rule": self.rule, "message": self.message}


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def name_rules(kind: str, role: str, *, no_double_dash: bool = False) -> tuple[RootRule, ...]:
    """metadata.name limits: at most 63 characters (it is a label value) and a DNS-1035 label (every object named
    after it then is one: longer derived names are cut with a hash by builders.dns_name)."""
    rules: tuple[RootRule, ...] = (
        RootRule(
            f"size(self.metadata.name) <= {MAX_NAME}",
            f"metadata.name must be at most {MAX_NAME} characters: a {kind}'s name is a label value ({role})",
            lambda obj, _old: len(_name(obj)) <= MAX_NAME,
        ),
        RootRule(
            f"self.metadata.name.matches('{DNS_1035}')",
            "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and "
            f"ending with a letter or digit): the names of a {kind}'s objects start with it",
            lambda obj, _old: re.fullmatch(DNS_1035, _name(obj)) is not None,
        ),
    )
    if no_double_dash:
        rules += (
            RootRule(
                "!self.metadata.name.contains('--')",
                f"metadata.name must not contain '--': it separates the {kind} from the specialist in object names",
                lambda obj, _old: "--" not in _name(obj),
            ),
        )
    return rules


def object_problems(rules: tuple[RootRule, ...], obj: dict[str, Any]) -> list[str]:
    """Messages of the root rules `obj` breaks (transition rules left out): what the operator refuses where an API
    server without the current CRD let the object in."""
    return [r.message for r in rules if not r.transition and not r.check(obj, None)]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True)


# The CLI's choices (swarm.model_server.choices), so the CRDs accept exactly what the commands do.
# mypy reads members only from a literal in the call (so members are looked up by name: DType["bfloat16"]).
DType = StrEnum("DType", {name: name for name in DTYPE_NAMES}, module=__name__)  # type: ignore[misc]
FusionMode = StrEnum("FusionMode", {name: name for name in FUSION_MODES}, module=__name__)  # type: ignore[misc]


class Mode(StrEnum):
    train = "train"
    evaluate = "evaluate"
    annotate = "annotate"
    adapt = "adapt"  # Model Swarms: the job's specialists are the experts, read from the pool's model paths
    parl = "parl"  # the orchestrator of the primary `checkpoint`, trained by PARL


class Phase(StrEnum):
    Pending = "Pending"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"


class SpecialistState(StrEnum):
    Warm = "Warm"  # in the warm set and admitted: always running
    Active = "Active"  # cold, scaled up because a job or the annotation service requested it (or still idle-kept)
    Cold = "Cold"  # scaled to zero
    OverBudget = "OverBudget"  # wanted (warm or requested) but does not fit the GPU memory budget


class ConditionType(StrEnum):
    """Every condition type the operator writes: pools (Ready, BudgetExceeded, DemandValid), jobs (the others)."""

    Ready = "Ready"  # pool: spec valid, capacity known, the warm set admitted
    BudgetExceeded = "BudgetExceeded"  # pool: some wanted specialist does not fit the GPU memory budget
    CapacityFresh = "CapacityFresh"  # pool: every node agent reading it plans with is recent (False: kept, stale)
    DemandValid = "DemandValid"  # pool: its swarm.ai/demand annotation parsed (False: entries ignored)
    SpecValid = "SpecValid"  # job
    PoolReady = "PoolReady"  # job: its SpecialistPool exists and is valid
    SpecialistsGranted = "SpecialistsGranted"  # job: its specialists (and trainer) are known and admitted, and kept
    SpecialistsReady = "SpecialistsReady"  # job: every specialist it was granted has a ready replica
    MetricsValid = "MetricsValid"  # job: the trainer pod's metrics annotation parsed
    Complete = "Complete"  # job: the trainer pod finished (True: Succeeded)
    TrainerPod = "TrainerPod"  # job: its trainer pod exists and is its own (owner reference with the job's UID)


class ConditionReason(StrEnum):
    """Every condition reason the operator writes."""

    InvalidSpec = "InvalidSpec"
    # job SpecValid False: refused before it gets a trainer pod (admission.py)
    ReservedFlag = "ReservedFlag"  # extraArgs repeat or override a flag the operator sets on the trainer's command
    OutputClaimNotAllowed = "OutputClaimNotAllowed"  # output.claimName off the pool's outputClaims, or a template's
    # pool Ready
    NoCapacity = "NoCapacity"
    WarmSetOverBudget = "WarmSetOverBudget"
    StaleReading = "StaleReading"  # pool CapacityFresh False: a node agent went quiet; its last reading is kept
    FreshReadings = "FreshReadings"
    WarmSetNotReady = "WarmSetNotReady"  # admitted, but not every warm specialist's pod is ready
    Reconciled = "Reconciled"
    # pool BudgetExceeded
    OverBudget = "OverBudget"
    WithinBudget = "WithinBudget"
    # job PoolReady
    PoolFound = "PoolFound"
    PoolNotFound = "PoolNotFound"
    PoolInvalid = "PoolInvalid"
    PoolDeleted = "PoolDeleted"  # job PoolReady False: its pool was deleted while the job ran
    # job SpecialistsGranted
    Granted = "Granted"
    UnknownSpecialist = "UnknownSpecialist"
    BudgetExceeded = "BudgetExceeded"
    SpecialistLost = "SpecialistLost"  # a running job's specialist was removed from its pool or scaled to zero
    # job SpecialistsReady
    AllReady = "AllReady"
    NotReady = "NotReady"  # the trainer pod waits for them (before it exists), or one stopped being ready
    # job MetricsValid, pool DemandValid
    Parsed = "Parsed"
    Ignored = "Ignored"
    # job TrainerPod
    Created = "Created"
    Retrying = "Retrying"  # a failed or lost trainer pod is being replaced (backoffLimit)
    PodDeleted = "PodDeleted"  # job Complete False: its trainer pod was deleted and no retry is left
    DeadlineExceeded = "DeadlineExceeded"  # job Complete False: activeDeadlineSeconds passed
    BackoffLimitExceeded = "BackoffLimitExceeded"  # job Complete False: the last allowed trainer pod failed
    ForeignPod = "ForeignPod"  # a pod of the trainer pod's name belongs to another object (an earlier same-named job)
    # job Complete: the trainer pod's terminal phase
    Succeeded = Phase.Succeeded.value
    Failed = Phase.Failed.value


# metav1.Condition's validation (k8s.io/apimachinery/pkg/apis/meta/v1/types.go), so `kubectl wait --for=condition`
# and generic tooling read our conditions as they read any controller's.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_MESSAGE_MAX = 32768


class Condition(_Model):
    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN, description="Ready, PoolReady, ...")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field(max_length=CONDITION_MESSAGE_MAX)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, ge=0, json_schema_extra={"format": "int64"})


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extra of a list whose items are unique by `keys` (the API server rejects duplicates; server-side apply
    merges by them)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}  # a list of unique scalars


def conditions_field() -> Any:
    """The `conditions` field of a status: a list-map keyed by type, as metav1 conditions are."""
    return Field(default=[], json_schema_extra=list_map("type"))


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


# ---------------------------------------------------------------------------------------------- SpecialistPool
class PoolSpecialist(_Model):
    """One frozen specialist model; its resident size is `resident_bytes` if given, else derived from params."""

    name: DnsLabel = Field(
        description="Specialist (domain) name, e.g. temporal, as in model_server/domains.yaml; unique within the "
        "pool; names the Deployment and Service and is passed as `swarm serve-specialist --specialist NAME`."
    )
    domain: str = Field(min_length=1, description="Human-readable description of the label domain.")
    model: str = Field(
        min_length=1,
        description="Local path (in the image or a mounted volume, e.g. /models/specialists) of a folder holding "
        "<name>/ specialist directories, or of one specialist directory; passed as --checkpoint-dir. Nothing is "
        "downloaded at run time.",
    )
    dtype: DType = Field(default=DType["bfloat16"], description="Weight dtype on the GPU.")
    params: int | None = Field(
        default=None, ge=1, description="Parameter count.", json_schema_extra={"format": "int64"}
    )
    resident_bytes: int | None = Field(
        default=None,
        ge=1,
        json_schema_extra={"format": "int64"},
        description="Measured resident GPU bytes; overrides the estimate.",
    )
    activation_bytes: int | None = Field(
        default=None,
        ge=0,
        json_schema_extra={"format": "int64"},
        description="Activation/state estimate; default from params.",
    )

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["params"]}, {"required": ["residentBytes"]}]})

    @model_validator(mode="after")
    def _size_known(self) -> PoolSpecialist:
        if self.params is None and self.resident_bytes is None:
            raise ValueError(f"specialist {self.name!r}: set params or residentBytes")
        return self


class FallbackCapacity(_Model):
    """Capacity assumed for a matching node whose agent reports no NVML reading (no GPU driver, no agent)."""

    gpus_per_node: int = Field(default=1, ge=1)
    memory_bytes_per_gpu: Bytes = Field(description="Declared total memory of each GPU, in bytes.")


class SpecialistPoolSpec(_Model):
    specialists: list[PoolSpecialist] = Field(min_length=1, max_length=64, json_schema_extra=list_map("name"))
    warm: list[DnsLabel] = Field(
        default=[], max_length=64, json_schema_extra=LIST_SET, description="Specialists kept running at all times."
    )
    node_selector: dict[str, str] = Field(
        default={GPU_PRODUCT_LABEL: RTX_4090_PRODUCT},
        min_length=1,
        description="Nodes whose GPUs count towards the budget (labels they all carry); it must select something: "
        "an empty selector would count every node, CPU nodes included.",
    )
    memory_reserve_per_gpu: int = Field(
        default=GIB,
        ge=0,
        json_schema_extra={"format": "int64"},
        description="Bytes per GPU never given to specialists.",
    )
    idle_timeout_seconds: int = Field(
        default=600,
        ge=0,
        description="A cold specialist scales back to zero this long after its last request.",
    )
    fallback_capacity: FallbackCapacity | None = None
    output_claims: list[ClaimName] = Field(
        default=[],
        max_length=64,
        json_schema_extra=LIST_SET,
        description="PersistentVolumeClaims (in the pool's namespace) that this pool's SwarmJobs may name as "
        "spec.output.claimName, which their trainer pods mount read-write; none by default (a job naming another "
        "fails with reason OutputClaimNotAllowed). A claim the pod templates mount (the served models, the data "
        "sets) is refused whatever this lists.",
    )
    priority_class_name: PriorityClassName | None = Field(
        default=None,
        description="PriorityClass (it must exist) of the pool's specialist pods, warm or not, e.g. one above the "
        "cluster's batch work so the scheduler preempts that rather than a warm specialist; unset: the pod "
        "template's, else the cluster default. A change restarts the specialists (a new pod template).",
    )
    pod_disruption_budgets: bool = Field(
        default=True,
        description="Give each scaled-up specialist that is warm or held by a running job, and each running job's "
        "trainer pod, a PodDisruptionBudget (minAvailable 1, owned by the pool), so a voluntary eviction (kubectl "
        "drain) never takes down its ready replica: a drain waits until the operator has moved a warm specialist "
        "off the cordoned node, and until the running jobs there have finished. false: no budgets (the pool's are "
        "deleted).",
    )

    __cel_rules__ = (
        CelRule(
            "self.warm.all(w, self.specialists.exists(s, s.name == w))",
            "every name in warm must be one of the specialists",
            lambda spec: all(
                any(s.get("name") == w for s in spec.get("specialists", [])) for w in spec.get("warm", [])
            ),
        ),
    )
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [r.schema() for r in __cel_rules__]})

    @model_validator(mode="after")
    def _names_consistent(self) -> SpecialistPoolSpec:
        names = [s.name for s in self.specialists]
        if duplicates := _duplicates(names):
            raise ValueError(f"duplicate specialist names: {', '.join(duplicates)}")
        if duplicates := _duplicates(self.warm):
            raise ValueError(f"duplicate names in warm: {', '.join(duplicates)}")
        if duplicates := _duplicates(self.output_claims):
            raise ValueError(f"duplicate names in outputClaims: {', '.join(duplicates)}")
        unknown = [w for w in self.warm if w not in names]
        if unknown:
            raise ValueError(f"warm names not among specialists: {', '.join(unknown)}")
        return self


class SpecialistStatus(_Model):
    name: str
    state: SpecialistState
    replicas: int = Field(ge=0)
    resident_bytes: int = Field(ge=0, json_schema_extra={"format": "int64"})
    last_requested: str | None = None
    requested_by: list[str] = Field(default=[])
    node: str | None = Field(default=None, description="Node of the GPU it is placed on (pinned there).")
    ready: bool = Field(default=False, description="Its Deployment reports a ready replica.")
    message: str = Field(default="", description="Why a scaled-up specialist is not ready (e.g. the scheduler's).")
    gpu: int | None = Field(default=None, ge=0, description="Index of that GPU on its node (NVIDIA_VISIBLE_DEVICES).")


class GpuUsage(_Model):
    node: str
    index: int = Field(ge=0)
    bytes: int = Field(ge=0, json_schema_extra={"format": "int64"})


class SpecialistPoolStatus(_Model):
    observed_generation: int | None = None
    spawn_budget: int = Field(default=0, ge=0, description="How many of the pool's specialists fit at once.")
    capacity_bytes: int = Field(
        default=0,
        ge=0,
        description="GPU memory this pool may use: totals minus its reserve minus what other pools hold.",
        json_schema_extra={"format": "int64"},
    )
    other_pools_bytes: int = Field(
        default=0,
        ge=0,
        description="GPU memory other pools' specialists hold on this pool's GPUs (not in capacityBytes).",
        json_schema_extra={"format": "int64"},
    )
    resident_bytes: int = Field(default=0, ge=0, json_schema_extra={"format": "int64"})
    gpu_usage: list[GpuUsage] = Field(
        default=[],
        description="Bytes this pool's admitted specialists and its admitted jobs' trainers hold per GPU (other pools "
        "budget around it).",
    )
    gpus: int = Field(default=0, ge=0)
    capacity_source: str = ""
    warm_count: int = Field(default=0, ge=0)
    active_count: int = Field(default=0, ge=0)
    specialists: list[SpecialistStatus] = Field(default=[])
    conditions: list[Condition] = conditions_field()


# ---------------------------------------------------------------------------------------------- SwarmJob
class ParlSettings(_Model):
    """The orchestrator's PARL training (mode parl: `swarm train --mode parl`, trainer/orchestration/parl.py)."""

    iterations: int = Field(default=PARL_ITERATIONS, ge=1, description="Policy-gradient iterations.")
    lambda1: float = Field(
        default=PARL_LAMBDA,
        ge=0,
        description="Initial weight of r_parallel (rewards instantiating specialists), annealed to 0.",
    )
    lambda2: float = Field(
        default=PARL_LAMBDA,
        ge=0,
        description="Initial weight of r_finish (rewards using what was spawned), annealed to 0.",
    )
    anneal_steps: int = Field(
        default=round(PARL_ANNEAL * PARL_ITERATIONS),
        ge=0,
        description="Iterations over which lambda1 and lambda2 fall to 0 (0: never annealed).",
    )
    beta_calls: float = Field(
        default=PARL_BETA_CALLS, ge=0, description="Price of a specialist pass on a column, in columns labelled right."
    )
    beta_steps: float = Field(
        default=PARL_BETA_STEPS, ge=0, description="Price of a critical step beyond the primary's."
    )
    beta_spawn: float = Field(
        default=PARL_BETA_SPAWN, ge=0, description="Price of spawning every specialist for a table (pro rata)."
    )
    spawn_budget: int = Field(
        default=0, ge=0, description="Most specialists one table may use; 0: all the primary fuses."
    )
    max_deep: int = Field(default=PARL_MAX_DEEP, ge=0, description="Most deep steps per column.")
    split: str = Field(
        default="validation",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Labelled split of `data` the policy learns from (one the primary did not train on).",
    )


_CHECKPOINT_MODES = ("evaluate", "annotate", "parl")
_ADAPT_MESSAGE = "mode adapt needs a domain and at least two specialists (the experts)"


class OutputVolume(_Model):
    """A PersistentVolumeClaim (it must exist in the job's namespace) for everything the trainer pod writes."""

    claim_name: ClaimName = Field(
        description="Name of the PersistentVolumeClaim (ReadWriteOnce is enough: one trainer pod uses it at a time); "
        "it must be in the outputClaims of the job's SpecialistPool.",
    )
    sub_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        # relative, no `.` or `..` segments: the job stays inside its claim
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$",
        description="Directory in the claim for this job's files; default: the job's name.",
    )


class SwarmJobSpec(_Model):
    mode: Mode = Field(
        description="train: `swarm train`; evaluate: `swarm eval`; annotate: `swarm annotate`; adapt: `swarm adapt` "
        "(Model Swarms over the weights of the job's specialists, which are read from disk, not scaled up); parl: "
        "`swarm train --mode parl` (the orchestrator of the primary `checkpoint`; the policy goes to "
        "run/orchestrator)."
    )
    pool_ref: PoolName = Field(description="Name of a SpecialistPool in the job's namespace.")
    data: str = Field(min_length=1, description="Local data path in the trainer pod (SOTAB v2 CTA layout).")
    checkpoint: str | None = Field(
        default=None,
        min_length=1,
        description="Path (e.g. under /models) of a trained primary directory; required when mode is evaluate, "
        "annotate or parl, not used by train.",
    )
    fusion: FusionMode = Field(
        default=FusionMode["weighted_sum"],
        description="Fusion mode of the released primary (`swarm release --fusion`); train only.",
    )
    parl: ParlSettings = Field(default=ParlSettings(), description="PARL settings of mode parl; not used otherwise.")
    max_specialists: int = Field(
        default=DEFAULT_MAX_SPECIALISTS,
        ge=0,
        description="Most specialists the primary consults (`swarm release --max-specialists`; 0: the primary alone).",
    )
    specialists: list[DnsLabel] = Field(
        default=[],
        max_length=64,
        json_schema_extra=LIST_SET,
        description="Specialists to scale up for this job (besides warm ones).",
    )
    extra_args: list[str] = Field(
        default=[],
        description="Appended to the trainer command; none may repeat or override a flag the operator sets there "
        "(--data, --run-dir, --device, ...): such a job fails with reason ReservedFlag.",
    )
    gpu_memory_bytes: int = Field(
        default=6 * GIB,
        ge=MIB_BYTES,
        json_schema_extra={"format": "int64"},
        description="GPU memory the trainer pod requests (in whole MiB of the nodes' swarm.ai/gpu-memory-mib "
        "resource), so the scheduler counts the primary beside the specialists; ignored by a CPU pod template.",
    )
    domain: DnsLabel | None = Field(
        default=None,
        description="Target domain (model_server/domains.yaml) of mode adapt; required there, not used otherwise.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        json_schema_extra={"format": "int64"},
        description="Like a Job's: seconds from the first trainer pod's start after which a job still running is "
        "stopped (pod deleted) and marked Failed with reason DeadlineExceeded; also set on the pod.",
    )
    backoff_limit: int = Field(
        default=0,
        ge=0,
        le=20,
        description="Like a Job's: how many times a failed or lost trainer pod is replaced before the job is "
        "Failed (0: never; a training run rarely fails for a reason that a rerun fixes).",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        json_schema_extra={"format": "int64"},
        description="Like a Job's: the finished SwarmJob (and, through its owner reference, its pod) is deleted "
        "this long after it Succeeded or Failed; unset: kept.",
    )
    output: OutputVolume | None = Field(
        default=None,
        description="Where the trainer pod writes: run/ (checkpoints; for train, the trained primary in run/model), "
        "metrics.json, predictions.csv, summary.json. A train job re-created with the same output resumes from its "
        "last checkpoint. Without it the pod writes to an emptyDir: the metrics still reach the status, the files "
        "go with the pod.",
    )
    priority_class_name: PriorityClassName | None = Field(
        default=None,
        description="PriorityClass (it must exist) of the trainer pod; unset: the pod template's, else the cluster "
        "default.",
    )

    __cel_rules__ = (
        CelRule(
            "size(self.specialists) <= self.maxSpecialists",
            "more specialists requested than maxSpecialists",
            lambda spec: len(spec.get("specialists", [])) <= spec.get("maxSpecialists", DEFAULT_MAX_SPECIALISTS),
        ),
        CelRule(
            "!(self.mode in ['evaluate', 'annotate', 'parl']) || has(self.checkpoint)",
            "checkpoint (the path of a trained primary directory) is required when mode is evaluate, annotate or parl",
            lambda spec: spec.get("mode") not in _CHECKPOINT_MODES or "checkpoint" in spec,
        ),
        CelRule(
            "self.mode != 'adapt' || (has(self.domain) && size(self.specialists) >= 2)",
            _ADAPT_MESSAGE,
            lambda spec: spec.get("mode") != "adapt" or ("domain" in spec and len(spec.get("specialists", [])) >= 2),
        ),
    )
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [r.schema() for r in __cel_rules__]})

    @model_validator(mode="after")
    def _cross_field(self) -> SwarmJobSpec:
        if duplicates := _duplicates(self.specialists):
            raise ValueError(f"duplicate names in specialists: {', '.join(duplicates)}")
        if len(self.specialists) > self.max_specialists:
            raise ValueError(
                f"{len(self.specialists)} specialists requested but maxSpecialists is {self.max_specialists}"
            )
        if self.mode == Mode.adapt and (not self.domain or len(self.specialists) < 2):
            raise ValueError(f"{_ADAPT_MESSAGE}; got domain {self.domain!r} and {len(self.specialists)} specialists")
        if self.mode in _CHECKPOINT_MODES and not self.checkpoint:
            raise ValueError(
                "checkpoint (the path of a trained primary directory) is required when mode is "
                f"evaluate, annotate or parl; mode is {self.mode}"
            )
        return self


class JobMetrics(_Model):
    # inf / NaN cannot be written as JSON: the API server would refuse the whole status.
    model_config = ConfigDict(allow_inf_nan=False)

    micro_f1: float | None = Field(default=None, ge=0, le=1)
    macro_f1: float | None = Field(default=None, ge=0, le=1)
    throughput: float | None = Field(default=None, ge=0, description="Columns per second.")
    critical_steps: int | None = Field(default=None, ge=0)


class SwarmJobStatus(_Model):
    observed_generation: int | None = None
    phase: Phase = Phase.Pending
    message: str = ""
    pods: list[str] = Field(default=[])
    specialists: list[str] = Field(default=[], description="Specialists granted by the pool.")
    specialist_count: int = Field(default=0, ge=0)
    output: str = Field(
        default="", description="CLAIM/SUBPATH holding the trainer's files; empty when they live in an emptyDir."
    )
    metrics: JobMetrics = JobMetrics()
    start_time: str | None = Field(default=None, description="When the first trainer pod was created (RFC 3339).")
    completion_time: str | None = Field(default=None, description="When the job Succeeded or Failed (RFC 3339).")
    failed: int = Field(default=0, ge=0, description="Trainer pods that failed or were lost (see backoffLimit).")
    trainer_node: str | None = Field(default=None, description="Node of the GPU the trainer pod is pinned to.")
    trainer_gpu: int | None = Field(
        default=None, ge=0, description="Index of that GPU on its node (the trainer's NVIDIA_VISIBLE_DEVICES)."
    )
    conditions: list[Condition] = conditions_field()


class KindInfo(_Model):
    kind: str
    plural: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: list[dict[str, Any]]
    rules: tuple[RootRule, ...] = ()  # x-kubernetes-validations on the whole object


POOL = KindInfo(
    kind="SpecialistPool",
    plural=POOL_PLURAL,
    short_names=["spool"],
    spec=SpecialistPoolSpec,
    status=SpecialistPoolStatus,
    printer_columns=[
        {"name": "Budget", "type": "integer", "jsonPath": ".status.spawnBudget"},
        {"name": "Warm", "type": "integer", "jsonPath": ".status.warmCount"},
        {"name": "Active", "type": "integer", "jsonPath": ".status.activeCount"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": f'.status.conditions[?(@.type=="{ConditionType.Ready.value}")].status',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    rules=name_rules("SpecialistPool", "swarm.ai/pool", no_double_dash=True),
)


def _spec_unchanged_once_running(obj: dict[str, Any], old: dict[str, Any] | None) -> bool:
    return old is None or not ((old.get("status") or {}).get("pods")) or obj.get("spec") == old.get("spec")


# The trainer pod is built from the spec once; a later spec edit would change the job's claim and status but not
# the pod. Status writes (the status subresource) keep the spec as it is, so they always pass.
SPEC_IMMUTABLE = RootRule(
    "!has(oldSelf.status) || !has(oldSelf.status.pods) || size(oldSelf.status.pods) == 0 || self.spec == oldSelf.spec",
    "spec is immutable once the trainer pod exists: delete and re-create the SwarmJob",
    _spec_unchanged_once_running,
)
JOB = KindInfo(
    kind="SwarmJob",
    plural="swarmjobs",
    short_names=["sjob"],
    spec=SwarmJobSpec,
    status=SwarmJobStatus,
    printer_columns=[
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Specialists", "type": "integer", "jsonPath": ".status.specialistCount"},
        {
            "name": "F1",
            "type": "number",
            "jsonPath": ".status.metrics.microF1",
            "description": "micro-F1 reported by the trainer",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    rules=(*name_rules("SwarmJob", "swarm.ai/job"), SPEC_IMMUTABLE),
)
KINDS = (POOL, JOB)
