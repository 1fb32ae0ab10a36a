"""core.manifest: digest, deployment id and the component diff; App.manifest feeds them."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

import tether
from tether.core.manifest import Change, deployment_id, diff, manifest_digest


def build_app(*, description: str = "Returns a risk score from 0 to 10.", extra_param: bool = False) -> tether.App:
    app = tether.App("fraud")

    if extra_param:

        async def compute_risk_score(amount: int, currency: str) -> float:
            return 0.0

    else:

        async def compute_risk_score(amount: int) -> float:  # type: ignore[misc]
            return 0.0

    compute_risk_score.__doc__ = description
    app.tool(compute_risk_score)

    @app.workflow(signals={"approval": bool})
    async def review(ctx: tether.Context, amount: int) -> str:
        """Review a transaction."""
        return "ok"

    return app


def test_app_manifest_shape() -> None:
    manifest = build_app().manifest()
    assert manifest["app"] == "fraud"
    assert manifest["tether"] == tether.__version__
    assert list(manifest["components"]) == ["compute_risk_score", "review"]
    tool = manifest["components"]["compute_risk_score"]
    assert tool["kind"] == "tool"
    assert tool["description"] == "Returns a risk score from 0 to 10."
    assert tool["input_schema"]["properties"] == {"amount": {"title": "Amount", "type": "integer"}}
    assert tool["retry"] == tether.RetryPolicy().to_json()
    workflow = manifest["components"]["review"]
    assert workflow["signals"] == {"approval": {"type": "boolean"}}
    assert "retry" not in workflow


def test_app_manifest_digest_is_stable_across_builds() -> None:
    assert build_app().manifest_digest() == build_app().manifest_digest()
    assert build_app().manifest_digest() != build_app(description="Other.").manifest_digest()


def reversed_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reversed_dicts(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_dicts(v) for v in value]
    return value


def test_digest_is_stable_across_dict_ordering() -> None:
    manifest = build_app().manifest()
    shuffled = reversed_dicts(manifest)
    assert list(shuffled) != list(manifest)
    assert manifest_digest(shuffled) == manifest_digest(manifest)
    assert re.fullmatch(r"[0-9a-f]{64}", manifest_digest(manifest))


def test_digest_covers_list_order() -> None:
    assert manifest_digest({"tools": ["a", "b"]}) != manifest_digest({"tools": ["b", "a"]})


def test_deployment_id_is_deterministic() -> None:
    first = deployment_id("b" * 64, "m" * 64)
    assert first == deployment_id("b" * 64, "m" * 64)
    assert re.fullmatch(r"dep_[0-9a-f]{12}", first)
    assert deployment_id("c" * 64, "m" * 64) != first
    assert deployment_id("b" * 64, "n" * 64) != first


def test_diff_of_equal_manifests_is_empty() -> None:
    manifest = build_app().manifest()
    assert diff(manifest, copy.deepcopy(manifest)) == []


def test_diff_names_a_description_change_with_before_and_after() -> None:
    old = build_app().manifest()
    new = build_app(description="Returns a risk score from 0 to 100.").manifest()
    assert diff(old, new) == [
        Change(
            "compute_risk_score",
            "description changed",
            "description: 'Returns a risk score from 0 to 10.' → 'Returns a risk score from 0 to 100.'",
        )
    ]


def test_diff_names_a_signature_change() -> None:
    changes = diff(build_app().manifest(), build_app(extra_param=True).manifest())
    assert [(c.component, c.change) for c in changes] == [("compute_risk_score", "signature changed")]
    assert changes[0].detail.startswith("input_schema: ")


def test_diff_names_added_and_removed_components() -> None:
    old = build_app().manifest()
    new = copy.deepcopy(old)
    del new["components"]["compute_risk_score"]
    new["components"]["score_v2"] = {**old["components"]["compute_risk_score"], "name": "score_v2"}
    assert [c.to_json() for c in diff(old, new)] == [
        {"component": "compute_risk_score", "change": "removed", "detail": "tool compute_risk_score"},
        {"component": "score_v2", "change": "added", "detail": "tool score_v2"},
    ]


def test_diff_kind_change_hides_field_changes() -> None:
    old = {"components": {"x": {"kind": "tool", "description": "a"}}}
    new = {"components": {"x": {"kind": "function", "description": "b"}}}
    assert diff(old, new) == [Change("x", "kind changed", "tool → function")]


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("signals", "signals changed"),
        ("model", "model changed"),
        ("instructions", "instructions changed"),
        ("tools", "tools changed"),
        ("retry", "retry policy changed"),
        ("output_schema", "signature changed"),
    ],
)
def test_diff_labels_each_field(field: str, label: str) -> None:
    old = {"components": {"x": {"kind": "agent", field: "before"}}}
    new = {"components": {"x": {"kind": "agent", field: "after"}}}
    assert diff(old, new) == [Change("x", label, f"{field}: 'before' → 'after'")]


def test_diff_names_runtime_changes() -> None:
    old = {"python": "3.11", "tether": "0.1.0", "components": {}}
    new = {"python": "3.12", "tether": "0.1.0", "components": {}}
    assert diff(old, new) == [Change("*", "runtime changed", "python 3.11 → 3.12")]


def test_diff_shortens_long_values() -> None:
    old = {"components": {"x": {"kind": "tool", "description": "a" * 200}}}
    new = {"components": {"x": {"kind": "tool", "description": "b" * 200}}}
    (change,) = diff(old, new)
    assert change.detail == f"description: '{'a' * 79}…' → '{'b' * 79}…'"
