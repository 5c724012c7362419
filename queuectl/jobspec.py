"""Turning user input (a JSON object, JSON Lines, or CLI flags) into validated NewJob values. No I/O.

Imports nothing heavy: the enqueue fast path (fastpath.py) uses it before asyncio or typer are loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from queuectl.errors import ValidationError, not_utf8
from queuectl.timefmt import parse_duration_s, parse_time


class NewJob(NamedTuple):
    """A validated job as given to enqueue, before the store assigns state and times.
    (A NamedTuple, not a dataclass like models.Job: this module is on the enqueue fast path.)"""

    #: Unique id, given by the user or generated.
    id: str
    #: Shell command text, run with /bin/sh -c.
    command: str
    #: When the job becomes due (Unix s).
    run_at: float
    #: Directory the command runs in (captured at enqueue).
    cwd: str
    #: Higher runs first.
    priority: int = 0
    #: Retries after the first attempt; None means "the configured default at decision time".
    max_retries: int | None = None
    #: Per-attempt limit in seconds; None means "the configured default job-timeout".
    timeout_s: float | None = None
    #: Named queue.
    queue: str = "default"
    #: While a job with this key is active, another enqueue with it is refused (or returns that job).
    unique_key: str | None = None
    #: Extra environment variables, as (name, value) pairs.
    env: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    #: Ids of jobs that must complete before this one runs.
    after: tuple[str, ...] = ()
    #: The cron entry that made this job.
    cron: str | None = None

#: File-name safe (the id names the job's log directory), readable, bounded.
#: Patterns end in \Z, not $: $ also matches before a final newline, and "abc\n" would pass.
JOB_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,127}\Z")
MAX_PRIORITY = 1_000_000
MAX_RETRIES = 1_000
#: The command is one argument of `/bin/sh -c`, and Linux refuses to exec an argument of 128 KiB or more
#: (MAX_ARG_STRLEN, with its NUL): a longer command could never start. One byte less again: the runner puts a space
#: before a command that starts with "-" or "+".
MAX_COMMAND_BYTES = (128 << 10) - 2
#: 9999-12-31T00:00:00Z: timefmt.iso() can show any time before it.
MAX_RUN_AT = 253402214400.0

#: Fields a job object may carry. state/attempts/created_at/updated_at are accepted so that the job objects of
#: the original assignment can be pasted as they are; they must describe a fresh job and are otherwise ignored.
_SETTABLE = {"id", "command", "priority", "max_retries", "run_at", "delay", "timeout", "timeout_s", "cwd", "queue",
             "unique_key", "env", "tags", "after"}
#: Queue names and tags: like job ids, shorter.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,63}\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_TAGS = 32
MAX_AFTER = 10_000
MAX_ENV_BYTES = 64 << 10
_IGNORED = {"state", "attempts", "created_at", "updated_at"}


def new_job_id() -> str:
    """12 hex characters: short to type, 48 random bits (a collision is ~1e-5 likely at a million jobs)."""
    return os.urandom(6).hex()


def check_job_id(value: object) -> str:
    if not isinstance(value, str) or not JOB_ID.match(value) or value in {".", ".."}:
        raise ValidationError(
            f"job id must be 1-128 characters of letters, digits and _.:@+- (not starting with one of .:@+-); "
            f"got {value!r}"
        )
    return value


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ValidationError(
            f"{what} must be 1-64 characters of letters, digits and _.:@+- (not starting with one of .:@+-); "
            f"got {value!r}")
    return value


def check_unique_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value or len(value) > 256:
        raise ValidationError(f"unique_key must be a non-empty string of at most 256 characters; got {value!r}")
    return check_text(value, "unique_key")


def parse_env_entry(entry: str) -> tuple[str, str]:
    """One --env KEY=VALUE."""
    name, sep, value = entry.partition("=")
    if not sep:
        raise ValidationError(f"--env takes KEY=VALUE; got {entry!r} (no '=')")
    return check_env(name, value)


def check_env(name: object, value: object) -> tuple[str, str]:
    if not isinstance(name, str) or not ENV_NAME.match(name):
        raise ValidationError(f"environment variable name must be letters, digits and _ (not starting with a "
                              f"digit); got {name!r}")
    if not isinstance(value, str) or "\x00" in value:
        raise ValidationError(f"environment variable {name} must be a string without NUL bytes; got {value!r}")
    return name, check_text(value, f"environment variable {name}")


def _env_field(raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValidationError(f"env must be an object of NAME: value; got {type(raw).__name__}")
    pairs = tuple(check_env(k, v) for k, v in raw.items())
    if sum(len(k) + len(v) for k, v in pairs) > MAX_ENV_BYTES:
        raise ValidationError(f"env is larger than {MAX_ENV_BYTES} bytes")
    return pairs


def _list_field(raw: object, what: str) -> list[object]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list):
        raise ValidationError(f"{what} must be a list (or a comma-separated string); got {type(raw).__name__}")
    return raw


def _tags_field(raw: object) -> tuple[str, ...]:
    tags = tuple(dict.fromkeys(check_name(t, "a tag") for t in _list_field(raw, "tags")))
    if len(tags) > MAX_TAGS:
        raise ValidationError(f"a job has at most {MAX_TAGS} tags; got {len(tags)}")
    return tags


def _after_field(raw: object, job_id: str) -> tuple[str, ...]:
    after = tuple(dict.fromkeys(check_job_id(i) for i in _list_field(raw, "after")))
    if len(after) > MAX_AFTER:
        raise ValidationError(f"a job runs after at most {MAX_AFTER} jobs; got {len(after)}")
    if job_id in after:
        raise ValidationError(f"job {job_id!r} cannot run after itself (a dependency cycle)")
    return after


def _int_field(obj: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be a whole number; got {value!r}")
    if not low <= value <= high:
        raise ValidationError(f"{name} must be from {low} to {high}; got {value!r}")
    return value


def check_command(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"command must be a string; got {type(value).__name__}")
    if not value.strip():
        raise ValidationError("command must not be empty")
    if "\x00" in value:
        raise ValidationError("command must not contain NUL bytes")
    if len(check_text(value, "command").encode()) > MAX_COMMAND_BYTES:
        raise ValidationError(f"command is longer than {MAX_COMMAND_BYTES} bytes, the most that Linux passes to "
                              "/bin/sh -c (put a long script in a file and run that)")
    return value


def check_text(value: str, what: str) -> str:
    """Both stores keep text as UTF-8. What cannot be encoded so: a command line's bytes that are not UTF-8
    (Python hands them over as lone surrogates U+DC80-U+DCFF: a Latin-1 file name, a directory named so) and
    JSON's unpaired \\uD800-\\uDFFF escapes. Refused here, in one line, instead of failing in the store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid UTF-8 text: {not_utf8(exc)}") from None
    return value


