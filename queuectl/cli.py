"""The command line: parse -> call the library API -> render. Errors leave through `main()` as one line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from queuectl import api, config, jobspec, output, pid1
from queuectl.errors import QueueCtlError, ValidationError, not_utf8, report
from queuectl.models import JobState
from queuectl.paths import default_home
from queuectl.textfmt import one_line
from queuectl.timefmt import parse_duration_s

T = TypeVar("T")

app = typer.Typer(
    name="queuectl",
    help="A durable job queue for shell commands. Start an engine with `queuectl run`, enqueue from any shell.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(help="Start or stop engines (the assignment's names for `run`).", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue: jobs whose retries are spent.", no_args_is_help=True)
config_app = typer.Typer(help="Settings stored in the database; a running engine sees changes.",
                         no_args_is_help=True)
app.add_typer(worker_app, name="worker")
app.add_typer(dlq_app, name="dlq")
app.add_typer(config_app, name="config")


class Ctx:
    def __init__(self, home: Path, database_url: str | None) -> None:
        self.home = home
        self.database_url = database_url

    def queue(self) -> api.Queue:
        return api.Queue(self.home, self.database_url)


#: Where `queuectl dashboard` and `run --dashboard` listen by default.
DASHBOARD_PORT = 8765
_ctx: Ctx | None = None
_command_given = False


@app.callback()
def _global(
    home: Annotated[Path | None, typer.Option(
        "--home", envvar="QUEUECTL_HOME", help="Data directory (default: $XDG_DATA_HOME/queuectl).")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", envvar="QUEUECTL_DATABASE_URL", help="Use this database instead of the home's SQLite file.",
    )] = None,
) -> None:
    global _ctx
    _ctx = Ctx(home.expanduser() if home else default_home(), database_url)


def ctx() -> Ctx:
    assert _ctx is not None
    return _ctx


def call(fn: Callable[[api.Queue], Awaitable[T]]) -> T:
    """Open the queue, run one API call, close. Library errors become one line and an exit code in main()."""

    async def go() -> T:
        async with ctx().queue() as q:
            return await fn(q)

    return asyncio.run(go())


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _state(value: str | None) -> JobState | None:
    return None if value is None else api.parse_state(value)


# ---- enqueue ------------------------------------------------------------------------------------------------


@app.command(context_settings={"allow_interspersed_args": False})
def enqueue(
    args: Annotated[list[str] | None, typer.Argument(
        help="A job as JSON ('{\"id\":\"job1\",\"command\":\"sleep 2\"}'), or the command after `--`.")] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Job id (default: generated).")] = None,
    priority: Annotated[str | None, typer.Option(help="Integer, higher runs first (default 0).")] = None,
    delay: Annotated[str | None, typer.Option(help="Run after this long: 30, 30s, 5m, 2h.")] = None,
    run_at: Annotated[str | None, typer.Option("--run-at", help="Run at this ISO-8601 time.")] = None,
    timeout: Annotated[str | None, typer.Option(help="Per-attempt timeout: 30s, 5m (default: config).")] = None,
    max_retries: Annotated[str | None, typer.Option("--max-retries", help="Retries after the first attempt.")]
    = None,
    file: Annotated[str | None, typer.Option("--file", "-f", help="JSON Lines file of jobs ('-' = stdin).")]
    = None,
    replace: Annotated[bool, typer.Option(help="Overwrite an existing job with the same id (not if running).")]
    = False,
    queue: Annotated[str | None, typer.Option(help="Named queue (default: default).")] = None,
    after: Annotated[list[str] | None, typer.Option(
        "--after", help="Run once these jobs have completed: ID[,ID...] (repeatable).")] = None,
    unique_key: Annotated[str | None, typer.Option(
        "--unique-key", help="Refuse (or see --if-exists) while an active job has this key.")] = None,
    if_exists: Annotated[str, typer.Option(
        "--if-exists", help="With --unique-key: error (exit 1) or ignore (print the existing job's id).")]
    = "error",
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the command (repeatable).")]
    = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="A tag (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job ends; exit 0 if it completed, else 1.")]
    = False,
    follow: Annotated[bool, typer.Option("--follow", help="Like --wait, printing the job's output as it comes.")]
    = False,
) -> None:
    """Add jobs. Prints each job's id."""
    given: dict[str, Any] = {"id": job_id, "priority": priority, "delay": delay, "run_at": run_at,
                             "timeout": timeout, "max_retries": max_retries, "queue": queue,
                             "unique_key": unique_key, "tags": tag,
                             "after": [i for a in after for i in a.split(",") if i.strip()] if after else None,
                             "env": dict(jobspec.parse_env_entry(e) for e in env) if env else None}
    flags = {k: v for k, v in given.items() if v is not None}
    if after is not None and not given["after"]:
        raise ValidationError(f"--after takes job ids (ID[,ID...]); got {', '.join(map(repr, after))}")
    if file is not None:
        if args:
            raise ValidationError("give jobs either with --file or as an argument, not both")
        jobs = jobspec.from_json_lines(_read_lines(file))
        if flags:
            # A --delay or --run-at flag replaces each line's due time instead of clashing with it.
            timing = "delay" in flags or "run_at" in flags
            jobs = [jobspec.from_mapping({**{k: v for k, v in _as_mapping(j).items() if not (timing and k == "run_at")},
                                          **flags}) for j in jobs]
    else:
        jobs = [jobspec.from_mapping(jobspec.mapping_from_args(args or [], flags, command_given=_command_given))]
    if (wait or follow) and len(jobs) != 1:
        raise ValidationError("--wait and --follow take one job, not a --file of them")
    ids = call(lambda q: q.enqueue(jobs, replace=replace, if_exists=if_exists))
    sys.stdout.write("".join(f"{i}\n" for i in ids))
    if wait or follow:
        from queuectl.cli_sched import wait_exit_code
        from queuectl.follow import follow_job

        sys.stdout.flush()
        states = call(lambda q: follow_job(q, ids[0]) if follow else q.wait(ids))
        raise typer.Exit(wait_exit_code(states))


