"""Isolation tiers for bundle workers, and the bubblewrap jail of the ``sandbox`` tier.

- ``process``: the worker is a plain child process of the server, as the server's OS user. It
  can read whatever the server can (the store, other deployments' files): for code you trust.
- ``sandbox``: the worker runs in a bubblewrap jail (Debian's ``bubblewrap``). Its file system
  is a read-only view of the system's programs and libraries, the Python it runs on, its own
  environment and its own unpacked bundle — nothing else of the data directory (no store, no
  secrets, no logs, no other deployment), a private ``/tmp``, its own process, IPC and host
  name namespaces (it cannot see or signal the server's processes), and, when the server runs
  as root, an unprivileged user (``nobody``). The network is shared: the worker serves its
  link on loopback and agents call their model.

The command is built from data, so it is tested without running it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

TIERS = ("process", "sandbox")
UNPRIVILEGED_UID = 65534
"""``nobody``: who a sandboxed worker runs as when the server can switch users (it is root)."""
SYSTEM_DIRS = ("/usr", "/etc")
"""Read-only in the jail: programs, shared libraries, certificates, name resolution."""
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def bwrap() -> str | None:
    """The ``bwrap`` program, if installed."""
    return shutil.which("bwrap")


@functools.cache
def available() -> str | None:
    """None when the sandbox tier works here, else why not (with what to do)."""
    program = bwrap()
    if program is None:
        return (
            "bubblewrap is not installed: install it ('apt-get install bubblewrap', or scripts/setup), "
            "or deploy with --isolation process"
        )
    probe = subprocess.run(
        [program, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "true"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        detail = probe.stderr.decode(errors="replace").strip()
        return (
            f"bubblewrap cannot create a jail here ({detail}): enable unprivileged user namespaces or run the "
            "server as root, or deploy with --isolation process"
        )
    return None


def default_tier() -> str:
    """``sandbox`` where bubblewrap works, else ``process``."""
    return "sandbox" if available() is None else "process"


@functools.cache
def python_paths(python: str) -> tuple[str, ...]:
    """What the interpreter ``python`` needs to see: its prefixes and its ``sys.path``, as it
    computes them itself when started the way workers are (``-P``: no working directory)."""
    probe = subprocess.run(
        [python, "-P", "-c", "import json, sys; print(json.dumps([sys.base_prefix, sys.prefix, *sys.path]))"],
        capture_output=True,
        timeout=60,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONHOME"},
    )
    found = [p for p in json.loads(probe.stdout) if p and os.path.exists(p)]
    found.append(os.path.dirname(os.path.realpath(python)))
    return tuple(found)


def _covering(paths: Iterable[str]) -> list[str]:
    """The paths that no other path in the list contains, shortest first."""
    ordered = sorted({os.path.abspath(p) for p in paths}, key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for path in ordered:
        if not any(_within(path, k) for k in kept):
            kept.append(path)
    return kept


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def command(
    argv: Sequence[str],
    *,
    folder: Path,
    read_only: Iterable[str],
    private: Path,
    own: Iterable[Path],
    env: dict[str, str],
    switch_user: bool,
) -> list[str]:
    """The bubblewrap command that runs ``argv`` jailed.

    Args:
        argv: the worker's command line.
        folder: the unpacked bundle, its working directory.
        read_only: what it may read (the interpreter's paths; symlinks are followed too).
        private: the data directory: hidden whole, even where a read-only path contains it.
        own: the paths inside ``private`` it may read (its bundle, its environment).
        env: its whole environment.
        switch_user: drop to an unprivileged user inside the jail (the server is root).

    Every directory bubblewrap has to create on the way to a bind is made ``0755``, so that an
    unprivileged user can walk to what it may read (its default is ``0700``).
    """
    program = bwrap()
    assert program is not None
    cmd = [program, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            cmd += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            cmd += ["--ro-bind", link, link]
    hidden = os.path.abspath(private)
    visible = [*[d for d in SYSTEM_DIRS if os.path.isdir(d)]]
    for path in read_only:
        visible += [path, os.path.realpath(path)]
    outside = [p for p in _covering(visible) if not _within(p, hidden)]
    made: set[str] = {"/", "/tmp", "/proc", "/dev"}

    def bind(path: str) -> None:
        parent, ancestors = os.path.dirname(path), []
        while parent not in made and parent != "/":
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        for ancestor in reversed(ancestors):
            cmd.extend(["--perms", "0755", "--dir", ancestor])
            made.add(ancestor)
        cmd.extend(["--ro-bind", path, path])
        made.add(path)

    for path in outside:
        bind(path)
    if any(_within(hidden, p) for p in outside):
        cmd += ["--tmpfs", hidden]
        made.add(hidden)
    for path in _covering([str(p) for p in own]):
        bind(path)
    cmd += ["--chdir", str(folder), "--clearenv"]
    for name, value in sorted(env.items()):
        cmd += ["--setenv", name, value]
    cmd.append("--")
    if switch_user:
        uid = str(UNPRIVILEGED_UID)
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return cmd + list(argv)
