"""Commands left running by an engine that died (kill -9, OOM): found and killed before their jobs run again.

Each job leads its own session, so killing the engine does not kill its jobs. Every job is started with
QUEUECTL_ENGINE_ID (host-pid-random) in its environment, which its children inherit. An engine scans /proc for
processes whose QUEUECTL_ENGINE_ID names an engine of this host whose pid is gone, and kills their process
groups. The random part of the id means a recycled pid is never mistaken for a job of a dead engine. This costs
nothing while jobs run (no file per job); the scan happens at start and in each recovery sweep.
"""

from __future__ import annotations

import contextlib
import os
import signal

from queuectl.procs import environ, pid_alive, start_time

ENGINE_ENV = "QUEUECTL_ENGINE_ID"
_ENGINE_PREFIX = f"{ENGINE_ENV}=".encode()
_JOB_PREFIX = b"QUEUECTL_JOB_ID="


def engine_id(host: str, pid: int, token: str) -> str:
    return f"{host}-{pid}-{token}"


def _host_and_pid(engine: str) -> tuple[str, int | None]:
    head, _, _token = engine.rpartition("-")
    host, _, pid = head.rpartition("-")
    return host, int(pid) if pid.isdigit() else None


def kill_leftovers(host: str, own_id: str) -> list[str]:
    """Kill the process groups of jobs started by dead engines of this host; returns those jobs' ids."""
    groups: dict[int, str] = {}
    dead: dict[str, bool] = {}
    # Never our own group: an engine started from a job of an engine now gone carries that engine's id in its
    # environment, and so may its parent (a script, a shell); it would kill itself and them.
    own_group = os.getpgrp()
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        env = environ(pid)
        engine = next((v[len(_ENGINE_PREFIX):].decode(errors="replace") for v in env if v.startswith(_ENGINE_PREFIX)),
                      None)
        if engine is None or engine == own_id:
            continue
        if engine not in dead:
            # The engine started before its job did: a process on the engine's pid that started after this job
            # is a recycled pid, so the engine is gone.
            engine_host, engine_pid = _host_and_pid(engine)
            dead[engine] = engine_host == host and engine_pid is not None and not pid_alive(
                engine_pid, started_by=start_time(int(pid)))
        if not dead[engine]:
            continue
        with contextlib.suppress(OSError):
            job = next((v[len(_JOB_PREFIX):].decode(errors="replace") for v in env if v.startswith(_JOB_PREFIX)), "?")
            group = os.getpgid(int(pid))
            if group != own_group:
                groups[group] = job
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return sorted(set(groups.values()))
