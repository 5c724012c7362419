"""CLI commands for scheduling beyond one queue: queues, pause/resume, cancel, wait, cron entries, webhooks.

Registered on cli.app when cli.py imports this module; the same parse -> API call -> render shape as cli.py.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from queuectl import cron, jobspec, output
from queuectl.cli import JsonOpt, app, call
from queuectl.errors import QueueCtlError, ValidationError
from queuectl.models import JobState
from queuectl.timefmt import parse_duration_s

queue_app = typer.Typer(help="Named queues: each can have its own concurrency and be paused.", no_args_is_help=True)
cron_app = typer.Typer(help="Recurring jobs from cron expressions (5 fields, or 6 with seconds first).",
                       no_args_is_help=True)
webhook_app = typer.Typer(help="HTTP endpoints that get a signed JSON POST when jobs end.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")
app.add_typer(cron_app, name="cron")
app.add_typer(webhook_app, name="webhook")

#: `queuectl wait` exit codes: all completed / some ended dead or cancelled / the timeout passed first.
WAIT_OK, WAIT_FAILED, WAIT_TIMEOUT = 0, 1, 124


class WaitTimeout(QueueCtlError):
    exit_code = WAIT_TIMEOUT


# ---- queues and pause ------------------------------------------------------------------------------------------

ConcurrencyOpt = Annotated[int, typer.Option(
    "--concurrency", "-c", help="At most this many of its jobs run at once, over all engines (0: no own limit).")]


@queue_app.command("list")
def queue_list(as_json: JsonOpt = False) -> None:
    """Every queue with its concurrency, paused state, runnable and running jobs."""
    queues = call(lambda q: q.queues())
    if as_json:
        output.print_json([output.queue_dict(i) for i in queues])
    else:
        output.queues_text(queues)


@queue_app.command("add")
def queue_add(name: Annotated[str, typer.Argument(help="Queue name.")], concurrency: ConcurrencyOpt = 0) -> None:
    """Make a queue known before any job is enqueued to it (enqueue --queue also does)."""
    added = call(lambda q: q.queue_add(name, concurrency=concurrency))
    print(f"queue {name} {'added' if added else 'exists already'}")


@queue_app.command("set")
def queue_set(name: Annotated[str, typer.Argument(help="Queue name.")],
              concurrency: Annotated[int | None, typer.Option(
                  "--concurrency", "-c", help="At most this many of its jobs at once (0: no own limit).")] = None,
              ) -> None:
    """Change a queue's settings; running engines follow at once."""
    if concurrency is None:
        raise ValidationError("nothing to set: give --concurrency N")
    call(lambda q: q.queue_set(name, concurrency=concurrency))
    print(f"queue {name}: concurrency {concurrency or 'unlimited'}")