def from_mapping(obj: object, *, now: float | None = None, cwd: str | None = None) -> NewJob:
    """Validate one job object. Raises ValidationError naming the first problem."""
    if not isinstance(obj, dict):
        raise ValidationError(f"a job must be a JSON object; got {type(obj).__name__}")
    unknown = sorted(set(obj) - _SETTABLE - _IGNORED)
    if unknown:
        raise ValidationError(
            f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(_SETTABLE))}"
        )
    if obj.get("state", "pending") != "pending":
        raise ValidationError(f"a new job's state can only be 'pending'; got {obj['state']!r}")
    if obj.get("attempts", 0) != 0:
        raise ValidationError(f"a new job's attempts can only be 0; got {obj['attempts']!r}")
    if "command" not in obj:
        raise ValidationError("missing field 'command'")
    now = time.time() if now is None else now
    job_id = check_job_id(obj["id"]) if obj.get("id") is not None else new_job_id()
    if obj.get("run_at") is not None and obj.get("delay") is not None:
        raise ValidationError("give either run_at or delay, not both")
    run_at = now
    if obj.get("run_at") is not None:
        run_at = parse_time(obj["run_at"], "run_at")
    elif obj.get("delay") is not None:
        run_at = now + parse_duration_s(obj["delay"], "delay")
    if not run_at < MAX_RUN_AT:
        given = obj.get("run_at", obj.get("delay"))
        raise ValidationError(f"run_at must be before 9999-12-31T00:00:00Z; got {given!r}")
    if "timeout" in obj and "timeout_s" in obj:
        raise ValidationError("give either timeout or timeout_s, not both")
    raw_timeout = obj.get("timeout", obj.get("timeout_s"))
    timeout_s = None
    if raw_timeout is not None:
        timeout_s = parse_duration_s(raw_timeout, "timeout")
        if timeout_s <= 0:
            raise ValidationError(f"timeout must be > 0 seconds; got {raw_timeout!r}")
    job_cwd = obj["cwd"] if "cwd" in obj else cwd if cwd is not None else current_dir()
    if not isinstance(job_cwd, str) or not os.path.isabs(job_cwd) or "\x00" in job_cwd:
        raise ValidationError(f"cwd must be an absolute path (without NUL bytes); got {job_cwd!r}")
    check_text(job_cwd, "cwd (the directory the command runs in)")
    return NewJob(
        id=job_id,
        command=check_command(obj["command"]),
        priority=_int_field(obj, "priority", 0, MAX_PRIORITY) or 0,
        max_retries=_int_field(obj, "max_retries", 0, MAX_RETRIES),
        run_at=run_at,
        timeout_s=timeout_s,
        cwd=job_cwd,
        queue=check_name(obj.get("queue") or "default", "queue name"),
        unique_key=check_unique_key(obj.get("unique_key")),
        env=_env_field(obj.get("env")),
        tags=_tags_field(obj.get("tags")),
        after=_after_field(obj.get("after"), job_id),
    )


