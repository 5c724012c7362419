"""Cron expressions (queuectl/cronexpr.py): the syntax, next_after() in local time, errors, and a brute-force check."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queuectl.cronexpr import CronError, CronExpr, next_after, parse
from queuectl.errors import ValidationError


@pytest.fixture(autouse=True)
def use_tz() -> Iterator[Callable[[str], None]]:
    """Every test runs in TZ=UTC unless it switches zone with the function this yields; TZ is restored after."""
    with pytest.MonkeyPatch.context() as mp:

        def use(name: str) -> None:
            if name != "UTC" and not Path("/usr/share/zoneinfo", name).exists():
                pytest.skip(f"no tz database entry for {name}")
            mp.setenv("TZ", name)
            time.tzset()

        use("UTC")
        yield use
    time.tzset()


def at(local: str) -> float:
    """Unix time of an ISO time; without an offset it is local time."""
    return dt.datetime.fromisoformat(local).timestamp()


def show(when: float) -> str:
    return dt.datetime.fromtimestamp(when).astimezone().isoformat()


def upcoming(text: str, after: str, count: int = 3) -> list[str]:
    expr, when, found = parse(text), at(after), []
    for _ in range(count):
        when = next_after(expr, when)
        found.append(show(when))
    return found


def full(lo: int, hi: int) -> frozenset[int]:
    return frozenset(range(lo, hi + 1))


# --- syntax


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("* * * * *", "minutes", full(0, 59)),
        ("7 * * * *", "minutes", {7}),
        ("10-13 * * * *", "minutes", {10, 11, 12, 13}),
        ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
        ("10-30/10 * * * *", "minutes", {10, 20, 30}),
        ("50/4 * * * *", "minutes", {50, 54, 58}),
        ("1,5,10-12 * * * *", "minutes", {1, 5, 10, 11, 12}),
        ("0-4/2,30 * * * *", "minutes", {0, 2, 4, 30}),
        ("*/60 * * * *", "minutes", {0}),
        ("0 */6 * * *", "hours", {0, 6, 12, 18}),
        ("0 0 * * *", "days_of_month", full(1, 31)),
        ("0 0 */10 * *", "days_of_month", {1, 11, 21, 31}),
        ("0 0 1 JAN,jul,Dec *", "months", {1, 7, 12}),
        ("0 0 1 feb-APR *", "months", {2, 3, 4}),
        ("0 0 1 JAN/3 *", "months", {1, 4, 7, 10}),
        ("0 0 * * *", "days_of_week", full(0, 6)),
        ("0 0 * * MON-FRI", "days_of_week", {1, 2, 3, 4, 5}),
        ("0 0 * * sun,Sat", "days_of_week", {0, 6}),
        ("0 0 * * 7", "days_of_week", {0}),
        ("0 0 * * 5-7", "days_of_week", {5, 6, 0}),
        ("0 0 * * 0-7", "days_of_week", full(0, 6)),
        ("0 0 * * */2", "days_of_week", {0, 2, 4, 6}),
        ("0 0 * * 1/2", "days_of_week", {1, 3, 5}),
        ("0 0 * * 7/2", "days_of_week", {0}),
        ("*/10 * * * * *", "seconds", {0, 10, 20, 30, 40, 50}),
        ("* * * * *", "seconds", {0}),
    ],
)
def test_field_syntax(text: str, field: str, expected: set[int]) -> None:
    assert getattr(parse(text), field) == expected


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        (" @HOURLY\n", "0 * * * *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    assert dataclasses.replace(parse(macro), text=same_as) == parse(same_as)
    assert parse(macro).text == macro


def test_parsed_expression_keeps_its_text_and_flags() -> None:
    expr = parse("  0 9 * * MON-FRI ")
    assert expr.text == "  0 9 * * MON-FRI "
    assert (expr.has_seconds, expr.dom_restricted, expr.dow_restricted) == (False, False, True)
    expr = parse("*/5 0 9 1,15 * *\t")
    assert (expr.has_seconds, expr.dom_restricted, expr.dow_restricted) == (True, True, False)
    assert expr.seconds == {0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55}
    assert expr.minutes == {0}
    assert isinstance(expr, CronExpr)
    # As Vixie cron decides: a field starting with `*` does not count as restricted, even `*/2`.
    assert not parse("0 0 */2 * */2").dom_restricted
    assert not parse("0 0 */2 * */2").dow_restricted


# --- next_after


def test_every_five_minutes_and_strictly_after() -> None:
    assert upcoming("*/5 * * * *", "2026-01-01T10:02:00") == [
        "2026-01-01T10:05:00+00:00",
        "2026-01-01T10:10:00+00:00",
        "2026-01-01T10:15:00+00:00",
    ]
    expr = parse("*/5 * * * *")
    assert show(next_after(expr, at("2026-01-01T10:05:00"))) == "2026-01-01T10:10:00+00:00"
    assert show(next_after(expr, at("2026-01-01T10:04:59.999"))) == "2026-01-01T10:05:00+00:00"
    assert show(next_after(expr, at("2026-01-01T10:05:00.001"))) == "2026-01-01T10:10:00+00:00"


def test_weekdays_at_nine() -> None:
    # 2026-01-02 is a Friday.
    assert upcoming("0 9 * * MON-FRI", "2026-01-02T09:00:00") == [
        "2026-01-05T09:00:00+00:00",
        "2026-01-06T09:00:00+00:00",
        "2026-01-07T09:00:00+00:00",
    ]


def test_hourly_monthly_and_year_end() -> None:
    assert upcoming("@hourly", "2026-12-31T22:30:00") == [
        "2026-12-31T23:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
        "2027-01-01T01:00:00+00:00",
    ]
    assert upcoming("0 0 1 * *", "2026-01-15T00:00:00") == [
        "2026-02-01T00:00:00+00:00",
        "2026-03-01T00:00:00+00:00",
        "2026-04-01T00:00:00+00:00",
    ]


def test_feb_29_is_found_quickly() -> None:
    started = time.perf_counter()
    found = upcoming("0 0 29 2 *", "2096-03-01T00:00:00", count=2)
    assert time.perf_counter() - started < 0.05
    # 2100 is not a leap year.
    assert found == ["2104-02-29T00:00:00+00:00", "2108-02-29T00:00:00+00:00"]


def test_seconds_form() -> None:
    assert upcoming("*/10 * * * * *", "2026-01-01T10:00:05") == [
        "2026-01-01T10:00:10+00:00",
        "2026-01-01T10:00:20+00:00",
        "2026-01-01T10:00:30+00:00",
    ]
    assert upcoming("30 0 12 * * *", "2026-01-01T12:00:30", count=1) == ["2026-01-02T12:00:30+00:00"]
    assert upcoming("* * * * * *", "2026-01-01T23:59:59.5", count=2) == [
        "2026-01-02T00:00:00+00:00",
        "2026-01-02T00:00:01+00:00",
    ]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 13th, and every Friday: 2026-02-06 and 2026-02-13 (a Friday itself, fires once) and 2026-02-20.
    assert upcoming("0 0 13 * FRI", "2026-02-01T00:00:00", count=4) == [
        "2026-02-06T00:00:00+00:00",
        "2026-02-13T00:00:00+00:00",
        "2026-02-20T00:00:00+00:00",
        "2026-02-27T00:00:00+00:00",
    ]
    # With one of them `*`, only the other counts.
    assert upcoming("0 0 13 * *", "2026-02-01T00:00:00", count=1) == ["2026-02-13T00:00:00+00:00"]
    assert upcoming("0 0 * * FRI", "2026-02-07T00:00:00", count=1) == ["2026-02-13T00:00:00+00:00"]
    # `*/n` counts as `*` (Vixie cron): odd days that are also Mondays.
    assert upcoming("0 0 */2 * MON", "2026-01-01T00:00:00", count=2) == [
        "2026-01-05T00:00:00+00:00",
        "2026-01-19T00:00:00+00:00",
    ]


def test_seven_is_sunday() -> None:
    assert upcoming("0 12 * * 7", "2026-01-01T00:00:00", count=2) == upcoming("0 12 * * SUN", "2026-01-01T00:00:00", 2)
    assert upcoming("0 12 * * 7", "2026-01-01T00:00:00", count=1) == ["2026-01-04T12:00:00+00:00"]


def test_never_matching_expression_raises_after_a_bounded_search() -> None:
    # parse() refuses these up front, so build one by hand to exercise next_after()'s own limit.
    expr = dataclasses.replace(parse("0 0 1 2 *"), days_of_month=frozenset({30}))
    started = time.perf_counter()
    with pytest.raises(CronError, match="never matches"):
        next_after(expr, at("2026-01-01T00:00:00"))
    assert time.perf_counter() - started < 1


def test_dst_in_berlin(use_tz: Callable[[str], None]) -> None:
    use_tz("Europe/Berlin")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day.
    assert upcoming("30 2 * * *", "2026-03-28T12:00:00", count=2) == [
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert upcoming("*/30 * * * *", "2026-03-29T01:30:00", count=2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET; the repeated 02:xx times fire once, on their first pass.
    assert upcoming("30 2 * * *", "2026-10-25T00:00:00", count=2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert upcoming("*/30 * * * *", "2026-10-25T01:45:00", count=4) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    second_pass = at("2026-10-25T02:10:00+01:00")
    assert show(next_after(parse("*/30 * * * *"), second_pass)) == "2026-10-25T03:00:00+01:00"
    # The last Sunday of March at 02:30 never exists in Berlin.
    with pytest.raises(CronError, match="never matches"):
        next_after(parse("30 2 25-31 3 */7"), at("2026-01-01T00:00:00"))


def test_dst_in_new_york(use_tz: Callable[[str], None]) -> None:
    use_tz("America/New_York")
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    assert upcoming("0 2 * * *", "2026-03-07T12:00:00", count=1) == ["2026-03-09T02:00:00-04:00"]
    assert upcoming("0 9 * * MON-FRI", "2026-03-06T10:00:00", count=1) == ["2026-03-09T09:00:00-04:00"]
    # 2026-11-01: 02:00 EDT goes back to 01:00 EST.
    assert upcoming("0 1 * * *", "2026-10-31T12:00:00", count=2) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-02T01:00:00-05:00",
    ]


# --- errors


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["expected 5 fields", "got 0"]),
        ("   ", ["expected 5 fields", "got 0"]),
        ("* * * *", ["got 4"]),
        ("* * * * * * *", ["got 7"]),
        ("*/5 25 * * *", ["hour field '25'", "25 is out of range 0-23"]),
        ("60 * * * *", ["minute field '60'", "out of range 0-59"]),
        ("60 * * * * *", ["second field '60'", "out of range 0-59"]),
        ("0 0 0 * *", ["day-of-month field '0'", "out of range 1-31"]),
        ("0 0 32 * *", ["day-of-month field '32'"]),
        ("0 0 1 13 *", ["month field '13'", "out of range 1-12"]),
        ("0 0 * * 8", ["day-of-week field '8'", "out of range 0-7"]),
        ("*/0 * * * *", ["minute field '*/0'", "step 0"]),
        ("*/90 * * * *", ["minute field '*/90'", "step 90"]),
        ("*/x * * * *", ["minute field '*/x'", "step 'x'"]),
        ("*/ * * * *", ["minute field '*/'", "step ''"]),
        ("30-10 * * * *", ["minute field '30-10'", "reversed"]),
        ("0 0 * * FRI-MON", ["day-of-week field 'FRI-MON'", "reversed"]),
        ("1,,2 * * * *", ["minute field '1,,2'", "empty list item"]),
        ("1, * * * *", ["minute field '1,'", "empty list item"]),
        ("1-2-3 * * * *", ["minute field '1-2-3'"]),
        ("-5 * * * *", ["minute field '-5'", "missing"]),
        ("5- * * * *", ["minute field '5-'", "missing"]),
        ("*-5 * * * *", ["minute field '*-5'"]),
        ("a * * * *", ["minute field 'a'", "not a number"]),
        ("0 0 * * MONDAY", ["day-of-week field 'MONDAY'", "SUN-SAT"]),
        ("0 0 * JANUARY *", ["month field 'JANUARY'", "JAN-DEC"]),
        ("0 0 * * JAN", ["day-of-week field 'JAN'"]),
        ("0 0 MON * *", ["day-of-month field 'MON'"]),
        ("0 0 * * \u017fun", ["day-of-week field"]),
        ("\u0665 * * * *", ["minute field"]),
        ("0 0 31 2 *", ["never matches", "day-of-month field '31'", "month field '2'"]),
        ("0 0 30,31 2 *", ["never matches"]),
        ("0 0 31 APR,JUN,SEP,NOV *", ["never matches"]),
        ("@reboot", ["unknown macro"]),
        ("@daily 5", ["unknown macro"]),
        ("* * * * *\n* * * * *", ["got 10"]),
        ("*" + " *" * 150, ["longer than 200 characters"]),
    ],
)
def test_bad_expressions(text: str, words: list[str]) -> None:
    with pytest.raises(CronError) as err:
        parse(text)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("invalid cron expression "), message
    for word in words:
        assert word in message, message
    assert isinstance(err.value, ValidationError)
    assert err.value.exit_code == 2


def test_not_a_string() -> None:
    with pytest.raises(CronError, match="must be a string"):
        parse(5)  # type: ignore[arg-type]


def test_impossible_only_under_the_and_rule() -> None:
    # With both days restricted, Fridays in February still match.
    assert upcoming("0 0 31 2 FRI", "2026-01-01T00:00:00", count=1) == ["2026-02-06T00:00:00+00:00"]
    assert parse("0 0 29 2 *").days_of_month == {29}


# --- brute force


_FIELD_RANGES = {  # name: (lo, last value of `*`, highest value allowed, names)
    "second": (0, 59, 59, ()),
    "minute": (0, 59, 59, ()),
    "hour": (0, 23, 23, ()),
    "dom": (1, 31, 31, ()),
    "month": (1, 12, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    "dow": (0, 6, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
}


@st.composite
def field_item(draw: st.DrawFn, name: str) -> tuple[str, set[int]]:
    lo, last, hi, names = _FIELD_RANGES[name]

    def value(n: int) -> str:
        if names and n - lo < len(names) and draw(st.booleans()):
            return draw(st.sampled_from([names[n - lo], names[n - lo].lower()]))
        return str(n)

    a = draw(st.integers(lo, hi))
    b = draw(st.integers(a, hi))
    step = draw(st.integers(1, last - lo + 1))
    kind = draw(st.sampled_from(["*", "*/n", "a", "a-b", "a-b/n", "a/n"]))
    if kind == "*":
        return "*", set(range(lo, last + 1))
    if kind == "*/n":
        return f"*/{step}", set(range(lo, last + 1, step))
    if kind == "a":
        return value(a), {a}
    if kind == "a-b":
        return f"{value(a)}-{value(b)}", set(range(a, b + 1))
    if kind == "a-b/n":
        return f"{value(a)}-{value(b)}/{step}", set(range(a, b + 1, step))
    return f"{value(a)}/{step}", set(range(a, max(a, last) + 1, step))


@st.composite
def field(draw: st.DrawFn, name: str) -> tuple[str, set[int]]:
    items = draw(st.lists(field_item(name), min_size=1, max_size=3))
    values = set().union(*(v for _, v in items))
    if name == "dow" and 7 in values:
        values = (values - {7}) | {0}
    return ",".join(text for text, _ in items), values


def matches(fields: dict[str, tuple[str, set[int]]], when: int) -> bool:
    t = dt.datetime.fromtimestamp(when, dt.UTC)
    dom_ok = t.day in fields["dom"][1]
    dow_ok = (t.weekday() + 1) % 7 in fields["dow"][1]
    both_restricted = not fields["dom"][0].startswith("*") and not fields["dow"][0].startswith("*")
    day_ok = (dom_ok or dow_ok) if both_restricted else (dom_ok and dow_ok)
    return (
        day_ok
        and t.second in fields["second"][1]
        and t.minute in fields["minute"][1]
        and t.hour in fields["hour"][1]
        and t.month in fields["month"][1]
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.fixed_dictionaries({name: field(name) for name in _FIELD_RANGES}),
    with_seconds=st.booleans(),
    after=st.integers(int(at("2024-01-01T00:00:00+00:00")), int(at("2030-01-01T00:00:00+00:00"))),
    fraction=st.sampled_from([0.0, 0.25, 0.999]),
)
def test_next_after_agrees_with_brute_force(
    fields: dict[str, tuple[str, set[int]]], with_seconds: bool, after: int, fraction: float
) -> None:
    names = ["second", "minute", "hour", "dom", "month", "dow"]
    if not with_seconds:
        names.pop(0)
        fields = {**fields, "second": ("0", {0})}
    text = " ".join(fields[name][0] for name in names)
    try:
        expr = parse(text)
    except CronError as exc:
        assert "never matches" in str(exc)
        return
    start = after + fraction
    found = next_after(expr, start)
    assert found > start
    assert found == int(found)
    assert matches(fields, int(found)), (text, show(found))
    # Nothing in between, checked second by second (or minute by minute) over a short window.
    tick, window = (1, 2 * 3600) if with_seconds else (60, 2 * 86400)
    first = (after // tick + 1) * tick
    for when in range(first, min(int(found), first + window), tick):
        assert not matches(fields, when), (text, show(when), show(found))
