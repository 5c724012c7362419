"""Parsing and showing durations and points in time. Internally every time is Unix seconds (float, UTC)."""

from __future__ import annotations

import datetime as dt
import math
import re

from queuectl.errors import ValidationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


#: The longest duration accepted anywhere (a timeout, a delay, a retention, a grace period): longer is a typo or
#: garbage from a script (1e300 s printed as a 300-digit number of days), never a plan.
MAX_DURATION_S = 100 * 365.25 * 86400


def parse_duration_s(value: object, what: str) -> float:
    """Seconds from 12, 1.5, "30s", "5m", "2h", "7d". Negative, NaN, infinite or past-100-years values are
    refused."""
    if isinstance(value, bool):
        raise ValidationError(f"{what} must be a number of seconds or a duration like 30s, 5m, 2h; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValidationError(f"{what} must be a number of seconds or a duration like 30s, 5m, 2h; got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(f"{what} must be a finite number of seconds >= 0; got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValidationError(f"{what} must be at most 100 years; got {value!r}")
    return seconds


def parse_time(value: object, what: str) -> float:
    """Unix seconds from an ISO-8601 string (naive means UTC) or a number of Unix seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValidationError(f"{what} must be an ISO-8601 time; got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be an ISO-8601 time like 2026-01-31T12:00:00Z; got {value!r}")
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValidationError(f"{what} must be an ISO-8601 time like 2026-01-31T12:00:00Z; got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def iso(ts: float | None) -> str | None:
    """ISO-8601 UTC with millisecond precision and a Z, or None."""
    if ts is None:
        return None
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human_duration(seconds: float | None) -> str:
    """Short human form: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    if seconds is None:
        return "-"
    # Each bound is where the form below it would round up to the next one's first value ("1000ms", "60.0s").
    if seconds < 0.9995:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(max(seconds, 60)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
