"""An agent's manual as named fields, so that a change to it can be named field by field.

The manual is what a model call is given besides the conversation (instructions, tools and
their descriptions and schemas, handoffs, output schema, model and settings). Its digest
says *that* it changed; :func:`manual_fields` splits it into fields such as
``tool compute_risk_score description`` so that a manifest diff and a journal mismatch can
say *what* changed. Both tether's own agents (tools as OpenAI function specs) and agents of
other frameworks (tools as ``{"name", "description", "parameters", ...}``) are understood.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from tether.core.journal import canonical_json

_LISTS = {"tools": "tool", "handoffs": "handoff"}
"""Manual keys holding named items, and the word naming one item in a field."""


def _item(entry: Any) -> tuple[str, dict[str, Any]] | None:
    """A named item of a tools/handoffs list: its name and its other keys."""
    if not isinstance(entry, Mapping):
        return None
    body = entry.get("function") if isinstance(entry.get("function"), Mapping) else entry
    assert isinstance(body, Mapping)
    name = body.get("name")
    if not isinstance(name, str):
        return None
    rest = {k: v for k, v in body.items() if k != "name"}
    rest.update({k: v for k, v in entry.items() if k not in ("function", "name", "type")})
    return name, rest


def manual_fields(manual: Mapping[str, Any]) -> dict[str, Any]:
    """Split a manual into named fields.

    Args:
        manual: the manual (a JSON object).

    Returns:
        ``{"instructions": ..., "model": ..., "tool NAME description": ...,
        "tool NAME parameters": ..., "tools order": [...], ...}``: every top-level key as
        itself, except ``tools`` and ``handoffs``, whose items are split per name and key.
    """
    fields: dict[str, Any] = {}
    for key, value in manual.items():
        word = _LISTS.get(key)
        items = [_item(v) for v in value] if word is not None and isinstance(value, list) else None
        if word is None or items is None or any(i is None for i in items):
            fields[key] = value
            continue
        names = []
        for found in items:
            assert found is not None
            name, rest = found
            names.append(name)
            if not rest:
                fields[f"{word} {name}"] = None
            for field_name, field_value in rest.items():
                fields[f"{word} {name} {field_name}"] = field_value
        fields[f"{key} order"] = names
    return fields


def field_digests(manual: Mapping[str, Any]) -> dict[str, str]:
    """:func:`manual_fields` with each value replaced by 12 hex digits of its sha256.

    The journal records these on every ``llm`` entry: small, and enough to name the field
    that differs when a run is replayed through another manual.
    """
    return {
        name: hashlib.sha256(canonical_json(value)).hexdigest()[:12] for name, value in manual_fields(manual).items()
    }


def _entity(field_name: str) -> str | None:
    """``tool X`` for ``tool X description``; None for a top-level field."""
    word, _, rest = field_name.partition(" ")
    if word in _LISTS.values() and rest:
        return f"{word} {rest.split(' ', 1)[0]}"
    return None


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """What differs between two manuals' fields (values or digests), in field order.

    Args:
        old: :func:`manual_fields` or :func:`field_digests` of the older manual.
        new: the same of the newer one.

    Returns:
        ``(label, field)`` pairs such as ``("tool compute_risk_score description changed",
        "tool compute_risk_score description")`` or ``("tool lookup added", None)``; the
        ``tools order`` field is reported only when no tool was added or removed.
    """
    old_entities = {e for e in map(_entity, old) if e}
    new_entities = {e for e in map(_entity, new) if e}
    changes: list[tuple[str, str | None]] = []
    added_or_removed = False
    for entity in sorted(new_entities - old_entities):
        changes.append((f"{entity} added", None))
        added_or_removed = True
    for entity in sorted(old_entities - new_entities):
        changes.append((f"{entity} removed", None))
        added_or_removed = True
    for name in sorted(old.keys() | new.keys()):
        owner = _entity(name)
        if owner is not None and (owner not in old_entities or owner not in new_entities):
            continue
        if name.endswith(" order") and added_or_removed:
            continue
        if name not in new:
            changes.append((f"{name} removed", name))
        elif name not in old:
            changes.append((f"{name} added", name))
        elif old[name] != new[name]:
            changes.append((f"{name} changed", name))
    return changes
