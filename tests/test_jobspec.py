"""Validation of user input into jobs (queuectl/jobspec.py) and of durations and times (queuectl/timefmt.py)."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any

import pytest

from queuectl import jobspec
from queuectl.errors import ValidationError
from queuectl.runner import run_command
from queuectl.timefmt import human_duration, iso, parse_duration_s, parse_time

NOW = 1_800_000_000.0
CWD = "/work/here"


def parse(obj: Any) -> Any:
    return jobspec.from_mapping(obj, now=NOW, cwd=CWD)


def refused(obj: Any, *words: str) -> str:
    with pytest.raises(ValidationError) as err:
        parse(obj)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# ---- a good job --------------------------------------------------------------------------------------------------


def test_the_assignment_form_gives_a_pending_job_due_now_with_defaults() -> None:
    job = parse({"id": "job1", "command": "sleep 2"})
    assert (job.id, job.command, job.priority, job.run_at, job.max_retries, job.timeout_s, job.cwd) == (
        "job1", "sleep 2", 0, NOW, None, None, CWD)


def test_every_field_is_taken() -> None:
    job = parse({"id": "a.b:c@d+e-f_1", "command": "make -j4", "priority": 7, "max_retries": 5,
                 "run_at": "2027-01-15T08:00:00Z", "timeout": "5m", "cwd": "/srv"})
    assert (job.id, job.command, job.priority, job.max_retries, job.timeout_s, job.cwd) == (
        "a.b:c@d+e-f_1", "make -j4", 7, 5, 300.0, "/srv")
    assert job.run_at == dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp()


def test_the_assignment_job_object_can_be_pasted_as_it_is() -> None:
    job = parse({"id": "job1", "command": "echo hi", "state": "pending", "attempts": 0, "max_retries": 3,
                 "created_at": "2025-11-04T10:30:00Z", "updated_at": "2025-11-04T10:30:00Z"})
    assert (job.id, job.max_retries, job.run_at) == ("job1", 3, NOW)


def test_a_generated_id_is_short_and_unique() -> None:
    ids = {parse({"command": "true"}).id for _ in range(2000)}
    assert len(ids) == 2000
    for job_id in ids:
        assert 8 <= len(job_id) <= 16 and jobspec.JOB_ID.match(job_id)


@pytest.mark.parametrize(("delay", "seconds"), [(30, 30), (1.5, 1.5), ("30s", 30), ("5m", 300), ("2h", 7200),
                                                  ("45", 45), ("250ms", 0.25), ("1d", 86400), (0, 0)])
def test_delay_makes_the_job_due_later(delay: Any, seconds: float) -> None:
    assert parse({"command": "x", "delay": delay}).run_at == pytest.approx(NOW + seconds)


@pytest.mark.parametrize(("timeout", "seconds"), [(10, 10.0), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0),
                                                      (0.5, 0.5)])
def test_timeout_accepts_seconds_and_durations(timeout: Any, seconds: float) -> None:
    assert parse({"command": "x", "timeout": timeout}).timeout_s == seconds
    assert parse({"command": "x", "timeout_s": timeout}).timeout_s == seconds


@pytest.mark.parametrize("text", ["2027-01-15T08:00:00Z", "2027-01-15T08:00:00z", "2027-01-15T08:00:00+00:00",
                                  "2027-01-15T09:00:00+01:00", "2027-01-15T08:00:00", "2027-01-15 08:00:00",
                                  "2027-01-15T08:00:00.000Z"])
def test_run_at_parses_iso_8601_and_naive_means_utc(text: str) -> None:
    expected = dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp()
    assert parse({"command": "x", "run_at": text}).run_at == expected


def test_run_at_in_the_past_is_due_at_once_and_numbers_are_unix_seconds() -> None:
    assert parse({"command": "x", "run_at": "2001-01-01T00:00:00Z"}).run_at < NOW
    assert parse({"command": "x", "run_at": NOW + 60}).run_at == NOW + 60


def test_numbers_given_as_strings_are_taken_like_flags_give_them() -> None:
    job = parse({"command": "x", "priority": "5", "max_retries": "2", "timeout": "30"})
    assert (job.priority, job.max_retries, job.timeout_s) == (5, 2, 30.0)


def test_whole_floats_are_taken_as_integers() -> None:
    job = parse({"command": "x", "priority": 3.0, "max_retries": 0.0})
    assert (job.priority, job.max_retries) == (3, 0)
    assert isinstance(job.priority, int)


def test_cwd_defaults_to_the_current_directory() -> None:
    import os

    assert jobspec.from_mapping({"command": "x"}).cwd == os.getcwd()


# ---- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [["command", "x"], "echo", 42, None, True])
def test_a_job_that_is_not_an_object_is_refused(obj: Any) -> None:
    refused(obj, "JSON object")


def test_missing_command_is_refused() -> None:
    refused({"id": "a"}, "command")


@pytest.mark.parametrize("command", ["", "   ", "\n\t"])
def test_empty_command_is_refused(command: str) -> None:
    refused({"command": command}, "command", "empty")


@pytest.mark.parametrize("command", [5, None, ["echo", "hi"], {"sh": "x"}, True])
def test_a_command_that_is_not_a_string_is_refused(command: Any) -> None:
    refused({"command": command}, "command")


def test_a_command_with_a_nul_byte_is_refused() -> None:
    refused({"command": "echo a\x00b"}, "NUL")


def test_an_oversized_command_is_refused() -> None:
    refused({"command": "x" * (jobspec.MAX_COMMAND_BYTES + 1)}, "command", "131070 bytes")
    refused({"command": "é" * (jobspec.MAX_COMMAND_BYTES // 2 + 1)}, "command", "131070 bytes")  # bytes, not chars
    assert parse({"command": "x" * jobspec.MAX_COMMAND_BYTES}).command


async def test_the_longest_command_accepted_can_start(tmp_path: Path) -> None:
    """A command is one argument of /bin/sh -c: one of 200 KB was accepted, then failed every attempt with
    "cannot start: Argument list too long"."""
    longest = "true " + "#" * (jobspec.MAX_COMMAND_BYTES - 5)
    outcome = await run_command(longest, cwd=str(tmp_path), env=os.environ, log_path=tmp_path / "a.log",
                                timeout_s=30, kill_grace_s=1)
    assert (outcome.exit_code, outcome.error) == (0, None)
    # One that starts with "-" gets a space before it (see runner): still within the limit.
    dashed = "-" + "#" * (jobspec.MAX_COMMAND_BYTES - 1)
    outcome = await run_command(dashed, cwd=str(tmp_path), env=os.environ, log_path=tmp_path / "b.log",
                                timeout_s=30, kill_grace_s=1)
    assert (outcome.exit_code, outcome.error) == (127, "exit code 127 (command not found)")


@pytest.mark.parametrize("field", ["bogus", "Command", "retries", "timeout_ms", "engine_id"])
def test_an_unknown_field_is_refused_by_name(field: str) -> None:
    refused({"command": "x", field: 1}, "unknown field", repr(field))


@pytest.mark.parametrize("job_id", ["", "has space", "a/b", "../x", ".", "..", "-x", "+x", ".hidden", "x" * 129,
                                    "tab\there", "é", 5, True, ["a"]])
def test_a_bad_id_is_refused(job_id: Any) -> None:
    refused({"id": job_id, "command": "x"}, "job id")


def test_the_longest_id_is_accepted() -> None:
    assert parse({"id": "x" * 128, "command": "y"}).id == "x" * 128


@pytest.mark.parametrize("field", ["priority", "max_retries"])
@pytest.mark.parametrize("value", [-1, "-1", -100])
def test_negative_integers_are_refused(field: str, value: Any) -> None:
    refused({"command": "x", field: value}, field)


@pytest.mark.parametrize("field", ["priority", "max_retries"])
@pytest.mark.parametrize("value", ["abc", "1.5", 1.5, True, False, [1], {"n": 1}, "", math.nan, math.inf])
def test_non_integer_priority_and_max_retries_are_refused(field: str, value: Any) -> None:
    refused({"command": "x", field: value}, field)


def test_too_large_priority_and_max_retries_are_refused() -> None:
    refused({"command": "x", "priority": jobspec.MAX_PRIORITY + 1}, "priority")
    refused({"command": "x", "max_retries": jobspec.MAX_RETRIES + 1}, "max_retries")


@pytest.mark.parametrize("field", ["timeout", "timeout_s"])
@pytest.mark.parametrize("value", [-1, -0.5, "-5", "-5s", "abc", "5 minutes", "5x", "", True, [5], {"s": 5},
                                   math.nan, math.inf, 0, "0s"])
def test_a_bad_timeout_is_refused(field: str, value: Any) -> None:
    refused({"command": "x", field: value}, "timeout")


@pytest.mark.parametrize("value", [-1, -0.001, "-5", "-5m", "soon", "5 parsecs", "", True, [5], math.nan, math.inf])
def test_a_bad_delay_is_refused(value: Any) -> None:
    refused({"command": "x", "delay": value}, "delay")


@pytest.mark.parametrize("value", ["tomorrow", "2027-13-01T00:00:00Z", "2027-01-32", "12:00", "", "now", True,
                                   [2027, 1, 1], {"y": 2027}, -5, math.nan, math.inf])
def test_an_unparseable_run_at_is_refused(value: Any) -> None:
    refused({"command": "x", "run_at": value}, "run_at")


@pytest.mark.parametrize("obj", [{"command": "x", "delay": "99999999d"}, {"command": "x", "run_at": 1e20},
                                 {"command": "x", "delay": 1e18}])
def test_a_due_time_beyond_what_can_be_shown_is_refused(obj: dict[str, Any]) -> None:
    """A job due in the year 275,000 could be stored but not shown: `list` and `inspect` would fail on it."""
    job = None
    with pytest.raises(ValidationError):
        job = parse(obj)
    assert job is None


def test_both_run_at_and_delay_is_refused() -> None:
    refused({"command": "x", "run_at": "2027-01-01T00:00:00Z", "delay": "5m"}, "run_at", "delay")


def test_both_timeout_and_timeout_s_is_refused() -> None:
    refused({"command": "x", "timeout": 5, "timeout_s": 5}, "timeout")


def test_a_relative_cwd_is_refused() -> None:
    refused({"command": "x", "cwd": "relative/dir"}, "cwd")
    refused({"command": "x", "cwd": 5}, "cwd")


@pytest.mark.parametrize(("field", "value"), [("state", "completed"), ("state", "dead"), ("attempts", 2)])
def test_a_pasted_job_must_describe_a_fresh_job(field: str, value: Any) -> None:
    refused({"command": "x", field: value}, field)


# ---- JSON text and JSON Lines -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"command": ', "{'command': 'x'}", "{command: x}", "", "   ", '{"command": "x"} x',
                                  "[" * 100_000])
def test_malformed_json_is_refused(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        jobspec.from_json(text, now=NOW, cwd=CWD)
    assert "JSON" in str(err.value) and "\n" not in str(err.value)


def test_json_that_is_not_an_object_is_refused() -> None:
    for text in ('["echo", "hi"]', '"echo hi"', "42", "null", "true"):
        with pytest.raises(ValidationError, match="JSON object"):
            jobspec.from_json(text, now=NOW, cwd=CWD)


def test_json_lines_skip_blank_lines_and_share_one_time_and_cwd() -> None:
    lines = ['{"id": "a", "command": "x"}', "", "   ", '{"id": "b", "command": "y", "delay": 10}']
    jobs = jobspec.from_json_lines(lines, now=NOW, cwd=CWD)
    assert [(j.id, j.run_at, j.cwd) for j in jobs] == [("a", NOW, CWD), ("b", NOW + 10, CWD)]


@pytest.mark.parametrize(("bad", "words"), [('{"command": ', ["JSON"]), ("[1, 2]", ["JSON object"]),
                                            ('{"command": "x", "oops": 1}', ["oops"]),
                                            ('{"command": ""}', ["command"]),
                                            ('{"command": "x", "priority": -1}', ["priority"])])
def test_a_bad_line_refuses_the_batch_and_names_the_line(bad: str, words: list[str]) -> None:
    lines = ['{"command": "ok"}', "", '{"command": "ok"}', bad, '{"command": "ok"}']
    with pytest.raises(ValidationError) as err:
        jobspec.from_json_lines(lines, now=NOW, cwd=CWD)
    message = str(err.value)
    assert message.startswith("line 4:"), message
    for word in words:
        assert word in message


def test_a_duplicate_id_within_a_batch_is_refused_naming_the_line() -> None:
    lines = ['{"id": "a", "command": "x"}', '{"id": "b", "command": "x"}', '{"id": "a", "command": "y"}']
    with pytest.raises(ValidationError, match=r"^line 3: .*'a'"):
        jobspec.from_json_lines(lines, now=NOW, cwd=CWD)


# ---- the positional form ----------------------------------------------------------------------------------------


def test_positional_json_with_flags_overriding_fields() -> None:
    mapping = jobspec.mapping_from_args(['{"id": "j", "command": "x", "priority": 1}'], {"priority": "9"},
                                        command_given=False)
    assert parse(mapping).priority == 9


def test_words_after_double_dash_are_quoted_back_into_one_command() -> None:
    mapping = jobspec.mapping_from_args(["ffmpeg", "-i", "a b.mp4", "out.webm"], {}, command_given=True)
    assert mapping["command"] == "ffmpeg -i 'a b.mp4' out.webm"
    single = jobspec.mapping_from_args(["echo $HOME && ls"], {}, command_given=True)
    assert single["command"] == "echo $HOME && ls"  # one word is shell text as given


def test_a_positional_argument_without_double_dash_must_be_a_json_object() -> None:
    for args in (["echo hi"], ['["echo", "hi"]'], ["42"]):
        with pytest.raises(ValidationError):
            jobspec.mapping_from_args(args, {}, command_given=False)
    with pytest.raises(ValidationError):
        jobspec.mapping_from_args([], {}, command_given=False)
    with pytest.raises(ValidationError):
        jobspec.mapping_from_args([], {}, command_given=True)


# ---- durations and times ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200), ("7d", 604800), ("1w", 604800),
                                               ("250ms", 0.25), ("1.5", 1.5), ("12", 12), (" 5m ", 300), (12, 12),
                                               (0.5, 0.5), ("0", 0)])
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration_s(text, "x") == seconds


@pytest.mark.parametrize("text", ["-1", "-1s", "5y", "m", "", "1e3", "1,5", "five", None, True, math.nan, -math.inf,
                                  -1])
def test_parse_duration_refuses(text: Any) -> None:
    with pytest.raises(ValidationError, match=r"^what "):
        parse_duration_s(text, "what")


def test_parse_time_and_iso_round_trip_in_utc() -> None:
    ts = parse_time("2027-01-15T08:00:00.250Z", "t")
    assert iso(ts) == "2027-01-15T08:00:00.250Z"
    assert iso(None) is None
    assert parse_time(iso(NOW), "t") == pytest.approx(NOW, abs=1e-3)


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0.85, "850ms"), (12.34, "12.3s"), (245, "4m05s"),
                                               (7380, "2h03m"), (3 * 86400 + 4 * 3600, "3d04h"),
                                               # just under a unit's bound: the next unit, never "1000ms" or "60.0s"
                                               (0.9996, "1.0s"), (59.96, "1m00s")])
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text
