"""Settings: defaults < stored config (database) < QUEUECTL_* environment. Validated in one place.

Stored config lives in the database so that `config set` in one shell reaches a running engine at its
next decision without a restart.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from queuectl.errors import ValidationError
from queuectl.timefmt import parse_duration_s


def _non_negative_int(raw: str, key: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{key} must be a whole number >= 0; got {raw!r}") from None
    if value < 0:
        raise ValidationError(f"{key} must be a whole number >= 0; got {raw!r}")
    return value


def _backoff_base(raw: str, key: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{key} must be a number >= 1; got {raw!r}") from None
    if not math.isfinite(value) or value < 1 or value > 1000:
        raise ValidationError(f"{key} must be a number from 1 to 1000; got {raw!r}")
    return value


def _duration(raw: str, key: str) -> float:
    return parse_duration_s(raw, key)


def _optional_duration(raw: str, key: str) -> float | None:
    if raw.strip().lower() in {"none", "off", "0", ""}:
        return None
    value = parse_duration_s(raw, key)
    if value <= 0:
        raise ValidationError(f"{key} must be > 0, or none; got {raw!r}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def _size_bytes(raw: str, key: str) -> int:
    text = raw.strip().lower()
    number = text.rstrip("abgikmB")
    unit = text[len(number):].strip()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _SIZE_UNITS or not math.isfinite(value * _SIZE_UNITS.get(unit, 1)) or value < 0:
        raise ValidationError(f"{key} must be a size like 0, 500000, 64MiB or 1GiB; got {raw!r}")
    return int(value * _SIZE_UNITS[unit])


def _fraction(raw: str, key: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{key} must be a number from 0 to 1; got {raw!r}") from None
    if not 0 <= value <= 1:
        raise ValidationError(f"{key} must be a number from 0 to 1; got {raw!r}")
    return value


def _hook(raw: str, key: str) -> str:
    from queuectl import hooks

    try:
        return hooks.validate(raw)
    except ValidationError as exc:
        raise ValidationError(f"{key}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    field: str
    default: str
    parse: Callable[[str, str], Any]
    help: str


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("max-retries", "max_retries", "3", _non_negative_int,
            "retries after the first attempt before a job goes to the dead-letter queue"),
        Key("backoff-base", "backoff_base", "2", _backoff_base,
            "retry k waits backoff-base ^ k seconds"),
        Key("backoff-max", "backoff_max_s", "1h", _duration, "cap on one retry delay"),
        Key("retry-jitter", "retry_jitter", "0", _fraction,
            "random extra delay, as a fraction of the delay (0 = off)"),
        Key("job-timeout", "job_timeout_s", "none", _optional_duration,
            "default per-attempt timeout for jobs without their own (none = no limit)"),
        Key("kill-grace", "kill_grace_s", "5s", _duration,
            "time between SIGTERM and SIGKILL when a job is timed out or stopped"),
        Key("log-max-bytes", "log_max_bytes", "100MiB", _size_bytes,
            "largest log file per attempt; keeps its head and newest tail (0 = unlimited)"),
        Key("retain-completed", "retain_completed_s", "none", _optional_duration,
            "engines delete completed jobs (and their logs) this long after they finished (none = keep)"),
        Key("retain-dead", "retain_dead_s", "none", _optional_duration,
            "the same for dead jobs, the dead-letter queue (none = keep)"),
        Key("retain-cancelled", "retain_cancelled_s", "none", _optional_duration,
            "the same for cancelled jobs (none = keep)"),
        Key("on-success", "on_success", "", _hook,
            "shell command run when a job completes; placeholders like {id} (see README: finish hooks)"),
        Key("on-failure", "on_failure", "", _hook, "shell command run when an attempt fails and will be retried"),
        Key("on-dead", "on_dead", "", _hook, "shell command run when a job's retries are spent"),
        Key("claim-ahead-below", "claim_ahead_below_s", "100ms", _duration,
            "engines claim jobs ahead of their workers while recent jobs took less than this on average (0 = never)"),
    )
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    max_retries: int = 3
    backoff_base: float = 2.0
    backoff_max_s: float = 3600.0
    retry_jitter: float = 0.0
    job_timeout_s: float | None = None
    kill_grace_s: float = 5.0
    log_max_bytes: int = 100 << 20
    #: Finished jobs older than these are deleted by the engines' retention sweep (None = kept).
    retain_completed_s: float | None = None
    retain_dead_s: float | None = None
    retain_cancelled_s: float | None = None
    #: Finish hook templates ("" = none).
    on_success: str = ""
    on_failure: str = ""
    on_dead: str = ""
    #: Jobs are claimed ahead of the workers while recent ones ran shorter than this on average (0: never).
    claim_ahead_below_s: float = 0.1


def canonical_key(name: str) -> Key:
    """Accept max-retries, max_retries, MAX_RETRIES."""
    key = KEYS.get(name.strip().lower().replace("_", "-"))
    if key is None:
        raise ValidationError(f"unknown config key {name!r}; known keys: {', '.join(KEYS)}")
    return key


def validate(name: str, raw: str) -> tuple[Key, str]:
    """The canonical key and the value as it will be stored; raises ValidationError for a bad value."""
    key = canonical_key(name)
    key.parse(raw, key.name)
    return key, raw.strip()


def env_name(key: Key) -> str:
    return "QUEUECTL_" + key.field.upper().removesuffix("_S")


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The QUEUECTL_<KEY> variables set, by key, each checked: a bad one is the user's mistake, refused in one line
    naming the variable (an engine refuses to start rather than run on defaults)."""
    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for key in KEYS.values():
        raw = environ.get(env_name(key))
        if raw is not None:
            try:
                key.parse(raw, key.name)
            except ValidationError as exc:
                raise ValidationError(f"{env_name(key)}: {exc}") from None
            found[key.name] = raw.strip()
    return found


def unusable(stored: Mapping[str, str]) -> dict[str, str]:
    """Stored values that cannot be used, by key, and why: only something other than `config set` (which checks
    every value) writes them, e.g. a hand-edited database or a newer queuectl's value."""
    found: dict[str, str] = {}
    for name, raw in stored.items():
        key = KEYS.get(name)
        if key is None:
            continue
        if not isinstance(raw, str):  # SQLite keeps a BLOB or a number in a TEXT column of a hand-edited row
            found[name] = f"{name} is stored as {type(raw).__name__}, not text"
            continue
        try:
            key.parse(raw, key.name)
        except ValidationError as exc:
            found[name] = str(exc)
    return found


def resolve(stored: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, overridden by stored values, overridden by QUEUECTL_* environment variables (see in_force). A
    stored value that cannot be used (see unusable) leaves its key at the default; the others still apply."""
    chosen = in_force(stored, environ)
    return Settings(**{key.field: key.parse(chosen[name].value, name) for name, key in KEYS.items()})


class InForce(NamedTuple):
    value: str
    #: Where the value comes from: "env" (QUEUECTL_<KEY>), "set" (stored) or "default".
    source: str
    #: Whether a usable value is stored (under an environment override, too).
    stored: bool


def in_force(stored: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, InForce]:
    """Every key: the value in force in this process, and where it comes from."""
    overrides, bad = env_overrides(environ), unusable(stored)
    shown: dict[str, InForce] = {}
    for name, key in KEYS.items():
        usable = name in stored and name not in bad
        if name in overrides:
            shown[name] = InForce(overrides[name], "env", usable)
        elif usable:
            shown[name] = InForce(stored[name], "set", True)
        else:
            shown[name] = InForce(key.default, "default", False)
    return shown

