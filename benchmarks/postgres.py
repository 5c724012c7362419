"""Issue 7's targets on PostgreSQL: `python -m benchmarks.postgres [--jobs N] [--rounds R] [--million N] [--only ...]`.

- throughput: 4 `queuectl run --workers 8` processes, each with a data directory of its own (as on 4 hosts), on one
  fresh schema; N `true` jobs enqueued in one transaction once all four are idle; time from the commit to the last
  attempt's end. Baseline, same run, rounds alternating: a bare asyncio loop (the engine's pidfd child watcher)
  spawning the same `true` through `create_subprocess_shell` 32 at a time, persisting nothing. Target >= 0.8x.
  Where the time goes: CPU seconds of the engines, of their jobs, of the engines' PostgreSQL backends and of the
  whole server, against what the machine's CPUs could give in that time; write statements, commits and WAL syncs
  per job from the server's statistics.
- claim latency: `claim_due(limit=8)` through the store, median and p95 of interleaved calls on a schema holding
  1,000 due jobs and on one holding 1,000,000 (set up with generate_series, then VACUUM ANALYZE, as autovacuum
  would). Target: flat (<= 1.5x).
- pickup latency: an idle `queuectl run` process; this process enqueues one job at a time through the store with a
  data directory of its own, so only NOTIFY can wake the engine (its 1 s change poll aside); latency = the job's
  own `date +%s.%N` minus the moment the enqueue's commit returned. Target p95 <= 50 ms; the spawn floor (the same
  `date` from a bare loop) is shown for context.

The server is $QUEUECTL_BENCH_POSTGRES_URL, else $QUEUECTL_TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1/test.
Every schema made here is dropped at the end. Prints a table; writes benchmarks/results/postgres.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import resource
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from benchmarks.common import PYTHON, Row, Target, clean_env, finish_report, median, percentile, temp_dir, wait_until
from benchmarks.latency import spawn_floor_ms
from queuectl.jobspec import NewJob
from queuectl.store.postgres import PostgresStore

ENGINES, WORKERS = 4, 8
SCHEMA_PREFIX = "queuectl_bench_"
HZ = os.sysconf("SC_CLK_TCK")


def base_url() -> str:
    return (os.environ.get("QUEUECTL_BENCH_POSTGRES_URL") or os.environ.get("QUEUECTL_TEST_POSTGRES_URL")
            or "postgresql://postgres@127.0.0.1:5432/test")


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


class Schemas:
    """Fresh schemas on the server, all dropped on exit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[str] = []

    def new(self, tag: str) -> tuple[str, str]:
        name = f"{SCHEMA_PREFIX}{tag}_{secrets.token_hex(3)}"
        self.made.append(name)
        return name, with_schema(self.url, name)

    def drop_all(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


async def _open(url: str) -> PostgresStore:
    store = PostgresStore(url)
    await store.open()
    return store


# ---- CPU accounting from /proc ---------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, its reaped children's), or (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / HZ, (int(fields[13]) + int(fields[14])) / HZ


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[1])


def machine_busy() -> float:
    """CPU seconds all CPUs have spent not idle (nor waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / HZ


def server_cpu(postmaster: int | None) -> dict[int, float]:
    """CPU seconds of the server's processes by pid; -1 is the postmaster itself plus every child it reaped."""
    if postmaster is None:
        return {}
    own, reaped = proc_cpu(postmaster)
    found = {-1: own + reaped}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _ppid(int(entry.name)) == postmaster:
            found[int(entry.name)] = sum(proc_cpu(int(entry.name)))
    return found


