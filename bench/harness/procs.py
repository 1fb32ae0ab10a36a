"""Processes of the benchmark: start, find, measure (from /proc) and always clean up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Fields after the command (which may hold spaces and parentheses): field 3 is at index 0.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (all its threads), or None once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def children(parent: int, contains: str | None = None) -> list[int]:
    """Live direct children of ``parent`` (whose command line contains ``contains``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = _stat_fields(pid)
        if fields is None or int(fields[1]) != parent or fields[0] == "Z":
            continue
        if contains is None or contains in cmdline(pid):
            found.append(pid)
    return sorted(found)


def descendants(roots: list[int]) -> list[int]:
    """Every live process below ``roots`` (a sandboxed worker runs under bwrap, a level down)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = [], set(roots)
    while frontier:
        below = {pid for pid, parent in parents.items() if parent in frontier}
        found += sorted(below)
        frontier = below
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / CLK_TCK


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


@dataclass
class CpuSnapshot:
    """CPU seconds of a set of processes at one moment."""

    seconds: dict[int, float] = field(default_factory=dict)

    @classmethod
    def take(cls, pids: Iterable[int]) -> CpuSnapshot:
        snap = cls()
        for pid in pids:
            value = cpu_seconds(pid)
            if value is not None:
                snap.seconds[pid] = value
        return snap


def cpu_between(before: CpuSnapshot, after: CpuSnapshot) -> tuple[float, bool]:
    """CPU spent between two snapshots; the flag says a process of ``before`` was gone at the end
    (its CPU since ``before`` is then missing)."""
    total = 0.0
    for pid, value in after.seconds.items():
        total += value - before.seconds.get(pid, 0.0)
    lost = any(pid not in after.seconds for pid in before.seconds)
    return total, lost


@dataclass
class Managed:
    """A started process and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 15.0
    log: Path | None = None
    extra_pids: dict[int, str] = field(default_factory=dict)  # pid -> its command line: e.g. workers

    def adopt(self, pids: Iterable[int]) -> None:
        """Also stop these (processes it started in their own sessions) when it is stopped."""
        for pid in pids:
            if pid not in self.extra_pids:
                self.extra_pids[pid] = cmdline(pid)

    @property
    def pid(self) -> int:
        return self.popen.pid


class Reaper:
    """Owns every process the benchmark starts; ``close()`` stops them all (idempotent)."""

    def __init__(self) -> None:
        self._procs: list[Managed] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 15.0,
    ) -> Managed:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # Ctrl-C in the terminal reaches only bench/run; it stops these
            )
        proc = Managed(name, popen, stop_signal, stop_timeout, log)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Managed) -> None:
        """Stop one process (its signal, then SIGKILL after its timeout) and what it left behind."""
        if proc in self._procs:
            self._procs.remove(proc)
        extra = [pid for pid, cmd in proc.extra_pids.items() if alive(pid) and cmdline(pid) == cmd]
        if proc.popen.poll() is None:
            try:
                os.kill(proc.pid, proc.stop_signal)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(proc.stop_timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.popen.wait(5)
        _kill_group(proc.pid)  # anything left in its process group
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in extra) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in extra:
            if alive(pid) and cmdline(pid) == proc.extra_pids[pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        for proc in reversed(list(self._procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {proc.name} ({proc.pid}): {exc}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