def _read_lines(file: str) -> list[str]:
    if file == "-":
        return sys.stdin.read().splitlines()
    try:
        with open(file, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None


def _as_mapping(job: Any) -> dict[str, Any]:
    return {"id": job.id, "command": job.command, "priority": job.priority, "max_retries": job.max_retries,
            "run_at": job.run_at, "timeout": job.timeout_s, "cwd": job.cwd, "queue": job.queue,
            "unique_key": job.unique_key, "env": dict(job.env) or None, "tags": list(job.tags) or None,
            "after": list(job.after) or None}


# ---- the engine ---------------------------------------------------------------------------------------------


def _run_engine(workers: int, until_idle: bool, grace: str | None, log_format: str,
                dashboard_port: int | None = None, queues: list[str] | None = None) -> None:
    from queuectl.engine import Engine, EngineOptions
    from queuectl.events import EventLog

    if workers < 1:
        raise ValidationError(f"--workers must be at least 1; got {workers}")
    if log_format not in {"text", "json"}:
        raise ValidationError(f"--log-format must be text or json; got {log_format!r}")
    grace_s = None if grace is None else parse_duration_s(grace, "--grace")
    served = tuple(dict.fromkeys(jobspec.check_name(q, "queue name") for q in queues)) if queues else None
    options = EngineOptions(home=ctx().home, workers=workers, until_idle=until_idle, grace_s=grace_s,
                            queues=served)
    pid1.engine_not_pid1()  # in a container, as its first process: an init stays behind to reap (before threads)
    log = EventLog(log_format)
    url = ctx().database_url
    if url is not None:  # what the jobs' own `queuectl` commands use (the engine adds QUEUECTL_HOME)
        os.environ["QUEUECTL_DATABASE_URL"] = url
    try:
        if dashboard_port is None:
            summary = call(lambda q: Engine(q.store, options, log).run())
        else:
            server = _dashboard_server()
            summary = call(lambda q: server.engine_with_dashboard(
                q, Engine(q.store, options, log), port=dashboard_port, log=log))
        log.emit("summary", summary.line(), completed=summary.completed, dead=summary.dead)
    finally:  # the engine's last lines before any error line of ours
        log.close()


WorkersOpt = Annotated[int, typer.Option("--workers", "-w", help="Jobs run at once.")]
UntilIdleOpt = Annotated[bool, typer.Option(
    "--until-idle", help="Exit once nothing runs, nothing is due and no retry is pending.")]
GraceOpt = Annotated[str | None, typer.Option(
    help="On stop, wait at most this long for running jobs, then terminate them (default: wait).")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="text or json (one object per line).")]
ServeOpt = Annotated[list[str] | None, typer.Option(
    "--queue", "-q", help="Serve only this queue (repeatable; default: every queue).")]