def backends_of(conn: psycopg.Connection[Any], pids: list[int]) -> list[int]:
    """Server pids of the TCP connections the given client processes hold."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)).fetchall()
    return [int(r[0]) for r in rows]


def server_stats(conn: psycopg.Connection[Any], schema: str) -> dict[str, float]:
    """Counters whose differences tell what the server did: commits, WAL, and writes to the schema's tables."""
    out: dict[str, float] = {}
    row = conn.execute("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
                       ).fetchone()
    assert row is not None
    out["xact_commit"], out["xact_rollback"] = float(row[0]), float(row[1])
    with contextlib.suppress(psycopg.Error):
        wal = conn.execute("SELECT wal_records, wal_bytes, wal_sync, wal_write FROM pg_stat_wal").fetchone()
        if wal is not None:
            out["wal_records"], out["wal_bytes"], out["wal_sync"], out["wal_write"] = (float(v) for v in wal)
    for rel, ins, upd, dele, idx in conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE schemaname = %s", (schema,)).fetchall():
        out[f"{rel}.ins"], out[f"{rel}.upd"], out[f"{rel}.del"], out[f"{rel}.idx_scan"] = ins, upd, dele, idx
    return out


# ---- throughput ------------------------------------------------------------------------------------------------------


def bare_loop(n_jobs: int, concurrency: int) -> dict[str, float]:
    """The machine's spawn limit: an asyncio loop with the engine's child watcher spawning `true` through the
    shell, `concurrency` at a time, nothing persisted."""

    async def main() -> float:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)
        remaining = n_jobs

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                proc = await asyncio.create_subprocess_shell("true", stdin=subprocess.DEVNULL)
                await proc.wait()

        try:
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start
        finally:
            asyncio.set_child_watcher(None)  # type: ignore[arg-type]

    self0, kids0, busy0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN), \
        machine_busy()
    wall = asyncio.run(main())
    self1, kids1, busy1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN), \
        machine_busy()
    return {"wall_s": wall, "rate": n_jobs / wall,
            "spawner_cpu_s": self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime,
            "jobs_cpu_s": kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime,
            "machine_busy_s": busy1 - busy0}