def current_dir() -> str:
    """The directory a job without its own cwd runs in: the one it is enqueued from."""
    try:
        return os.getcwd()
    except OSError as exc:  # the shell's directory was removed under it: not "/" in its place, where `rm -r *` ran
        raise ValidationError(f"the current directory cannot be read ({exc.strerror}: removed?), and a job runs "
                              "where it is enqueued from: cd to another directory, or give the job a cwd") from None


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ValidationError(f"job is not valid JSON: {detail} (a plain command goes after `--`)") from None


def from_json(text: str, *, now: float | None = None, cwd: str | None = None) -> NewJob:
    return from_mapping(_loads(text), now=now, cwd=cwd)


def from_json_lines(lines: Iterable[str], *, now: float | None = None, cwd: str | None = None) -> list[NewJob]:
    """Every non-blank line is one job object; the first bad line refuses the whole batch, naming the line."""
    jobs: list[NewJob] = []
    seen: set[str] = set()
    now = time.time() if now is None else now
    if cwd is None:
        with contextlib.suppress(ValidationError):  # then each job without a cwd of its own says why it cannot
            cwd = current_dir()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            job = from_json(line, now=now, cwd=cwd)
        except ValidationError as exc:
            raise ValidationError(f"line {number}: {exc}") from None
        if job.id in seen:
            raise ValidationError(f"line {number}: duplicate job id {job.id!r} in the batch")
        seen.add(job.id)
        jobs.append(job)
    return jobs


def mapping_from_args(args: list[str], flags: Mapping[str, str], *, command_given: bool) -> dict[str, Any]:
    """The CLI's positional form: one JSON object, or (after `--`, command_given) the command's words: one word
    is shell text as given; several are quoted back together so that each stays one argument. Flags override
    JSON fields."""
    if not command_given:
        if len(args) != 1:
            raise ValidationError(
                "give one JSON object, or the command after `--` (queuectl enqueue -- sleep 2)"
                if args else "missing job: give a JSON object, or the command after `--`")
        obj = _loads(args[0])
        if not isinstance(obj, dict):
            raise ValidationError(f"a job must be a JSON object; got {type(obj).__name__}")
        return {**obj, **flags}
    if not args:
        raise ValidationError("missing command after `--`")
    return {**flags, "command": join_command(args)}


def join_command(words: list[str]) -> str:
    """One word is shell text as given; several are quoted back together so that each stays one argument."""
    return words[0] if len(words) == 1 else shlex.join(words)
