"""Manifests: the frozen description of a deployment, its digest, identity and diff.

A manifest is a JSON object::

    {"app": "fraud", "python": "3.11", "tether": "0.1.0",
     "components": {"review": {"kind": "workflow", "description": ..., "input_schema": ...,
                               "output_schema": ..., "signals": {"approval": {...}},
                               "queries": {"progress": {"description", "input_schema",
                                                        "output_schema"}}}, ...}}

Everything the LLM or a caller can see is in it; the digest covers all of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tether.core.journal import canonical_json
from tether.core.manual import changed_fields, manual_fields


def manifest_digest(manifest: dict[str, Any]) -> str:
    """``sha256`` of the canonical JSON of ``manifest`` (64 hex digits)."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def deployment_id(*identity: str) -> str:
    """The content-derived deployment id: ``dep_`` and 12 hex digits.

    ``identity`` names everything that decides the deployment's behaviour, in a fixed order:
    the code (a bundle digest, or an endpoint's URL and code digest), the app reference
    (``module:attribute``), the manifest digest and the environment digest. Identical content
    always yields the same id, so deploying it twice never creates a new version; a change of
    any part — the same files read through another ``--app``, the same bundle on other
    libraries — is a new deployment.
    """
    both = hashlib.sha256(":".join(identity).encode()).hexdigest()
    return f"dep_{both[:12]}"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two manifests."""

    component: str
    """The component's name (or ``*`` for the app as a whole)."""
    change: str
    """``added``, ``removed``, ``kind changed``, ``signature changed``, ``description changed``,
    ``signals changed``, ``query NAME added|removed|signature changed|description changed``,
    ``model changed``, ``instructions changed``, ``tools changed``,
    ``runtime changed``, or for an agent of another framework the manual field that changed
    (``tool compute_risk_score description changed``, ``tool lookup added``, ...)."""
    detail: str
    """What a person reads, e.g. ``'…0 to 10…' → '…0 to 100…'``."""

    def to_json(self) -> dict[str, str]:
        """The API form."""
        return {"component": self.component, "change": self.change, "detail": self.detail}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value).decode()


def _around_difference(before: Any, after: Any, width: int = 79) -> tuple[str, str]:
    """Both texts whole if short, else cut to a window starting just before their first difference."""
    a, b = _text(before), _text(after)
    if len(a) <= width + 1 and len(b) <= width + 1:
        return a, b
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, first - 24)

    def window(text: str) -> str:
        cut = text[start : start + width]
        return ("…" if start else "") + cut + ("…" if start + width < len(text) else "")

    return window(a), window(b)


def _schema_detail(before: Any, after: Any) -> str | None:
    """Property-level description of a JSON Schema change, when both are object schemas."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return None
    old_props, new_props = before.get("properties"), after.get("properties")
    if not (isinstance(old_props, dict) and isinstance(new_props, dict)):
        return None
    parts = []
    added = sorted(new_props.keys() - old_props.keys())
    removed = sorted(old_props.keys() - new_props.keys())
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    for name in sorted(old_props.keys() & new_props.keys()):
        if old_props[name] != new_props[name]:
            old_type, new_type = old_props[name].get("type"), new_props[name].get("type")
            if old_type != new_type:
                parts.append(f"{name}: {old_type} → {new_type}")
            else:
                parts.append(f"{name} changed")
    old_required, new_required = set(before.get("required", [])), set(after.get("required", []))
    if new_required - old_required:
        parts.append("now required: " + ", ".join(sorted(new_required - old_required)))
    if old_required - new_required:
        parts.append("no longer required: " + ", ".join(sorted(old_required - new_required)))
    if before.get("$defs") != after.get("$defs"):
        parts.append("nested types changed")
    return "; ".join(parts) or None


def _detail(field_name: str, before: Any, after: Any) -> str:
    structural = _schema_detail(before, after) if field_name.endswith("schema") else None
    if structural is not None:
        return f"{field_name}: {structural}"
    old_text, new_text = _around_difference(before, after)
    return f"{field_name}: {old_text!r} → {new_text!r}"


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
                changes.append(Change(name, label, _detail(field_name, before.get(field_name), after.get(field_name))))
        changes.extend(_query_changes(name, before.get("queries") or {}, after.get("queries") or {}))
        old_manual, new_manual = before.get("manual"), after.get("manual")
        if isinstance(old_manual, dict) and isinstance(new_manual, dict):
            changes.extend(_manual_changes(name, old_manual, new_manual))
        elif after.get("kind") == "agent" and before.get("manual_digest") != after.get("manual_digest"):
            shown = [tool for tool in after.get("tools", []) if old_components.get(tool) != new_components.get(tool)]
            if shown:
                changes.append(Change(name, "manual changed", "the model is shown changed tools: " + ", ".join(shown)))
    return changes


def _manual_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The changes of an agent's recorded manual, one per field (framework agents)."""
    before, after = manual_fields(old), manual_fields(new)
    changes = []
    for label, field_name in changed_fields(before, after):
        if field_name is None:
            entity = label.rsplit(" ", 1)[0]
            detail = entity
        else:
            detail = _detail(field_name, before.get(field_name), after.get(field_name))
        changes.append(Change(name, label, detail))
    return changes


def _query_changes(workflow: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The changes of a workflow's declared queries, one per query and field.

    A query removed, or whose schemas changed, is a change a caller sees: a client that asks
    it of a run on the new deployment gets another answer, or none.
    """
    changes = []
    for query in sorted(old.keys() | new.keys()):
        before, after = old.get(query), new.get(query)
        if before is None:
            changes.append(Change(workflow, f"query {query} added", f"query {query}"))
        elif after is None:
            changes.append(Change(workflow, f"query {query} removed", f"query {query}"))
        else:
            for field_name in ("input_schema", "output_schema"):
                if before.get(field_name) != after.get(field_name):
                    detail = _detail(field_name, before.get(field_name), after.get(field_name))
                    changes.append(Change(workflow, f"query {query} signature changed", detail))
            if before.get("description") != after.get("description"):
                detail = _detail("description", before.get("description"), after.get("description"))
                changes.append(Change(workflow, f"query {query} description changed", detail))
    return changes
