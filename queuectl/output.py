"""Rendering for the CLI: JSON documents and rich tables. rich is imported only when a table is drawn."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from queuectl.models import TERMINAL_STATES, Attempt, CronEntry, EngineInfo, Job, JobState, QueueInfo
from queuectl.textfmt import one_line, printable
from queuectl.timefmt import human_duration, iso

if TYPE_CHECKING:
    from queuectl.api import JobDetail, Status
    from queuectl.config import InForce


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "command": job.command,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "priority": job.priority,
        "run_at": iso(job.run_at),
        "timeout_s": job.timeout_s,
        "cwd": job.cwd,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "exit_code": job.exit_code,
        "last_error": job.last_error,
        "engine_id": job.engine_id,
        "queue": job.queue,
        "unique_key": job.unique_key,
        "env": dict(job.env),
        "tags": list(job.tags),
        "after": list(job.after),
        "blocked_by": job.blocked_by,
        "cron": job.cron,
    }


def queue_dict(q: QueueInfo) -> dict[str, Any]:
    return {"name": q.name, "concurrency": q.concurrency, "paused": q.paused, "runnable": q.runnable,
            "running": q.running}


def cron_dict(e: CronEntry) -> dict[str, Any]:
    return {"name": e.name, "schedule": e.schedule, "command": e.command, "cwd": e.cwd, "queue": e.queue,
            "priority": e.priority, "max_retries": e.max_retries, "timeout_s": e.timeout_s, "env": dict(e.env),
            "paused": e.paused, "catch_up": e.catch_up, "next_run_at": iso(e.next_run_at),
            "last_run_at": iso(e.last_run_at), "last_job_id": e.last_job_id}


def when(t: float | None) -> str:
    """A time to the second, in UTC."""
    return (iso(t) or "-")[:19] + "Z" if t is not None else "-"


def queues_text(queues: Sequence[QueueInfo]) -> None:
    print(f"{'QUEUE':<20} {'CONCURRENCY':<12} {'STATE':<8} {'RUNNABLE':>9} {'RUNNING':>8}")
    for q in queues:
        print(f"{q.name:<20} {q.concurrency or 'unlimited'!s:<12} {'paused' if q.paused else 'active':<8} "
              f"{'-' if q.runnable is None else q.runnable:>9} {q.running:>8}")


def crons_text(entries: Sequence[CronEntry]) -> None:
    if not entries:
        print("no cron entries")
        return
    for e in entries:
        state = "paused" if e.paused else f"next {when(e.next_run_at)}"
        last = f"  last {e.last_job_id}" if e.last_job_id else ""
        print(f"{e.name}  {e.schedule!r}  {state}  queue {e.queue}{last}  {one_line(e.command, 50)}")


def attempt_dict(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "status": a.status.value,
        "started_at": iso(a.started_at),
        "finished_at": iso(a.finished_at),
        "duration_s": None if a.duration_s is None else round(a.duration_s, 6),
        "exit_code": a.exit_code,
        "timed_out": a.timed_out,
        "error": a.error,
        "engine_id": a.engine_id,
        "output_tail": a.output_tail,
        "log_path": a.log_path,
    }


def detail_dict(d: JobDetail) -> dict[str, Any]:
    data = job_dict(d.job)
    data["max_retries"] = d.effective_max_retries
    data["max_retries_source"] = "job" if d.job.max_retries is not None else "config"
    data["timeout_s"] = d.effective_timeout_s
    data["attempts_history"] = [attempt_dict(a) for a in d.attempts]
    return data


def engine_dict(e: EngineInfo, running: Sequence[Job]) -> dict[str, Any]:
    return {
        "id": e.id,
        "host": e.host,
        "pid": e.pid,
        "workers": e.workers,
        "started_at": iso(e.started_at),
        "heartbeat_age_s": round(max(0.0, time.time() - e.heartbeat_at), 3),
        "running": [j.id for j in running if j.engine_id == e.id],
    }


def status_dict(s: Status) -> dict[str, Any]:
    return {
        "counts": {state.value: s.counts.by_state.get(state, 0) for state in JobState},
        "total": s.counts.total,
        "oldest_pending_age_s": s.counts.oldest_pending_age_s,
        "engines": [engine_dict(e, s.running) for e in s.engines],
        "queues": [queue_dict(q) for q in s.queues],
    }


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def jobs_table(jobs: Sequence[Job]) -> None:
    if not jobs:
        print("no jobs")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    # Short columns keep their whole width (`queuectl list | grep dead` is laid out 80 wide); COMMAND and, from
    # 100 columns, LAST ERROR share what is left. Times to the second here; --json and inspect have milliseconds.
    console = _console()
    widths = {"ID": max(2, *(len(j.id) for j in jobs)), "STATE": 10,
              "PRI": max(3, *(len(str(j.priority)) for j in jobs)), "TRIES": 5, "RUN AT / FINISHED": 20}
    show_error = console.width >= 100
    rest = max(8, console.width - sum(widths.values()) - 2 * (len(widths) + show_error))
    widths["COMMAND"] = rest * 2 // 3 if show_error else rest
    if show_error:
        widths["LAST ERROR"] = rest - widths["COMMAND"]
    for name, width in widths.items():
        table.add_column(name, overflow="ellipsis", no_wrap=True, width=width)
    for job in jobs:
        at = job.finished_at if job.state in TERMINAL_STATES else job.run_at
        cells = [job.id, job.state.value, str(job.priority), str(job.attempts), when(at),
                 one_line(job.command, widths["COMMAND"])]
        if show_error:
            cells.append(one_line(job.last_error, widths["LAST ERROR"]))
        table.add_row(*cells)
    console.print(table)


def status_text(s: Status) -> None:
    counts = s.counts.by_state
    parts = "  ".join(f"{state.value} {counts.get(state, 0)}" for state in JobState)
    print(f"jobs: {s.counts.total}   {parts}")
    age = s.counts.oldest_pending_age_s
    print(f"oldest due job waiting: {human_duration(age) if age is not None else '-'}")
    special = [q for q in s.queues if q.paused or q.concurrency or q.name != "default"]
    if special:
        print("queues: " + "   ".join(
            f"{q.name}{' (paused)' if q.paused else ''}{f' (max {q.concurrency})' if q.concurrency else ''}: "
            f"{q.running} running" for q in special))
    if not s.engines:
        print("engines: none running (start one with `queuectl run`)")
        return
    print(f"engines: {len(s.engines)}")
    now = time.time()
    for e in s.engines:
        mine = [j for j in s.running if j.engine_id == e.id]
        print(f"  {e.id}  pid {e.pid}  {e.workers} workers  up {human_duration(now - e.started_at)}  "
              f"heartbeat {human_duration(max(0.0, now - e.heartbeat_at))} ago  running {len(mine)}")
        for job in mine:
            took = human_duration(now - job.started_at) if job.started_at else "-"
            print(f"    {job.id}  {took}  {one_line(job.command, 50)}")


def detail_text(d: JobDetail) -> None:
    j = d.job
    rows = [
        ("id", j.id), ("state", j.state.value), ("command", j.command), ("cwd", j.cwd),
        ("priority", str(j.priority)),
        ("attempts", f"{j.attempts} of at most {d.effective_max_retries + 1} "
                     f"(max_retries {d.effective_max_retries}{'' if j.max_retries is not None else ', from config'})"),
        ("timeout", "none" if d.effective_timeout_s is None else human_duration(d.effective_timeout_s)),
        ("run_at", iso(j.run_at) or "-"), ("created_at", iso(j.created_at) or "-"),
        ("updated_at", iso(j.updated_at) or "-"), ("started_at", iso(j.started_at) or "-"),
        ("finished_at", iso(j.finished_at) or "-"),
        ("exit_code", "-" if j.exit_code is None else str(j.exit_code)), ("last_error", j.last_error or "-"),
    ]
    extra = [("queue", j.queue if j.queue != "default" else ""), ("unique_key", j.unique_key or ""),
             ("tags", ", ".join(j.tags)), ("after", ", ".join(j.after) + (f" ({j.deps_left} not completed)"
                                                                           if j.deps_left else "")),
             ("blocked_by", j.blocked_by or ""), ("cron", j.cron or ""),
             ("env", " ".join(f"{k}={v}" for k, v in j.env.items())), ("engine", j.engine_id or ""),
             ("damaged", j.damaged or "")]
    rows += [(name, value) for name, value in extra if value]
    for name, value in rows:
        print(f"{name:>12}  {printable(value)}")
    if not d.attempts:
        print("\nno attempts yet")
        return
    print("\nattempts:")
    for a in d.attempts:
        outcome = a.error or ("ok" if a.exit_code == 0 else "")
        print(f"  #{a.number}  {a.status.value:<11} {iso(a.started_at)}  {human_duration(a.duration_s):>7}  "
              f"exit {'-' if a.exit_code is None else a.exit_code}  {printable(outcome)}")
    last = d.attempts[-1]
    if last.output_tail:
        print(f"\noutput tail (attempt {last.number}):")
        tail = printable(last.output_tail)
        sys.stdout.write(tail if tail.endswith("\n") else tail + "\n")


def config_text(items: dict[str, InForce], helps: dict[str, str], env_names: dict[str, str]) -> None:
    name_w = max(map(len, items))
    value_w = max([8, *(len(i.value) for i in items.values() if len(i.value) <= 24)])  # a long one overflows
    for name, item in items.items():
        shown = f"({env_names[name]})" if item.source == "env" else f"({item.source})"
        print(f"{name:<{name_w}}  {item.value:<{value_w}}  {shown:<10} {helps[name]}")
