"""Cron expressions: parse the 5-field form (or 6 with seconds first) and find the next due time in local time.

parse() turns text into a CronExpr or raises CronError naming the bad field; next_after() gives the first
matching Unix time strictly after a given one. Pure: no I/O, no clock reads, only the standard library.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from queuectl.errors import ValidationError

_MAX_LEN = 200
# Feb 29 on a given weekday can be 40 years apart (2100 is not a leap year); anything that has not matched
# by then never will, short of a time zone whose wall clock skips the matching time every year.
_SEARCH_YEARS = 50
_NUMBER = re.compile(r"[0-9]+")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_NAMES = {name: i for i, name in enumerate(_MONTHS, 1)}
_WEEKDAY_NAMES = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# Longest each month can be (Feb 29 in leap years): a day of month above all of these can never match.
_MONTH_MAX_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS_HINT = "5 fields (minute hour day-of-month month day-of-week) or 6 (second first)"


class CronError(ValidationError):
    """A cron expression that is malformed, out of range, or can never match."""


class _Field(NamedTuple):
    name: str
    lo: int
    #: Largest value that may be written (7 for Sunday in the day-of-week field).
    hi: int
    #: Where `*` and `a/n` stop: day-of-week 7 is only an alias, so `*/2` or `1/2` must not add Sunday twice.
    last: int
    names: dict[str, int] | None = None


_SECOND = _Field("second", 0, 59, 59)
_FIELDS = (
    _SECOND,
    _Field("minute", 0, 59, 59),
    _Field("hour", 0, 23, 23),
    _Field("day-of-month", 1, 31, 31),
    _Field("month", 1, 12, 12, _MONTH_NAMES),
    _Field("day-of-week", 0, 7, 6, _WEEKDAY_NAMES),
)


@dataclass(frozen=True)
class CronExpr:
    """A parsed cron expression. Days of week count from 0 = Sunday; 5-field expressions have seconds {0}."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    #: False when the field starts with `*` (`*` or `*/n`), as Vixie cron decides whether the OR rule applies.
    dom_restricted: bool
    dow_restricted: bool
    has_seconds: bool


class _Bad(Exception):
    """A problem with one field; parse() adds the expression and the field to the message."""


def _value(field: _Field, token: str) -> int:
    if _NUMBER.fullmatch(token):
        value = int(token)
        if not field.lo <= value <= field.hi:
            raise _Bad(f"{token} is out of range {field.lo}-{field.hi}")
        return value
    # isascii() first: str.upper() would turn non-ASCII look-alikes (U+017F long s) into ASCII.
    if field.names is not None and token.isascii() and token.upper() in field.names:
        return field.names[token.upper()]
    if not token:
        raise _Bad("a number is missing")
    if field.names is None:
        raise _Bad(f"{token!r} is not a number")
    first, *_, last = field.names
    raise _Bad(f"{token!r} is not a number or a name {first}-{last}")


def _parse_field(field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _Bad("empty list item")
        base, slash, step_text = item.partition("/")
        if base == "*":
            start, end = field.lo, field.last
        else:
            first, dash, last = base.partition("-")
            start = _value(field, first)
            # max(): `7/2` is just Sunday rather than a reversed range.
            end = _value(field, last) if dash else max(start, field.last) if slash else start
            if start > end:
                raise _Bad(f"range {base} is reversed (start after end)")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text):
                raise _Bad(f"step {step_text!r} is not a whole number")
            step = int(step_text)
            span = field.last - field.lo + 1
            if not 1 <= step <= span:
                # `*/90` for minutes usually means "every 90 minutes", which cron cannot express.
                raise _Bad(f"step {step_text} is out of range 1-{span}")
        values.update(range(start, end + 1, step))
    if 7 in values and field.names is _WEEKDAY_NAMES:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def parse(text: str) -> CronExpr:
    """A CronExpr from `minute hour day-of-month month day-of-week`, 6 fields with seconds first, or a macro."""
    if not isinstance(text, str):
        raise CronError(f"invalid cron expression {text!r}: must be a string")
    if len(text) > _MAX_LEN:
        raise CronError(f"invalid cron expression {text[:40] + '...'!r}: longer than {_MAX_LEN} characters")
    stripped = text.strip()
    if stripped.startswith("@"):
        macro = _MACROS.get(stripped.lower())
        if macro is None:
            raise CronError(f"invalid cron expression {text!r}: unknown macro; expected one of {', '.join(_MACROS)}")
        stripped = macro
    parts = stripped.split()
    if len(parts) not in {5, 6}:
        raise CronError(f"invalid cron expression {text!r}: expected {_FIELDS_HINT}, got {len(parts)}")
    has_seconds = len(parts) == 6
    fields = _FIELDS if has_seconds else _FIELDS[1:]
    sets: dict[str, frozenset[int]] = {} if has_seconds else {_SECOND.name: frozenset({0})}
    for field, part in zip(fields, parts, strict=True):
        try:
            sets[field.name] = _parse_field(field, part)
        except _Bad as exc:
            raise CronError(f"invalid cron expression {text!r}: {field.name} field {part!r}: {exc}") from None
    dom_text, month_text, dow_text = parts[-3:]
    expr = CronExpr(
        text=text,
        seconds=sets["second"],
        minutes=sets["minute"],
        hours=sets["hour"],
        days_of_month=sets["day-of-month"],
        months=sets["month"],
        days_of_week=sets["day-of-week"],
        dom_restricted=not dom_text.startswith("*"),
        dow_restricted=not dow_text.startswith("*"),
        has_seconds=has_seconds,
    )
    # Under the OR rule any weekday matches; otherwise some listed day must exist in some listed month (then,
    # over the years, it falls on every weekday). Catching this here rejects it when the entry is created.
    and_rule = not (expr.dom_restricted and expr.dow_restricted)
    if and_rule and all(day > _MONTH_MAX_DAYS[month] for day in expr.days_of_month for month in expr.months):
        raise CronError(
            f"invalid cron expression {text!r}: never matches: no day in day-of-month field {dom_text!r}"
            f" occurs in month field {month_text!r}"
        )
    return expr


