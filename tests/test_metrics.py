"""Prometheus /metrics: the exposition format from prometheus_client, scraped over HTTP from a real dashboard
process while a real engine (another process) works; and the exporter's counting over a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from queuectl.api import Queue
from queuectl.jobspec import NewJob
from queuectl.metrics import Metrics
from queuectl.store.base import Store
from queuectl.store.sqlite import SQLiteStore
from tests.dashboard_helpers import DashboardProc, get, store_attempt
from tests.engine_helpers import Engines, await_until, config_set, enqueue
from tests.helpers import run_proc, wait_until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_metrics_of_a_real_engine_scraped_over_http(home: Path, tmp_path: Path) -> None:
    config_set(home, "backoff-base", "1")  # the failing job's retry is due 1 s after its first attempt
    with DashboardProc(home) as dashboard, Engines(home, tmp_path) as engines:
        first = get(dashboard.url + "metrics")
        assert first.status == 200
        assert (first.header("content-type") or "").startswith("text/plain; version=")
        assert value(samples(first.text), "queuectl_attempts_total", outcome="succeeded") == 0
        engine = engines.start(workers=3)
        ok = [enqueue(home, f"sleep 0.{k}") for k in range(1, 4)]
        flaky = enqueue(home, "exit 5", max_retries=1)
        slow = enqueue(home, "sleep 5", timeout="300ms", max_retries=0)
        enqueue(home, "true", delay="1h")

        def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            found = samples(get(dashboard.url + "metrics").text)
            done = (value(found, "queuectl_attempts_total", outcome="succeeded") == 3
                    and value(found, "queuectl_attempts_total", outcome="failed") == 2
                    and value(found, "queuectl_attempts_total", outcome="timed_out") == 1)
            return found if done else None

        found = wait_until(scraped, timeout_s=40, interval_s=0.25, what="the attempts to be counted")
        assert value(found, "queuectl_attempts_total", outcome="interrupted") == 0
        assert value(found, "queuectl_jobs", state="completed") == 3
        assert value(found, "queuectl_jobs", state="dead") == 2
        assert value(found, "queuectl_jobs", state="pending") == 1
        assert value(found, "queuectl_jobs", state="processing") == 0
        assert value(found, "queuectl_jobs_dead_total") == 2
        assert value(found, "queuectl_retries_scheduled_total") == 1
        assert value(found, "queuectl_retries_pending") == 0
        assert value(found, "queuectl_job_run_seconds_count") == 6
        run_sum = value(found, "queuectl_job_run_seconds_sum")
        assert run_sum is not None and 0.6 + 0.3 <= run_sum < 10
        assert value(found, "queuectl_job_run_seconds_bucket", le="+Inf") == 6
        assert value(found, "queuectl_job_run_seconds_bucket", le="0.01") is not None
        # One queue wait per finished job: the attempt that finished it (5 jobs).
        assert value(found, "queuectl_job_queue_wait_seconds_count") == 5
        assert value(found, "queuectl_engines") == 1
        engine_id = engine.engine_id
        assert engine_id is not None
        beat = [v for (name, labels), v in found.items()
                if name == "queuectl_engine_heartbeat_age_seconds" and ("engine", engine_id) in labels]
        assert len(beat) == 1 and 0 <= beat[0] < 10
        assert value(found, "queuectl_engine_workers", engine=engine_id) == 3
        assert value(found, "queuectl_queue_running_jobs", queue="default") == 0
        assert value(found, "queuectl_queue_concurrency", queue="default") == 0
        assert value(found, "queuectl_queue_paused", queue="default") == 0
        assert run_proc("pause", home=home).code == 0
        paused = wait_until(lambda: value(samples(get(dashboard.url + "metrics").text), "queuectl_queue_paused",
                                          queue="default") == 1, timeout_s=10, what="the pause to show")
        assert paused
        listed = {j["id"]: j["state"] for j in json.loads(run_proc("list", "--json", home=home).out)}
        assert [listed[i] for i in (*ok, flaky, slow)] == ["completed"] * 3 + ["dead"] * 2

        # Scraping again counts nothing twice.
        again = samples(get(dashboard.url + "metrics").text)
        assert value(again, "queuectl_attempts_total", outcome="succeeded") == 3
        assert value(again, "queuectl_job_run_seconds_count") == 6


NOW = time.time()


async def add_attempts(store: Store, n: int, *, start: float, prefix: str) -> None:
    for k in range(n):
        job_id = f"{prefix}{k}"
        await store.enqueue([NewJob(id=job_id, command="true", run_at=start + k, cwd="/tmp")], now=start)
        assert await store_attempt(store, job_id, started_at=start + k + 0.5, finished_at=start + k + 0.75)


async def test_exporter_counts_each_attempt_once(home: Path) -> None:
    home.mkdir(parents=True)  # noqa: ASYNC240 - set-up
    async with SQLiteStore(home / "queue.db") as store:
        await add_attempts(store, 3, start=NOW - 60, prefix="a")
    metrics = Metrics(start=NOW - 100, settle_s=0.0)
    async with Queue(home) as q:
        first = samples((await metrics.render(q)).decode())
        assert value(first, "queuectl_attempts_total", outcome="succeeded") == 3
        assert value(first, "queuectl_job_run_seconds_count") == 3
        assert value(first, "queuectl_job_run_seconds_sum") == pytest.approx(0.75)
        assert value(first, "queuectl_job_queue_wait_seconds_sum") == pytest.approx(1.5)
        # Concurrent scrapes do not count one window twice.
        await asyncio.gather(*(metrics.render(q) for _ in range(4)))
        assert value(samples((await metrics.render(q)).decode()), "queuectl_attempts_total",
                     outcome="succeeded") == 3
        # Two more attempts, ending after that scrape (0.75 s and 1.75 s from now): counted once they have ended.
        await add_attempts(q.store, 2, start=time.time(), prefix="b")

        async def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            found = samples((await metrics.render(q)).decode())
            return found if value(found, "queuectl_attempts_total", outcome="succeeded") == 5 else None

        later = await await_until(counted, timeout=20, interval=0.1, what="the new attempts to be counted")
        assert value(later, "queuectl_job_run_seconds_count") == 5
        assert value(samples((await metrics.render(q)).decode()), "queuectl_attempts_total", outcome="succeeded") == 5


async def test_exporter_bounds_samples_but_not_counts(home: Path) -> None:
    home.mkdir(parents=True)  # noqa: ASYNC240 - set-up
    async with SQLiteStore(home / "queue.db") as store:
        await add_attempts(store, 5, start=NOW - 60, prefix="c")
    metrics = Metrics(start=NOW - 100, settle_s=0.0, samples=2)
    async with Queue(home) as q:
        found = samples((await metrics.render(q)).decode())
    assert value(found, "queuectl_attempts_total", outcome="succeeded") == 5
    assert value(found, "queuectl_job_run_seconds_count") == 2


async def test_exporter_waits_for_recent_attempts_to_settle(home: Path) -> None:
    home.mkdir(parents=True)  # noqa: ASYNC240 - set-up
    async with SQLiteStore(home / "queue.db") as store:
        await add_attempts(store, 1, start=time.time() - 1.5, prefix="d")  # finished ~0.75 s ago
    metrics = Metrics(start=NOW - 100, settle_s=30.0)
    async with Queue(home) as q:
        found = samples((await metrics.render(q)).decode())
    assert value(found, "queuectl_attempts_total", outcome="succeeded") == 0  # not yet: still settling
    assert value(found, "queuectl_jobs", state="completed") == 1  # gauges are read fresh
