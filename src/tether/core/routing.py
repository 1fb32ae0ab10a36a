"""The environment draw: which deployment a new run gets when an environment is split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """One weighted deployment an environment points at."""

    deployment_id: str
    """The deployment's id."""
    weight: int
    """Relative weight, > 0."""


def draw(targets: Sequence[Target], key: str) -> str:
    """Choose a deployment for a new run, by weight, sticky for a given key.

    Args:
        targets: the environment's targets (at least one, positive weights).
        key: a routing key (idempotency key, explicit routing key, or the run id); the same
            key always draws the same deployment for the same targets.

    Returns:
        The chosen deployment id.

    Raises:
        ValueError: when there is no target or a weight is not positive.
    """
    if not targets:
        raise ValueError("an environment needs at least one target")
    total = 0
    for target in targets:
        if target.weight <= 0:
            raise ValueError(f"weight of {target.deployment_id} must be positive")
        total += target.weight
    if len(targets) == 1:
        return targets[0].deployment_id
    point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % total
    for target in targets:
        if point < target.weight:
            return target.deployment_id
        point -= target.weight
    raise AssertionError("unreachable: point is below the total weight")