def _day_matches(expr: CronExpr, year: int, month: int, day: int) -> bool:
    dom_ok = day in expr.days_of_month
    dow_ok = dt.date(year, month, day).isoweekday() % 7 in expr.days_of_week
    if expr.dom_restricted and expr.dow_restricted:
        return dom_ok or dow_ok
    return dom_ok and dow_ok


def _ceil(values: tuple[int, ...], at_least: int) -> int | None:
    i = bisect.bisect_left(values, at_least)
    return values[i] if i < len(values) else None


def _next_wall(expr: CronExpr, start: tuple[int, int, int, int, int, int], last_year: int) -> dt.datetime | None:
    """The first local wall-clock time at or after `start` (fields may overflow by one) that the fields match."""
    months, hours, minutes, seconds = (tuple(sorted(s)) for s in (expr.months, expr.hours, expr.minutes, expr.seconds))
    year, month, day, hour, minute, second = start
    # A field with nothing left carries into the next larger one, resetting the smaller ones; whole months,
    # hours and minutes are skipped at once, days one by one (at most 31 a month).
    while year <= last_year:
        m = _ceil(months, month)
        if m is None:
            year, month, day, hour, minute, second = year + 1, months[0], 1, 0, 0, 0
            continue
        if m != month:
            month, day, hour, minute, second = m, 1, 0, 0, 0
        if day > calendar.monthrange(year, month)[1]:
            month, day, hour, minute, second = month + 1, 1, 0, 0, 0
            continue
        if not _day_matches(expr, year, month, day):
            day, hour, minute, second = day + 1, 0, 0, 0
            continue
        h = _ceil(hours, hour)
        if h is None:
            day, hour, minute, second = day + 1, 0, 0, 0
            continue
        if h != hour:
            hour, minute, second = h, 0, 0
        mi = _ceil(minutes, minute)
        if mi is None:
            hour, minute, second = hour + 1, 0, 0
            continue
        if mi != minute:
            minute, second = mi, 0
        s = _ceil(seconds, second)
        if s is None:
            minute, second = minute + 1, 0
            continue
        return dt.datetime(year, month, day, hour, minute, s)
    return None


def next_after(expr: CronExpr, after: float) -> float:
    """The first time strictly after Unix time `after` that matches, as Unix time, in the local time zone.

    A wall-clock time skipped by a DST change does not fire; one repeated by it fires once, at its first pass.
    """
    start = dt.datetime.fromtimestamp(math.floor(after) + 1)
    last_year = min(start.year + _SEARCH_YEARS, dt.MAXYEAR)
    at = (start.year, start.month, start.day, start.hour, start.minute, start.second)
    while (wall := _next_wall(expr, at, last_year)) is not None:
        # Naive timestamp() takes fold=0, the first pass of a repeated time; a time in a DST gap does not come
        # back unchanged from fromtimestamp(). A first pass before `after` means `after` is in the second one.
        when = wall.timestamp()
        if when > after and dt.datetime.fromtimestamp(when) == wall:
            return when
        at = (wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second + 1)
    raise CronError(f"invalid cron expression {expr.text!r}: never matches (searched {_SEARCH_YEARS} years ahead)")
