"""Finish hooks: shell command templates (config keys on-success, on-failure, on-dead) run when a job ends.

A template names job facts as placeholders, `notify-send "queuectl: {id} failed"`. They are never spliced into the
shell text: each becomes a reference to an environment variable that the shell expands itself, so a job id or an
error text holding `"; rm -rf ~`, `$(...)` or backticks stays data. The reference is quoted to suit where the
placeholder sits (bare, inside "...", inside '...'), found by a small scanner of POSIX shell quoting. Should it
misjudge a construct it does not know (a heredoc, quotes nested in `$(...)`, bash's $'...', which /bin/sh need not
support), the worst outcome is a value split into words, never one run as code: the result of a parameter expansion
is not parsed again by the shell.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from queuectl.errors import ValidationError
from queuectl.models import Outcome
from queuectl.runner import run_command

#: Placeholder name -> the environment variable holding its value.
PLACEHOLDERS: dict[str, str] = {
    "id": "QUEUECTL_HOOK_JOB_ID",
    "event": "QUEUECTL_HOOK_EVENT",
    "state": "QUEUECTL_HOOK_STATE",
    "attempt": "QUEUECTL_HOOK_ATTEMPT",
    "exit_code": "QUEUECTL_HOOK_EXIT_CODE",
    "error": "QUEUECTL_HOOK_ERROR",
    "command": "QUEUECTL_HOOK_COMMAND",
    "queue": "QUEUECTL_HOOK_QUEUE",
    "log": "QUEUECTL_HOOK_LOG",
}

#: Placeholder name -> one line for `--help` and the docs.
PLACEHOLDER_HELP: dict[str, str] = {
    "id": "the job's id",
    "event": "why the hook runs: success, failure, dead or cancelled",
    "state": "the job's state after this attempt",
    "attempt": "the number of the attempt that just ended",
    "exit_code": "the attempt's exit code (empty if it has none: timed out, could not start)",
    "error": "the attempt's error text (empty on success)",
    "command": "the job's shell command",
    "queue": "the job's queue",
    "log": "path of the attempt's log file",
}

#: Cap on one variable's value in bytes: the kernel limits a single environment string (128 KiB on Linux), and a
#: huge error text must not make the hook fail to start.
MAX_VALUE_BYTES = 64 * 1024

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE, _DOUBLE, _SINGLE, _COMMENT = range(4)
#: How a variable is referenced in each quoting state; in '...' the quote is closed around it and reopened.
_REFERENCE = {
    _BARE: '"${VAR}"',
    _COMMENT: '"${VAR}"',
    _DOUBLE: "${VAR}",
    _SINGLE: "'\"${VAR}\"'",
}
_WORD_BREAK = " \t\n;&|()<>"


def _unknown(name: str) -> ValidationError:
    known = ", ".join("{" + n + "}" for n in PLACEHOLDERS)
    return ValidationError(
        f"unknown placeholder {{{name}}} in hook; known: {known} (write {{{{ and }}}} for a literal brace)"
    )


def render(template: str) -> str:
    """The shell text to run: each {name} replaced by a quoted reference to its variable, {{ and }} by braces.
    Braces that do not enclose a name (`awk '{print $1}'`) stay as they are."""
    if "\0" in template:
        raise ValidationError("hook command must not contain a NUL byte")
    out: list[str] = []
    state, i, n = _BARE, 0, len(template)
    while i < n:
        c = template[i]
        if c in "{}":
            if template.startswith(c * 2, i):
                out.append(c)
                i += 2
                continue
            end = template.find("}", i + 1) if c == "{" else -1
            if end > 0 and _NAME.fullmatch(name := template[i + 1 : end]):
                if name not in PLACEHOLDERS:
                    raise _unknown(name)
                out.append(_REFERENCE[state].replace("VAR", PLACEHOLDERS[name]))
                i = end + 1
                continue
        elif state == _SINGLE:
            if c == "'":
                state = _BARE
        elif c == "\\" and i + 1 < n and state != _COMMENT:
            # The escaped character is data: neither a quote that changes state nor the start of a placeholder.
            out.append(template[i : i + 2])
            i += 2
            continue
        elif state == _DOUBLE:
            if c == '"':
                state = _BARE
        elif state == _COMMENT:
            if c == "\n":
                state = _BARE
        elif c == "'":
            state = _SINGLE
        elif c == '"':
            state = _DOUBLE
        elif c == "#" and (i == 0 or template[i - 1] in _WORD_BREAK):
            # Quotes in a comment ("# don't") do not open anything; the next line starts bare again.
            state = _COMMENT
        out.append(c)
        i += 1
    return "".join(out)


def validate(template: str) -> str:
    """The template stripped, after checking its placeholders; "" means no hook."""
    text = template.strip()
    if text:
        render(text)
    return text


def _clean(value: str) -> str:
    try:
        raw = value.encode("utf-8", "surrogateescape")  # bytes of a file name decoded by os.fsdecode survive
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "replace")
    raw = raw.replace(b"\0", b"")  # an environment string ends at its first NUL: the process could not start
    if len(raw) > MAX_VALUE_BYTES:
        cut = MAX_VALUE_BYTES
        while cut and raw[cut] & 0xC0 == 0x80:  # never end on half a character
            cut -= 1
        raw = raw[:cut]
    return raw.decode("utf-8", "surrogateescape")


def hook_env(
    *, job_id: str, event: str, state: str, attempt: int, exit_code: int | None, error: str | None, command: str,
    queue: str, log_path: str | None,
) -> dict[str, str]:
    """The QUEUECTL_HOOK_* variables for one finished attempt."""
    values = {
        "id": job_id, "event": event, "state": state, "attempt": str(attempt),
        "exit_code": "" if exit_code is None else str(exit_code), "error": error or "", "command": command,
        "queue": queue, "log": log_path or "",
    }
    return {PLACEHOLDERS[name]: _clean(value) for name, value in values.items()}


def _write_log(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write(text)


async def run_hook(
    template: str, env: Mapping[str, str], *, log_path: Path, timeout_s: float = 60.0, cwd: str = "/",
) -> Outcome:
    """Run a hook once, its output in log_path. Never raises for the hook's faults, a bad template included (the
    config is checked when loaded, but a hook must not take down the worker that finished a job)."""
    try:
        command = render(template)
    except ValidationError as exc:
        now = time.time()
        reason = f"invalid hook: {exc}"
        await asyncio.to_thread(_write_log, log_path, f"queuectl: {reason}\n")
        return Outcome(exit_code=None, error=reason, output_tail=reason, log_path=str(log_path), started_at=now,
                       finished_at=now)
    full_env = {**os.environ, **{k: v.replace("\0", "") for k, v in env.items()}}
    return await run_command(command, cwd=cwd, env=full_env, log_path=log_path, timeout_s=timeout_s, kill_grace_s=2.0)
