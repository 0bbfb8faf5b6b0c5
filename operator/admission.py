"""What the operator refuses of a SwarmJob before it gives the job a trainer pod (least privilege): extraArgs that
repeat or override a flag the operator sets on the trainer's command (builders.reserved_flags), and an output claim
that a pod template mounts (the served models, the data sets: never writable by a job) or that the job's
SpecialistPool does not list in `outputClaims`. Pure: job.py reads the pool and reports the refusal (SpecValid False,
the job Failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm.operator import builders
from swarm.operator.models import ConditionReason, SpecialistPoolSpec, SwarmJobSpec

Refusal = tuple[ConditionReason, str]


def flags_refusal(spec: SwarmJobSpec) -> Refusal | None:
    """extraArgs that set a flag the operator sets: each would override the operator's value."""
    reserved = builders.reserved_flags(spec)
    if not reserved:
        return None
    return (
        ConditionReason.ReservedFlag,
        f"extraArgs may not set {', '.join(reserved)}: the operator sets "
        f"{'it' if len(reserved) == 1 else 'them'} on the trainer's command",
    )


def mounted_claims(templates: Mapping[str, dict[str, Any]]) -> set[str]:
    """Claims any pod template mounts besides the work directory."""
    return set().union(*(builders.template_claims(t) for t in templates.values()))


def output_refusal(
    spec: SwarmJobSpec, pool: SpecialistPoolSpec | None, templates: Mapping[str, dict[str, Any]]
) -> Refusal | None:
    """An output claim the templates mount (whatever the pool allows), or one off its pool's `outputClaims`
    (`pool` None: not known yet, checked once it is)."""
    if spec.output is None:
        return None
    claim = spec.output.claim_name
    if claim in mounted_claims(templates):
        return (
            ConditionReason.OutputClaimNotAllowed,
            f"output claim {claim!r} is mounted by the pod templates (served models or data): a job never gets it "
            "writable",
        )
    if pool is not None and claim not in pool.output_claims:
        allowed = ", ".join(sorted(pool.output_claims)) or "none"
        return (
            ConditionReason.OutputClaimNotAllowed,
            f"output claim {claim!r} is not in the outputClaims of SpecialistPool {spec.pool_ref!r} (allowed: "
            f"{allowed}); add it there and re-create the job",
        )
    return None


def claim_admissible(
    refused: bool, output: str | None, pool: SpecialistPoolSpec, templates: Mapping[str, dict[str, Any]]
) -> bool:
    """Whether a pending job's claim (pool.Claim: `refused` by its spec alone, its `output` claim) may have its pool
    plan for it: what `refusal` lets through, seen from the pool."""
    if refused:
        return False
    return output is None or (output in pool.output_claims and output not in mounted_claims(templates))


def spec_refused(spec: dict[str, Any]) -> bool:
    """Whether the raw spec of a job (as the SwarmJob index sees it) is refused whatever its pool; an invalid spec
    is not (the reconcile fails it as InvalidSpec)."""
    try:
        parsed = SwarmJobSpec.model_validate(spec)
    except ValueError:
        return False
    return flags_refusal(parsed) is not None


def refusal(
    spec: SwarmJobSpec, pool: SpecialistPoolSpec | None, templates: Mapping[str, dict[str, Any]]
) -> Refusal | None:
    """Why the job may not have a trainer pod at all (None: nothing refused)."""
    return flags_refusal(spec) or output_refusal(spec, pool, templates)