QueuesArg = Annotated[list[str] | None, typer.Argument(help="Queue names (default: the default queue).")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every queue.")]


def _pause(names: list[str] | None, all_: bool, paused: bool) -> None:
    if names and all_:
        raise ValidationError("give queue names or --all, not both")
    changed = call(lambda q: q.set_paused(None if all_ else (names or ["default"]), paused=paused))
    verb = "paused" if paused else "resumed"
    print(f"{verb}: {', '.join(changed)}" if changed else f"nothing to do: already {verb}")


@app.command()
def pause(queues: QueuesArg = None, all_: AllOpt = False) -> None:
    """Stop starting jobs of a queue (running ones go on). Survives restarts."""
    _pause(queues, all_, True)


@app.command()
def resume(queues: QueuesArg = None, all_: AllOpt = False) -> None:
    """Start jobs of a paused queue again."""
    _pause(queues, all_, False)


# ---- cancel and wait -------------------------------------------------------------------------------------------


@app.command()
def cancel(job_ids: Annotated[list[str], typer.Argument(help="Job ids.")]) -> None:
    """Cancel jobs: waiting ones at once; running ones have their process group terminated. Not retried."""
    done, running = call(lambda q: q.cancel(job_ids))
    for job_id in done:
        print(f"{job_id} cancelled")
    for job_id in running:
        print(f"{job_id} cancelling: its engine terminates it now")


def wait_exit_code(states: dict[str, JobState]) -> int:
    return WAIT_OK if all(s == JobState.COMPLETED for s in states.values()) else WAIT_FAILED


@app.command()
def wait(
    job_ids: Annotated[list[str], typer.Argument(help="Job ids.")],
    timeout: Annotated[str | None, typer.Option(help="Give up after this long: 60, 5m (exit 124).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing; the exit code tells.")] = False,
) -> None:
    """Block until the jobs end. Exit 0 if all completed, 1 if any ended dead or cancelled, 124 on timeout."""
    timeout_s = None if timeout is None else parse_duration_s(timeout, "--timeout")
    try:
        states = call(lambda q: q.wait(job_ids, timeout_s=timeout_s))
    except TimeoutError:
        raise WaitTimeout(f"timed out after {timeout}: jobs still not finished") from None
    if not quiet:
        for job_id, state in states.items():
            print(f"{job_id} {state.value}")
    raise typer.Exit(wait_exit_code(states))


# ---- cron ------------------------------------------------------------------------------------------------------


@cron_app.command("add")
def cron_add(
    args: Annotated[list[str], typer.Argument(help='NAME "SCHEDULE" -- COMMAND...')],
    queue: Annotated[str, typer.Option(help="Queue of the jobs it makes.")] = "default",
    priority: Annotated[int, typer.Option(help="Priority of its jobs.")] = 0,
    timeout: Annotated[str | None, typer.Option(help="Per-attempt timeout of its jobs: 30s, 5m.")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries", help="Retries of its jobs.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for its jobs (repeatable).")] = None,
    catch_up: Annotated[bool, typer.Option(
        "--catch-up", help="If due times were missed while no engine ran, run one job for them (default: skip).")]
    = False,
) -> None:
    """Add a recurring job: `queuectl cron add backup "0 3 * * *" -- tar czf /tmp/b.tgz ~/docs`."""
    if len(args) < 3:
        raise ValidationError('give NAME "SCHEDULE" -- COMMAND (e.g. cron add tick "*/5 * * * *" -- date)')
    name, schedule, words = args[0], args[1], args[2:]
    command = jobspec.join_command(words)
    timeout_s = None if timeout is None else parse_duration_s(timeout, "--timeout")
    entry = cron.make_entry(name, schedule, command, cwd=jobspec.current_dir(), now=time.time(), queue=queue,
                            priority=priority, max_retries=max_retries, timeout_s=timeout_s,
                            env=tuple(jobspec.parse_env_entry(e) for e in env or ()), catch_up=catch_up)
    call(lambda q: q.cron_add(entry))
    print(f"cron {name} added: next run {output.when(entry.next_run_at)}")


@cron_app.command("list")
def cron_list(as_json: JsonOpt = False) -> None:
    """Every cron entry with its schedule, next due time and last job."""
    entries = call(lambda q: q.crons())
    if as_json:
        output.print_json([output.cron_dict(e) for e in entries])
    else:
        output.crons_text(entries)


@cron_app.command("remove")
def cron_remove(name: Annotated[str, typer.Argument(help="Cron entry name.")]) -> None:
    """Delete a cron entry (the jobs it made stay)."""
    call(lambda q: q.cron_remove(name))
    print(f"cron {name} removed")


@cron_app.command("pause")
def cron_pause(name: Annotated[str, typer.Argument(help="Cron entry name.")]) -> None:
    """Stop making jobs until resumed."""
    call(lambda q: q.cron_set_paused(name, paused=True))
    print(f"cron {name} paused")


@cron_app.command("resume")
def cron_resume(name: Annotated[str, typer.Argument(help="Cron entry name.")]) -> None:
    """Make jobs again, from the next due time after now."""
    call(lambda q: q.cron_set_paused(name, paused=False))
    print(f"cron {name} resumed")


# ---- webhooks --------------------------------------------------------------------------------------------------


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(help="http:// or https:// URL.")],
    events: Annotated[str, typer.Option(
        help="Comma-separated: completed, failed, timed_out, dead, cancelled.")] = "dead",
    secret: Annotated[str | None, typer.Option(
        envvar="QUEUECTL_WEBHOOK_SECRET", help="Sign each body with HMAC-SHA256 (header X-Queuectl-Signature).")]
    = None,
) -> None:
    """POST a JSON event to URL whenever a job has one of these events."""
    from queuectl import webhooks  # urllib is slow to import: only this command needs it

    checked = webhooks.validate_url(url)
    names = webhooks.parse_events(events)
    if secret is not None and not secret:
        raise ValidationError("--secret must not be empty")
    webhook_id = call(lambda q: q.webhook_add(checked, events=names, secret=secret))
    print(f"webhook {webhook_id} added: {checked} on {', '.join(names)}")


@webhook_app.command("list")
def webhook_list(as_json: JsonOpt = False) -> None:
    """Every webhook (secrets are not shown)."""
    hooks = call(lambda q: q.webhooks())
    if as_json:
        output.print_json([{"id": h.id, "url": h.url, "events": list(h.events), "signed": h.secret is not None}
                           for h in hooks])
        return
    if not hooks:
        print("no webhooks")
    for h in hooks:
        print(f"{h.id}  {h.url}  {','.join(h.events)}{'  signed' if h.secret else ''}")


@webhook_app.command("remove")
def webhook_remove(webhook_id: Annotated[int, typer.Argument(help="Webhook id (see webhook list).")]) -> None:
    """Stop sending to a webhook."""
    call(lambda q: q.webhook_remove(webhook_id))
    print(f"webhook {webhook_id} removed")



