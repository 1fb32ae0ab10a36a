"""Manifests: the frozen description of a deployment, its digest, identity and diff.

A manifest is a JSON object::

    {"app": "fraud", "python": "3.11", "tether": "0.1.0",
     "components": {"review": {"kind": "workflow", "description": ..., "input_schema": ...,
                               "output_schema": ..., "signals": {"approval": {...}}}, ...}}

Everything the LLM or a caller can see is in it; the digest covers all of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tether.core.journal import canonical_json


def manifest_digest(manifest: dict[str, Any]) -> str:
    """``sha256`` of the canonical JSON of ``manifest`` (64 hex digits)."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def deployment_id(bundle_digest: str, manifest_digest: str) -> str:
    """The content-derived deployment id: ``dep_`` and 12 hex digits.

    Identical content (the same bundle read as the same manifest) always yields the same id,
    so deploying it twice never creates a new version.
    """
    both = hashlib.sha256(f"{bundle_digest}:{manifest_digest}".encode()).hexdigest()
    return f"dep_{both[:12]}"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two manifests."""

    component: str
    """The component's name (or ``*`` for the app as a whole)."""
    change: str
    """``added``, ``removed``, ``kind changed``, ``signature changed``, ``description changed``,
    ``signals changed``, ``model changed``, ``instructions changed``, ``tools changed`` or
    ``runtime changed``."""
    detail: str
    """What a person reads, e.g. ``'…0 to 10…' → '…0 to 100…'``."""

    def to_json(self) -> dict[str, str]:
        """The API form."""
        return {"component": self.component, "change": self.change, "detail": self.detail}


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else canonical_json(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


_FIELDS: tuple[tuple[str, str], ...] = (
    ("input_schema", "signature changed"),
    ("output_schema", "signature changed"),
    ("description", "description changed"),
    ("signals", "signals changed"),
    ("instructions", "instructions changed"),
    ("model", "model changed"),
    ("tools", "tools changed"),
    ("retry", "retry policy changed"),
)


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Compare two manifests component by component.

    Args:
        old: the manifest of the older deployment.
        new: the manifest of the newer deployment.

    Returns:
        The changes, ordered by component name then field; empty when equivalent.
    """
    changes: list[Change] = []
    for key in ("python", "tether"):
        if old.get(key) != new.get(key):
            changes.append(Change("*", "runtime changed", f"{key} {old.get(key)} → {new.get(key)}"))
    old_components: dict[str, Any] = old.get("components", {})
    new_components: dict[str, Any] = new.get("components", {})
    for name in sorted(old_components.keys() | new_components.keys()):
        before, after = old_components.get(name), new_components.get(name)
        if before is None:
            assert after is not None
            changes.append(Change(name, "added", f"{after['kind']} {name}"))
            continue
        if after is None:
            changes.append(Change(name, "removed", f"{before['kind']} {name}"))
            continue
        if before.get("kind") != after.get("kind"):
            changes.append(Change(name, "kind changed", f"{before['kind']} → {after['kind']}"))
            continue
        for field_name, label in _FIELDS:
            if before.get(field_name) != after.get(field_name):
                changes.append(
                    Change(
                        name,
                        label,
                        f"{field_name}: {_short(before.get(field_name))!r} → {_short(after.get(field_name))!r}",
                    )
                )
    return changes
