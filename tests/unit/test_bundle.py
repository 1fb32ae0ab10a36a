"""_bundle: deterministic packing and safe extraction."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tether import _bundle
from tether.errors import BundleError


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text("import tether\napp = tether.App('demo')\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "steps.py").write_text("X = 1\n")
    (root / "tether.toml").write_text('app = "main:app"\n')
    return root


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


def test_packing_twice_gives_identical_bytes(app_dir: Path) -> None:
    assert _bundle.pack(app_dir) == _bundle.pack(app_dir)


def test_mtimes_do_not_change_the_digest(app_dir: Path) -> None:
    before = _bundle.digest(_bundle.pack(app_dir))
    for path in app_dir.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert _bundle.digest(_bundle.pack(app_dir)) == before


def test_content_changes_the_digest(app_dir: Path) -> None:
    before = _bundle.digest(_bundle.pack(app_dir))
    (app_dir / "pkg" / "steps.py").write_text("X = 2\n")
    assert _bundle.digest(_bundle.pack(app_dir)) != before


def test_entries_are_sorted(app_dir: Path) -> None:
    assert names(_bundle.pack(app_dir)) == ["main.py", "pkg/__init__.py", "pkg/steps.py", "tether.toml"]


@pytest.mark.parametrize("ignored", ["__pycache__", ".git", ".venv", ".tether", "node_modules", "x.egg-info"])
def test_ignored_directories_are_left_out(app_dir: Path, ignored: str) -> None:
    before = _bundle.pack(app_dir)
    (app_dir / ignored).mkdir()
    (app_dir / ignored / "junk.py").write_text("junk")
    (app_dir / "pkg" / ignored).mkdir()
    (app_dir / "pkg" / ignored / "junk.py").write_text("junk")
    assert _bundle.pack(app_dir) == before


def test_compiled_files_and_symlinks_are_left_out(app_dir: Path) -> None:
    before = _bundle.pack(app_dir)
    (app_dir / "main.pyc").write_bytes(b"\0")
    (app_dir / "link.py").symlink_to(app_dir / "main.py")
    assert _bundle.pack(app_dir) == before


def test_pack_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(BundleError, match="is not a directory"):
        _bundle.pack(tmp_path / "f")


def test_extract_round_trip(app_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _bundle.extract(_bundle.pack(app_dir), dest)
    assert (dest / "pkg" / "steps.py").read_text() == "X = 1\n"
    assert _bundle.pack(dest) == _bundle.pack(app_dir)


def evil_tar(add: Callable[[tarfile.TarFile], None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        add(tar)
    return raw.getvalue()


def add_file(name: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))

    return add


def add_link(kind: bytes) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("link")
        info.type = kind
        info.linkname = "/etc/passwd"
        tar.addfile(info)

    return add


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (evil_tar(add_file("../escape.py")), "unsafe path '../escape.py'"),
        (evil_tar(add_file("pkg/../../escape.py")), "unsafe path"),
        (evil_tar(add_file("/etc/cron.d/x")), "unsafe path '/etc/cron.d/x'"),
        (evil_tar(add_link(tarfile.SYMTYPE)), "'link', which is not a regular file"),
        (evil_tar(add_link(tarfile.LNKTYPE)), "not a regular file"),
        (b"definitely not a gzip file", "not a gzip-compressed tar archive"),
        (b"\x1f\x8b\x08\x00garbage", "not a gzip-compressed tar archive"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "garbage", "broken-gzip"],
)
def test_extract_refuses_unsafe_bundles(tmp_path: Path, data: bytes, message: str) -> None:
    dest = tmp_path / "out"
    with pytest.raises(BundleError, match=message):
        _bundle.extract(data, dest)
    assert not dest.exists()
    assert not (tmp_path / "escape.py").exists()


def test_extract_refuses_too_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bundle, "MAX_FILES", 2)

    def three(tar: tarfile.TarFile) -> None:
        for i in range(3):
            add_file(f"f{i}.py")(tar)

    data = evil_tar(three)
    with pytest.raises(BundleError, match="holds 3 files, more than 2"):
        _bundle.extract(data, tmp_path / "out")


def test_app_ref(app_dir: Path, tmp_path: Path) -> None:
    assert _bundle.app_ref(app_dir) == "main:app"
    assert _bundle.app_ref(tmp_path) is None
    (tmp_path / "tether.toml").write_text('app = "no-colon"\n')
    with pytest.raises(BundleError, match="must look like 'module:attribute'"):
        _bundle.app_ref(tmp_path)