@app.command()
def run(workers: WorkersOpt = 1, until_idle: UntilIdleOpt = False, grace: GraceOpt = None,
        log_format: LogFormatOpt = "text",
        dashboard: Annotated[bool, typer.Option(
            "--dashboard", help="Also serve the web dashboard on 127.0.0.1 (token: QUEUECTL_DASHBOARD_TOKEN).")]
        = False,
        dashboard_port: Annotated[int, typer.Option("--dashboard-port", help="Port of --dashboard.")] = DASHBOARD_PORT,
        queue: ServeOpt = None,
        ) -> None:
    """Run the engine in the foreground. Ctrl-C or SIGTERM stops it gracefully; a second Ctrl-C stops now."""
    _run_engine(workers, until_idle, grace, log_format, dashboard_port if dashboard else None, queue)


@worker_app.command("start")
def worker_start(count: Annotated[int, typer.Option("--count", "-c", help="Jobs run at once.")] = 1,
                 until_idle: UntilIdleOpt = False, grace: GraceOpt = None, log_format: LogFormatOpt = "text",
                 queue: ServeOpt = None) -> None:
    """Same as `queuectl run --workers COUNT`."""
    _run_engine(count, until_idle, grace, log_format, queues=queue)


@worker_app.command("stop")
def worker_stop(
    wait: Annotated[bool, typer.Option(help="Wait until the engines have exited.")] = False,
    timeout: Annotated[str, typer.Option(help="With --wait, give up after this long.")] = "60s",
) -> None:
    """Ask every running engine to stop gracefully (running jobs finish first)."""
    timeout_s = parse_duration_s(timeout, "--timeout")
    engines = call(lambda q: q.stop_engines(wait=wait, timeout_s=timeout_s))
    if not engines:
        print("no engine is running")
        return
    verb = "stopped" if wait else "asked to stop"
    for e in engines:
        print(f"{e.id} (pid {e.pid} on {e.host}) {verb}")


@app.command()
def migrate() -> None:
    """Bring the database's schema up to date (every command also does this when it opens the database)."""
    call(lambda q: asyncio.sleep(0))
    print("database schema is up to date")


# ---- looking ------------------------------------------------------------------------------------------------


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Jobs per state, and the engines running with what each is doing."""
    s = call(lambda q: q.status())
    output.print_json(output.status_dict(s)) if as_json else output.status_text(s)


LimitOpt = Annotated[int, typer.Option(help="At most this many jobs.")]


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(
        help="pending, waiting, processing, completed, failed, dead or cancelled.")] = None,
    limit: LimitOpt = 50,
    offset: Annotated[int, typer.Option(help="Skip this many.")] = 0,
    oldest_first: Annotated[bool, typer.Option("--oldest-first", help="Oldest enqueued first.")] = False,
    queue: Annotated[str | None, typer.Option(help="Only jobs of this queue.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only jobs with this tag.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs, newest first."""
    wanted = _state(state)
    jobs = call(lambda q: q.list_jobs(state=wanted, limit=limit, offset=offset, oldest_first=oldest_first,
                                      queue=queue, tag=tag))
    output.print_json([output.job_dict(j) for j in jobs]) if as_json else output.jobs_table(jobs)


@app.command()
def inspect(job_id: Annotated[str, typer.Argument(help="Job id.")], as_json: JsonOpt = False) -> None:
    """Every field of a job, its attempts, and the tail of its output."""
    detail = call(lambda q: q.inspect(job_id))
    output.print_json(output.detail_dict(detail)) if as_json else output.detail_text(detail)


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    attempt: Annotated[int | None, typer.Option(help="Attempt number (default: the latest).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing while the attempt runs.")] = False,
) -> None:
    """Print the output (stdout and stderr) of a job's attempt."""
    from queuectl.follow import print_log

    call(lambda q: print_log(q, job_id, attempt, follow))


# ---- changing -----------------------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(limit: LimitOpt = 50, as_json: JsonOpt = False) -> None:
    """Dead jobs, newest first."""
    jobs = call(lambda q: q.list_jobs(state=JobState.DEAD, limit=limit))
    output.print_json([output.job_dict(j) for j in jobs]) if as_json else output.jobs_table(jobs)


@dlq_app.command("retry")
def dlq_retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Dead job ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead job.")] = False,
) -> None:
    """Send dead jobs back to pending with their attempts reset (their history is kept)."""
    if bool(job_ids) == all_:
        raise ValidationError("give job ids or --all")
    ids = call(lambda q: q.retry_dead(None if all_ else job_ids))
    print(f"{len(ids)} job(s) back in the queue" + (f": {', '.join(ids[:20])}" if ids else ""))