@contextlib.contextmanager
def engine_processes(tmp: Path, url: str, count: int, workers: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` engines, each with its own data directory, started and idle when yielded; SIGTERM on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    env = {**clean_env(), "QUEUECTL_DATABASE_URL": url}
    try:
        for n in range(count):
            home = tmp / f"engine{n}"
            home.mkdir()
            log = home / "engine.log"
            with log.open("wb") as out:
                procs.append(subprocess.Popen(
                    [PYTHON, "-m", "queuectl", "--home", str(home), "run", "--workers", str(workers),
                     "--log-format", "json"], stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env))
            logs.append(log)
        for proc, log in zip(procs, logs, strict=True):
            wait_until(lambda p=proc, lg=log: b'"engine_started"' in lg.read_bytes() or p.poll() is not None,  # type: ignore[misc]
                       60, "the engines to start")
            if proc.returncode is not None:
                raise RuntimeError(f"engine exited with {proc.returncode}: {log.read_text()[-2000:]}")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def engine_round(tmp: Path, schemas: Schemas, n_jobs: int, rnd: int) -> dict[str, Any]:
    schema, url = schemas.new(f"tp{rnd}")
    work = tmp / f"round{rnd}"
    work.mkdir()

    async def prepare() -> PostgresStore:
        return await _open(url)

    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(prepare())
    try:
        with psycopg.connect(schemas.url, autocommit=True) as probe, \
                engine_processes(work, url, ENGINES, WORKERS) as procs:
            backend_pid = probe.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            postmaster = _ppid(backend_pid) if os.path.exists(f"/proc/{backend_pid}") else None
            time.sleep(1.0)  # past the engines' start-up work (not a synchronisation: they are up already)
            cpu0 = {p.pid: proc_cpu(p.pid) for p in procs}
            srv0, busy0, stats0 = server_cpu(postmaster), machine_busy(), server_stats(probe, schema)
            now = time.time()
            jobs = [NewJob(id=f"j{i}", command="true", run_at=now, cwd=str(work)) for i in range(n_jobs)]
            loop.run_until_complete(store.enqueue(jobs, now=now))
            committed = time.time()
            deadline = time.monotonic() + 600
            while int(probe.execute(sql.SQL("SELECT sum(completed) FROM {}.counters").format(
                    sql.Identifier(schema))).fetchone()[0] or 0) < n_jobs:  # type: ignore[index]
                if time.monotonic() > deadline:
                    raise TimeoutError("engines did not finish within 600 s")
                time.sleep(0.05)
            cpu1 = {p.pid: proc_cpu(p.pid) for p in procs}
            srv1, busy1 = server_cpu(postmaster), machine_busy()
            ours = backends_of(probe, [p.pid for p in procs]) if postmaster is not None else []
            span = probe.execute(sql.SQL("SELECT min(started_at), max(finished_at) FROM {}.attempts").format(
                sql.Identifier(schema))).fetchone()
            per_engine = [r[0] for r in probe.execute(sql.SQL(
                "SELECT count(*) FROM {}.attempts GROUP BY engine_id ORDER BY 1").format(
                    sql.Identifier(schema))).fetchall()]
        # Backends flush their statistics at most once a second, and at exit: read them once the engines are gone.
        with psycopg.connect(schemas.url, autocommit=True) as probe:
            time.sleep(0.5)
            stats1 = server_stats(probe, schema)
    finally:
        loop.run_until_complete(store.close())
        loop.close()
    assert span is not None
    first_start, last_end = float(span[0]), float(span[1])
    wall = last_end - committed
    engines_cpu = sum(cpu1[p][0] - cpu0[p][0] for p in cpu0)
    jobs_cpu = sum(cpu1[p][1] - cpu0[p][1] for p in cpu0)
    backends_cpu = sum(srv1.get(b, 0.0) - srv0.get(b, 0.0) for b in ours)
    # A server process that ended meanwhile moved all its CPU into the postmaster's reaped children (key -1).
    server_total = sum(srv1.values()) - sum(srv0.values()) if srv0 else None
    delta = {k: stats1.get(k, 0.0) - stats0.get(k, 0.0) for k in stats1}
    return {
        "wall_s": wall, "rate": n_jobs / wall, "first_start_after_commit_s": first_start - committed,
        "per_engine": per_engine, "engines_cpu_s": engines_cpu, "jobs_cpu_s": jobs_cpu,
        "engine_backends": len(ours), "engine_backends_cpu_s": backends_cpu if postmaster else None,
        "server_cpu_s": server_total, "machine_busy_s": busy1 - busy0,
        "machine_capacity_s": wall * (os.cpu_count() or 1),
        "per_job": {k: v / n_jobs for k, v in delta.items() if v},
    }


def throughput(n_jobs: int, rounds: int, schemas: Schemas) -> tuple[list[Row], dict[str, Any]]:
    engine: list[dict[str, Any]] = []
    bare: list[dict[str, float]] = []
    with temp_dir("pg-throughput") as tmp:
        for rnd in range(rounds):
            print(f"  throughput round {rnd + 1}/{rounds}: engines ...", file=sys.stderr, flush=True)
            engine.append(engine_round(tmp, schemas, n_jobs, rnd))
            print(f"    {engine[-1]['rate']:.0f} jobs/s; bare loop ...", file=sys.stderr, flush=True)
            bare.append(bare_loop(n_jobs, ENGINES * WORKERS))
            print(f"    {bare[-1]['rate']:.0f} jobs/s", file=sys.stderr, flush=True)
    rate, bare_rate = median([r["rate"] for r in engine]), median([r["rate"] for r in bare])
    metric = f"{n_jobs:,} x `true`, {ENGINES} engine processes x {WORKERS} workers"
    us = 1e6 / n_jobs

    def cpu_row(label: str, key: str, base_key: str | None = None) -> Row:
        values = [r[key] for r in engine if r[key] is not None]
        value = median(values) * us if values else float("nan")
        base = median([b[base_key] for b in bare]) * us if base_key else None
        return Row("pg_throughput", f"CPU per job: {label}", value, "us", base,
                   "bare loop" if base_key else "")

    rows = [
        Row("pg_throughput", metric, rate, "jobs/s", bare_rate, f"bare loop, {ENGINES * WORKERS} at a time",
            Target(">=", 0.8), note="commit of the batch to the end of the last attempt; median of rounds"),
        cpu_row("engine processes (Python)", "engines_cpu_s", "spawner_cpu_s"),
        cpu_row("job processes (sh -c true)", "jobs_cpu_s", "jobs_cpu_s"),
        cpu_row("the engines' PostgreSQL backends", "engine_backends_cpu_s"),
        cpu_row("the whole PostgreSQL server (other clients too)", "server_cpu_s"),
        cpu_row("whole machine busy (all processes)", "machine_busy_s", "machine_busy_s"),
        Row("pg_throughput", "machine CPU capacity per job at the measured rate", median(
            [r["machine_capacity_s"] for r in engine]) * us, "us"),
    ]
    own = [r["engines_cpu_s"] + r["jobs_cpu_s"] + (r["server_cpu_s"] or 0.0) for r in engine]
    others = [r["machine_busy_s"] - o for r, o in zip(engine, own, strict=True)]
    ceiling = (os.cpu_count() or 1) / (median(own) / n_jobs)
    bare_ceiling = (os.cpu_count() or 1) / median([(b["spawner_cpu_s"] + b["jobs_cpu_s"]) / n_jobs for b in bare])
    rows += [
        Row("pg_throughput", "CPU per job: everything else on the machine meanwhile", median(others) * us, "us",
            note="other work sharing the CPUs, the benchmark's own polling, the kernel"),
        Row("pg_throughput", "CPU-bound ceiling: CPUs / (engines + jobs + server) per job", ceiling, "jobs/s",
            bare_ceiling, "same for the bare loop", note="what the rate would be with nothing else running"),
    ]
    per_job = engine[len(engine) // 2]["per_job"]
    for key, label in [("xact_commit", "commits (whole database)"), ("counters.upd", "write statements on jobs"),
                       ("wal_sync", "WAL syncs (whole server)"), ("wal_bytes", "WAL bytes")]:
        if key in per_job:
            rows.append(Row("pg_throughput", f"per job: {label}", per_job[key], "n"))
    return rows, {"engine_rounds": engine, "bare_rounds": bare}


# ---- claim latency ---------------------------------------------------------------------------------------------------


def fill(url_base: str, schema: str, url: str, n: int) -> float:
    """n due jobs in the schema (generate_series: the rows the store's enqueue writes), then VACUUM ANALYZE."""
    asyncio.run(_close_after_open(url))
    start = time.perf_counter()
    with psycopg.connect(url_base, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "INSERT INTO {}.jobs (id, command, state, run_at, cwd, created_at, updated_at) "
            "SELECT 'j' || g, 'true', 'pending', %s + g * 1e-6, '/tmp', %s, %s FROM generate_series(1, %s) g"
        ).format(sql.Identifier(schema)), (time.time() - 86400, time.time(), time.time(), n))
        conn.execute(sql.SQL("VACUUM ANALYZE {}.jobs").format(sql.Identifier(schema)))
    return time.perf_counter() - start


async def _close_after_open(url: str) -> None:
    await (await _open(url)).close()


def claim_latency(samples: int, million: int, schemas: Schemas) -> tuple[list[Row], dict[str, Any]]:
    sizes = [1_000, million]
    urls = {}
    setup = {}
    for size in sizes:
        schema, url = schemas.new(f"claim{size}")
        print(f"  claim latency: filling {size:,} jobs ...", file=sys.stderr, flush=True)
        setup[size] = fill(schemas.url, schema, url, size)
        urls[size] = url

    async def measure() -> dict[int, list[float]]:
        stores = {size: await _open(url) for size, url in urls.items()}
        out: dict[int, list[float]] = {size: [] for size in sizes}
        try:
            for size in sizes:  # warm: plans cached, pool connected
                await stores[size].claim_due("warm", now=time.time(), limit=8)
            for _ in range(samples):
                for size in sizes:  # interleaved: load from elsewhere hits both alike
                    start = time.perf_counter()
                    claims = await stores[size].claim_due("bench", now=time.time(), limit=8)
                    out[size].append((time.perf_counter() - start) * 1000)
                    assert len(claims) == 8
        finally:
            for store in stores.values():
                await store.close()
        return out

    ms = asyncio.run(measure())
    small, large = sizes
    rows = [
        Row("pg_claim", f"claim of 8 with {large:,} queued, median", median(ms[large]), "ms", median(ms[small]),
            f"{small:,} queued", Target("<=", 1.5)),
        Row("pg_claim", f"claim of 8 with {large:,} queued, p95", percentile(ms[large], 95), "ms",
            percentile(ms[small], 95), f"{small:,} queued"),
    ]
    return rows, {"samples_ms": {str(k): v for k, v in ms.items()}, "setup_s": {str(k): v for k, v in setup.items()}}


# ---- pickup latency --------------------------------------------------------------------------------------------------


def pickup_latency(samples: int, schemas: Schemas) -> tuple[list[Row], dict[str, Any]]:
    _schema, url = schemas.new("pickup")
    with temp_dir("pg-pickup") as tmp:
        asyncio.run(_close_after_open(url))
        stamps = tmp / "stamps"
        stamps.mkdir()
        with engine_processes(tmp, url, 1, 4):
            time.sleep(0.5)  # past the start-up work: an idle engine

            async def run() -> list[float]:
                store = await _open(url)
                out = []
                try:
                    for i in range(samples):
                        await asyncio.sleep(0.2 * random.uniform(0.75, 1.25))  # idle engine, random phase
                        path = stamps / f"p{i}"
                        job = NewJob(id=f"p{i}", command=f"exec date +%s.%N > {shlex.quote(str(path))}",
                                     run_at=time.time(), cwd=str(tmp))
                        await store.enqueue([job], now=time.time())
                        committed = time.time()
                        deadline = time.monotonic() + 10
                        while not (path.exists() and path.read_bytes().endswith(b"\n")):
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"job p{i} did not start within 10 s")
                            await asyncio.sleep(0.002)
                        out.append((float(path.read_text()) - committed) * 1000)
                finally:
                    await store.close()
                return out

            ms = asyncio.run(run())
        floor = spawn_floor_ms(tmp)
    floor_p50 = median(floor)
    rows = [
        Row("pg_pickup", "enqueue commit to the job's own start, p50", median(ms), "ms", floor_p50,
            "spawn floor p50"),
        Row("pg_pickup", "enqueue commit to the job's own start, p95", percentile(ms, 95), "ms", floor_p50,
            "spawn floor p50", Target("<=", 50, "value")),
    ]
    return rows, {"samples_ms": ms, "floor_ms": floor}


# ---- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per throughput round (default 3000)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (default 2)")
    parser.add_argument("--million", type=int, default=1_000_000, help="the large queue of the claim benchmark")
    parser.add_argument("--claims", type=int, default=100, help="claims measured per queue size (default 100)")
    parser.add_argument("--pickups", type=int, default=60, help="pickup samples (default 60)")
    parser.add_argument("--only", default="throughput,claim,pickup", help="comma-separated subset")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    url = base_url()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5, row_factory=dict_row) as conn:
            version = conn.execute("SHOW server_version").fetchone()["server_version"]  # type: ignore[index]
            settings = {r["name"]: r["setting"] for r in conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
                "'shared_buffers', 'autovacuum', 'max_connections', 'wal_sync_method')").fetchall()}
    except psycopg.Error as exc:
        print(f"no PostgreSQL server at {url}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "started_at": time.time(), "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "postgres": version, "settings": settings,
        "benchmarks": {},
    }
    schemas = Schemas(url)
    rows: list[Row] = []
    failed = []
    plan: list[tuple[str, Callable[[], tuple[list[Row], dict[str, Any]]]]] = [
        ("throughput", lambda: throughput(args.jobs, args.rounds, schemas)),
        ("claim", lambda: claim_latency(args.claims, args.million, schemas)),
        ("pickup", lambda: pickup_latency(args.pickups, schemas)),
    ]
    try:
        for name, run in plan:
            if name not in wanted:
                continue
            print(f"running pg {name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                result, details = run()
            except Exception:
                import traceback

                traceback.print_exc()
                failed.append(name)
                result, details = [], {}
            took = time.perf_counter() - start
            print(f"  {name}: {took:.1f}s", file=sys.stderr, flush=True)
            rows += result
            report["benchmarks"][name] = {"elapsed_s": took, "rows": [r.as_dict() for r in result],
                                          "details": details, "error": name in failed}
    finally:
        schemas.drop_all()
    return finish_report(rows, report, failed, "postgres.json")


if __name__ == "__main__":
    sys.exit(main())
