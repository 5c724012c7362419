"""Decoding store rows into the models: Job.from_row takes a shortcut for whole rows, which must build the same
frozen Job as the dataclass constructor does."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

import pytest

from queuectl.models import Job, JobState

WHOLE: dict[str, Any] = {
    "seq": 7, "id": "j1", "command": "echo hi", "state": "processing", "attempts": 1, "runs": 2, "max_retries": 3,
    "priority": 5, "run_at": 100.0, "timeout_s": 2.5, "cwd": "/tmp", "created_at": 90.0, "updated_at": 95.0,
    "started_at": 99.0, "finished_at": None, "exit_code": None, "last_error": None, "engine_id": "e1",
    "queue": "etl", "unique_key": "k", "env": json.dumps({"A": "1"}), "tags": json.dumps(["x", "y"]),
    "after": None, "deps_left": 0, "blocked_by": None, "cron": None, "cancel_requested": 1,
}


def as_sqlite_row(values: dict[str, Any]) -> sqlite3.Row:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    names = ", ".join(f"? AS {name}" for name in values)
    row: sqlite3.Row = conn.execute(f"SELECT {names}", list(values.values())).fetchone()
    return row


@pytest.mark.parametrize("make_row", [dict, as_sqlite_row], ids=["mapping", "sqlite3.Row"])
def test_a_whole_row_decodes_to_the_job_the_constructor_builds(make_row: Any) -> None:
    job = Job.from_row(make_row(WHOLE))
    expected = Job(id="j1", command="echo hi", state=JobState.PROCESSING, attempts=1, runs=2, max_retries=3,
                   priority=5, run_at=100.0, timeout_s=2.5, cwd="/tmp", seq=7, created_at=90.0, updated_at=95.0,
                   started_at=99.0, engine_id="e1", queue="etl", unique_key="k", env={"A": "1"}, tags=("x", "y"),
                   cancel_requested=True)
    assert job == expected
    assert repr(job) == repr(expected)
    assert type(job.state) is JobState and job.cancel_requested is True and job.after == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.id = "other"  # type: ignore[misc]


def test_each_decoded_job_has_its_own_env() -> None:
    first, second = Job.from_row({**WHOLE, "env": None}), Job.from_row({**WHOLE, "env": None})
    assert first.env == {} and first.env is not second.env


def test_a_partial_row_gets_the_defaults_and_a_missing_required_column_is_an_error() -> None:
    partial = {k: v for k, v in WHOLE.items() if k not in ("queue", "deps_left", "cron")}
    job = Job.from_row(partial)
    assert (job.queue, job.deps_left, job.cron) == ("default", 0, None)
    with pytest.raises(TypeError):
        Job.from_row({k: v for k, v in WHOLE.items() if k != "command"})
