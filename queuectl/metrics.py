"""Prometheus metrics for `/metrics`, with the prometheus_client library (the `dashboard` extra).

Where the numbers come from: the database, read through the library API at each scrape, so one exporter (the
dashboard, standalone or inside an engine) sees the work of every engine on the queue.

- Gauges are read fresh at each scrape: jobs by state (kept by counters, not a scan), the age of the oldest due
  job, engines alive and the age of each one's heartbeat, jobs waiting for a scheduled retry.
- Counters and histograms are cumulative since this exporter started, as for any process-local Prometheus
  metric (`rate()` and `increase()` handle the reset when it restarts). At each scrape the exporter reads the
  attempts that finished since its previous scrape (`Store.stats` over [cursor, now - settle), through the
  index on attempts.finished_at) and adds them: the work per scrape is bounded by the attempts finished since
  the last one, not by the size of the queue. An attempt row is written a moment after its end time; the
  `settle_s` lag (5 s) lets those commits land before their window is read (an attempt whose row is committed
  more than 5 s after it ended, the database having been locked that long, is missed by the counters).
- At most `samples` run times and queue waits are observed per scrape (the newest); the counters are exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from queuectl.errors import StoreError
from queuectl.models import JobState
from queuectl.stats import OUTCOMES

if TYPE_CHECKING:
    from queuectl.api import Queue, Status

#: The exposition format generate_latest writes.
CONTENT_TYPE = CONTENT_TYPE_LATEST
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class _Gauges(Collector):
    """The fresh-read gauges, from the status fetched for the current scrape."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.now = 0.0

    def collect(self) -> Iterable[Metric]:
        s = self.status
        if s is None:
            return []
        jobs = GaugeMetricFamily("queuectl_jobs", "Jobs in the queue by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], s.counts.by_state.get(state, 0))
        oldest = GaugeMetricFamily("queuectl_oldest_due_job_age_seconds",
                                   "How long the oldest due, unclaimed job has waited (0 if none).",
                                   value=s.counts.oldest_pending_age_s or 0.0)
        retries = GaugeMetricFamily("queuectl_retries_pending",
                                    "Jobs that failed and wait for a scheduled retry (state failed).",
                                    value=s.counts.by_state.get(JobState.FAILED, 0))
        engines = GaugeMetricFamily("queuectl_engines", "Engines alive.", value=len(s.engines))
        heartbeat = GaugeMetricFamily("queuectl_engine_heartbeat_age_seconds",
                                      "Seconds since each live engine's last heartbeat (every 5 s).",
                                      labels=["engine", "host"])
        workers = GaugeMetricFamily("queuectl_engine_workers", "Workers of each live engine.", labels=["engine"])
        busy = GaugeMetricFamily("queuectl_engine_running_jobs", "Jobs each live engine is running.",
                                 labels=["engine"])
        for e in s.engines:
            heartbeat.add_metric([e.id, e.host], max(0.0, self.now - e.heartbeat_at))
            workers.add_metric([e.id], e.workers)
            busy.add_metric([e.id], sum(1 for j in s.running if j.engine_id == e.id))
        queues = GaugeMetricFamily("queuectl_queue_running_jobs", "Jobs of each queue running now.",
                                   labels=["queue"])
        paused = GaugeMetricFamily("queuectl_queue_paused", "1 if the queue is paused.", labels=["queue"])
        limit = GaugeMetricFamily("queuectl_queue_concurrency", "A queue's own cap on running jobs (0: none).",
                                  labels=["queue"])
        for q in s.queues:
            queues.add_metric([q.name], q.running)
            paused.add_metric([q.name], int(q.paused))
            limit.add_metric([q.name], q.concurrency)
        return [jobs, oldest, retries, engines, heartbeat, workers, busy, queues, paused, limit]


class Metrics:
    """The state of one exporter: its registry, its counters, and the cursor of attempts already counted."""

    def __init__(self, *, start: float | None = None, settle_s: float = 5.0, samples: int = 50_000) -> None:
        self.settle_s = settle_s
        self.samples = samples
        self.cursor = time.time() if start is None else start
        self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = Counter("queuectl_attempts", "Attempts finished, by outcome.", ["outcome"],
                                registry=self.registry)
        for outcome in OUTCOMES:
            self.attempts.labels(outcome)
        self.retries = Counter("queuectl_retries_scheduled", "Failed attempts after which a retry was scheduled.",
                               registry=self.registry)
        self.dead = Counter("queuectl_jobs_dead", "Jobs moved to the dead-letter queue (retries spent).",
                            registry=self.registry)
        self.run_time = Histogram("queuectl_job_run_seconds", "Run time of finished attempts (not interrupted).",
                                  buckets=RUN_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("queuectl_job_queue_wait_seconds",
                                    "Start minus due time of the attempt that finished each job.",
                                    buckets=WAIT_BUCKETS, registry=self.registry)
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        self._lock = asyncio.Lock()

    async def update(self, q: Queue) -> None:
        """Count the attempts finished since the last scrape, and read the gauges."""
        async with self._lock:  # two scrapes at once must not count the same window twice
            now = time.time()
            until = now - self.settle_s
            row = None
            if until > self.cursor:
                try:
                    row = await q.stats_row(since=self.cursor, until=until, samples=self.samples)
                except StoreError:
                    row = None  # not supported by this backend, or the database busy: the next scrape catches up
            if row is not None:
                for outcome, n in row.attempts.items():
                    self.attempts.labels(outcome).inc(n)
                failures = row.attempts.get("failed", 0) + row.attempts.get("timed_out", 0)
                self.retries.inc(max(0, failures - row.buried))
                self.dead.inc(row.buried)
                for value in row.run_samples:
                    self.run_time.observe(value)
                for value in row.wait_samples:
                    self.queue_wait.observe(value)
                self.cursor = until
            self._gauges.status = await q.status()
            self._gauges.now = time.time()

    async def render(self, q: Queue) -> bytes:
        """The exposition text for one scrape."""
        await self.update(q)
        return generate_latest(self.registry)