OlderOpt = Annotated[str | None, typer.Option("--older-than", help="Only jobs finished longer ago: 7d, 12h.")]


@dlq_app.command("purge")
def dlq_purge(older_than: OlderOpt = None) -> None:
    """Delete dead jobs."""
    _purge(JobState.DEAD, older_than)


@app.command()
def delete(job_ids: Annotated[list[str], typer.Argument(help="Job ids.")]) -> None:
    """Delete jobs, their history and their logs (not while running)."""
    ids = call(lambda q: q.delete(job_ids))
    print(f"deleted {len(ids)} job(s)")


@app.command()
def purge(
    state: Annotated[str, typer.Option(help="completed, dead or cancelled.")],
    older_than: OlderOpt = None,
) -> None:
    """Delete finished jobs: all of a state, or those finished longer ago than --older-than."""
    _purge(api.parse_state(state), older_than)


def _purge(state: JobState, older_than: str | None) -> None:
    older_s = None if older_than is None else parse_duration_s(older_than, "--older-than")
    ids = call(lambda q: q.purge(state, older_than_s=older_s))
    print(f"purged {len(ids)} {state.value} job(s)")


@config_app.command("list")
def config_list(as_json: JsonOpt = False) -> None:
    """Every key with the value in force."""
    items = call(lambda q: q.config_list())
    if as_json:
        output.print_json({k: {"value": i.value, "set": i.stored, "source": i.source} for k, i in items.items()})
    else:
        output.config_text(items, {k: key.help for k, key in config.KEYS.items()},
                           {k: config.env_name(key) for k, key in config.KEYS.items()})


@config_app.command("get")
def config_get(key: Annotated[str, typer.Argument(help="e.g. max-retries")]) -> None:
    """Print one value."""
    print(call(lambda q: q.config_get(key)))


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(key: Annotated[str, typer.Argument(help="e.g. max-retries")],
               value: Annotated[str, typer.Argument(help="e.g. 5")]) -> None:
    """Store a value; running engines use it from their next decision."""
    name, raw = call(lambda q: q.config_set(key, value))
    print(f"{name} = {raw}")


@config_app.command("unset")
def config_unset(key: Annotated[str, typer.Argument(help="e.g. max-retries")]) -> None:
    """Back to the default."""
    name = call(lambda q: q.config_unset(key))
    print(f"{name} = {config.KEYS[name].default} (default)")


def _dashboard_server() -> Any:
    """queuectl.web.server, or one clear error if the `dashboard` extra is not installed."""
    try:
        from queuectl.web import server
    except ImportError as exc:
        raise QueueCtlError(f"the dashboard needs its optional dependencies: pip install 'queuectl[dashboard]' "
                            f"({exc})") from None
    return server


# Registered on `app` as they are imported: queue, pause, resume, cancel, wait, cron, webhook; stats, top, dashboard.
from queuectl import cli_sched, cli_watch  # noqa: E402, F401


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error ends as one line on stderr and an exit code (2 usage, 1 operation failed)."""
    global _command_given
    argv = sys.argv[1:] if argv is None else argv
    # click drops `--`, but `enqueue` must know whether its words came after it (a command) or not (JSON).
    _command_given = "enqueue" in argv and "--" in argv[argv.index("enqueue") :]
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="queuectl", standalone_mode=False)
    except QueueCtlError as exc:
        return report(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return report("interrupted", 130)
    except BrokenPipeError:
        return 1
    except UnicodeEncodeError as exc:
        if exc.encoding.replace("-", "").lower() != "utf8" or not 0xD800 <= ord(exc.object[exc.start]) <= 0xDFFF:
            return report(f"internal error: {exc!r}", 1)  # not input: an output that cannot show some text, say
        # An argument with bytes that are not UTF-8, on its way to the store.
        return report(f"'{one_line(exc.object, 80)}' is not valid UTF-8 text: {not_utf8(exc)}", 2)
    except Exception as exc:
        message = getattr(exc, "format_message", None)
        if message is None:  # not a usage error: a bug. Still one line, and say where to look.
            return report(f"internal error: {exc!r}", 1)
        hint = ""
        usage_ctx = getattr(exc, "ctx", None)
        if usage_ctx is not None:
            hint = f" (see '{usage_ctx.command_path} --help')"
        code = getattr(exc, "exit_code", 2)
        return report(f"{message()}{hint}" if message() else "aborted", code if code else 1)
    return result if isinstance(result, int) else 0

