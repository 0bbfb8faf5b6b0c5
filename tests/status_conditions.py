"""Reading the conditions the operator writes to a custom resource's status (tests and the cluster tier)."""
from __future__ import annotations

from typing import Any

from swarm.operator.models import ConditionType


def find_condition(status: dict[str, Any] | None, type_: ConditionType) -> dict[str, Any]:
    """The condition of `type_` in a status (as written by `status.merge_conditions`), or {} when there is none."""
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type_), {})
