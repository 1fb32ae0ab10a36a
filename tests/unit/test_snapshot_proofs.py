"""The pure pieces of snapshot proofs: file lists, fingerprints and their differences."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tether import _bundle, _environment
from tether.core.manifest import deployment_id
from tether.protocol import InvokeRequest, manifest_refusal


def _app(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "app.py").write_text("X = 1\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "tether.toml").write_text('app = "app:app"\n')
    return root


def test_file_digests_of_a_bundle_match_the_folder_it_was_packed_from(tmp_path: Path) -> None:
    root = _app(tmp_path / "app")
    data = _bundle.pack(root)
    assert _bundle.file_digests(data) == _bundle.tree_digests(root)
    assert sorted(_bundle.file_digests(data)) == ["app.py", "pkg/__init__.py", "tether.toml"]


def test_verify_tree_names_changed_added_and_missing_files(tmp_path: Path) -> None:
    root = _app(tmp_path / "app")
    expected = _bundle.tree_digests(root)
    assert _bundle.verify_tree(root, expected) == []
    (root / "app.py").write_text("X = 2\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00")
    (root / "tether.toml").unlink()
    problems = _bundle.verify_tree(root, expected)
    assert problems[0].startswith("app.py: changed (sha256 ")
    assert problems[1:] == [
        "pkg/__pycache__/mod.cpython-311.pyc: added (not in the deployed bundle)",
        "tether.toml: missing",
    ]


def test_a_symlink_in_place_of_a_file_is_refused(tmp_path: Path) -> None:
    root = _app(tmp_path / "app")
    expected = _bundle.tree_digests(root)
    (tmp_path / "elsewhere.py").write_text("X = 1\n")
    (root / "app.py").unlink()
    (root / "app.py").symlink_to(tmp_path / "elsewhere.py")
    assert _bundle.verify_tree(root, expected) == ["app.py: replaced by something that is not a regular file"]


def test_file_digests_refuse_what_is_not_a_bundle() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w"):
        pass
    try:
        _bundle.file_digests(raw.getvalue())
    except _bundle.BundleError as exc:
        assert "not a gzip-compressed tar" in exc.message
    else:
        raise AssertionError("an uncompressed tar was accepted")


@given(
    st.dictionaries(st.sampled_from(["a.py", "b.py", "c/d.py", "e.txt"]), st.sampled_from(["1" * 64, "2" * 64])),
    st.dictionaries(st.sampled_from(["a.py", "b.py", "c/d.py", "e.txt"]), st.sampled_from(["1" * 64, "2" * 64])),
)
def test_code_changes_list_exactly_the_paths_that_differ(before: dict[str, str], after: dict[str, str]) -> None:
    lines = _bundle.code_changes(before, after)
    named = [line.split(":", 1)[0] for line in lines]
    assert named == sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert (lines == []) == (_bundle.code_digest(before) == _bundle.code_digest(after))


def test_distributions_are_read_from_their_folder_names(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "Pydantic_Core-2.41.5.dist-info").mkdir()
    (first / "six-1.16.0-py3.11.egg-info").mkdir()
    (first / "tether-0.1.0.dist-info").mkdir()
    (second / "pydantic_core-2.33.2.dist-info").mkdir()  # shadowed by the first path, as for imports
    (second / "not-a-dist").mkdir()
    found = _environment.distributions([str(first), str(second), str(tmp_path / "missing")])
    assert found == {"pydantic-core": "2.41.5", "six": "1.16.0"}


def test_changes_between_fingerprints_read_like_a_package_diff() -> None:
    before = {
        "python": "3.11.7",
        "tether": "0.1.0+aaa",
        "packages": {"pydantic": "2.12.4", "six": "1.16.0"},
        "startup": {"a.pth": "1"},
    }
    after = {
        "python": "3.11.9",
        "tether": "0.1.0+aaa",
        "packages": {"pydantic": "2.11.7", "rich": "14.0.0"},
        "startup": {"a.pth": "2", "sitecustomize.py": "3"},
    }
    assert _environment.changes(before, after) == [
        "python 3.11.7 → 3.11.9",
        "pydantic 2.12.4 → 2.11.7",
        "+ rich 14.0.0",
        "- six 1.16.0",
        "start-up file a.pth changed",
        "start-up file sitecustomize.py added",
    ]
    assert _environment.changes(before, before) == []
    assert _environment.digest(before) != _environment.digest(after)


def test_this_interpreter_fingerprint_is_stable_and_names_tether_by_build() -> None:
    first, second = _environment.fingerprint(), _environment.fingerprint()
    assert first == second
    assert "tether" not in first["packages"] and "pydantic" in first["packages"]
    version, digest = first["tether"].split("+")
    assert version and len(digest) == 12


def test_summary_counts_what_it_leaves_out() -> None:
    lines = [f"p{i} 1 → 2" for i in range(15)]
    assert _environment.summary(lines, limit=2) == "p0 1 → 2; p1 1 → 2; and 13 more"


def test_the_app_reference_and_environment_change_the_deployment_id() -> None:
    base = deployment_id("b" * 64, "a:app", "m" * 64, "e" * 64)
    assert base == deployment_id("b" * 64, "a:app", "m" * 64, "e" * 64)
    assert deployment_id("b" * 64, "b:app", "m" * 64, "e" * 64) != base
    assert deployment_id("b" * 64, "a:app", "m" * 64, "f" * 64) != base


def _request(**extra: str) -> InvokeRequest:
    request: InvokeRequest = {
        "run_id": "r",
        "attempt": 1,
        "token": "t",
        "deployment_id": "d",
        "deployment_label": "v1",
        "manifest_digest": "m" * 64,
        "component": "w",
        "input": {},
        "journal": [],
        "runtime_url": "http://127.0.0.1:1",
    }
    request.update(extra)  # type: ignore[typeddict-item]
    return request


def test_an_endpoint_refuses_a_run_pinned_to_other_code_or_environment() -> None:
    served = {"code_digest": "c" * 64, "environment_digest": "e" * 64}
    assert manifest_refusal("m" * 64, _request(), **served) is None
    assert manifest_refusal("m" * 64, _request(code_digest="c" * 64, environment_digest="e" * 64), **served) is None
    code = manifest_refusal("m" * 64, _request(code_digest="d" * 64), **served)
    assert code is not None and code["message"] == f"endpoint serves code {'c' * 12}, run pinned to {'d' * 12}"
    env = manifest_refusal("m" * 64, _request(environment_digest="f" * 64), **served)
    assert env is not None and "environment" in env["message"]
    manifest = manifest_refusal("n" * 64, _request(), **served)
    assert manifest is not None and "manifest" in manifest["message"]
