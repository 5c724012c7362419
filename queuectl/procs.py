"""Facts about processes on this host."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Collection

from queuectl.exports import exported

#: The inode of the host's own pid namespace (the kernel's PROC_PID_INIT_INO).
_HOST_PID_NAMESPACE = 0xEFFFFFFC


def host_key() -> str:
    """Where a pid names a process: the host name, and the pid namespace when it is not the host's own. Containers
    that share the host's name (host networking, a fixed `hostname:` for several replicas) number their processes
    each on their own: with the name alone, an engine in one took the pid of an engine in another for one of its
    own (alive: signalled by `worker stop`; gone: its running jobs recovered and run twice)."""
    name = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # no /proc (or not Linux): the name alone, as before
        return name
    return name if namespace == _HOST_PID_NAMESPACE else f"{name}{_NAMESPACE_MARK}{namespace}"


_NAMESPACE_MARK = "~pidns"


def unseen_namespace(key: str, own_key: str) -> bool:
    """Whether host_key() `key` is this host name in another pid namespace (a container's, or this container's
    before a restart): its pids cannot be checked from here, only its heartbeat can be."""
    return key != own_key and key.partition(_NAMESPACE_MARK)[0] == own_key.partition(_NAMESPACE_MARK)[0]


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from the state field on (the command name before it may itself contain ') ')."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


@functools.cache
def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


def start_time(pid: int) -> float | None:
    """When the process started, in Unix seconds (to the clock tick), or None if unknown."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def pid_alive(pid: int, *, started_by: float | None = None) -> bool:
    """Whether this process still exists: not gone, not a zombie (a killed engine whose parent has not reaped
    it yet still answers kill(pid, 0)), and, when started_by is given, not a newer process that reuses the pid
    (pids wrap around at 32768 here). A pid no process can have (from a hand-edited row) is not alive."""
    if pid <= 0:  # kill() would ask about a whole process group, or every process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond pid_t
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: trust kill()
    if fields[0] in (b"Z", b"X"):
        return False
    if started_by is not None:
        started = start_time(pid)
        if started is not None and started > started_by + 1.0:
            return False
    return True


def environ(pid: str) -> list[bytes]:
    """The environment the process was started with, as "KEY=value" entries ([] if gone, or another user's), led,
    for a job's shell, by what its command line exports before the command (see exports): the job's variables, in
    force over what the shell inherited, so first (a reader takes a variable's first entry)."""
    raw = _read(f"/proc/{pid}/environ")
    if raw is None:  # gone, or not ours to read: its command line (world-readable) says nothing we may act on
        return []
    own = raw.split(b"\0") if raw else []
    return exported(_read(f"/proc/{pid}/cmdline") or b"") + own


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def marked_groups(marks: Collection[bytes]) -> set[int]:
    """The process groups of the processes whose environment holds every one of marks ("KEY=value"), but this
    process's own group: how a job's processes are found after some left its group (setsid)."""
    if not marks:
        return set()
    own = os.getpgrp()
    groups: set[int] = set()
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return groups
    for pid in pids:
        env = environ(pid)
        if env and all(mark in env for mark in marks):
            with contextlib.suppress(OSError):  # gone meanwhile
                groups.add(os.getpgid(int(pid)))
    groups.discard(own)
    return groups
