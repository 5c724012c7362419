"""Multi-host, simulated: two engines, each in a network namespace of its own (and a UTS namespace with its own host
name), reach the PostgreSQL server of tests/pg.py only over a veth link to this host, and share one queue.

The server listens on the host's loopback, which a namespace does not share; a small TCP forwarder in this process
listens on the host end of each veth link and relays to the server (as a router or a proxy would). Inside a
namespace 127.0.0.1:5432 is refused, so the engines' traffic provably crosses the links. Needs root (ip netns,
unshare); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.engine_helpers import cli, cli_env, cli_ok, kill_processes_of_home, wait_until
from tests.pg import postgres_url, reserve_schema, skip_unless_reachable, url_with_schema

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL store not available (pip install .[postgres])")
from psycopg.conninfo import conninfo_to_dict  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from queuectl.store.postgres import PostgresStore  # noqa: E402

JOBS = 300


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


class Link:
    """A network namespace joined to this host by a veth pair: host end `host_ip`, namespace end `ns_ip`."""

    def __init__(self, name: str, subnet: ipaddress.IPv4Network) -> None:
        self.ns = name
        self.host_if, self.ns_if = f"{name}h", f"{name}n"
        self.host_ip, self.ns_ip = (str(a) for a in list(subnet.hosts())[:2])
        self.prefix = subnet.prefixlen

    def create(self) -> None:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.ns)
        _ip("addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/{self.prefix}", "dev", self.ns_if)
        _ip("-n", self.ns, "link", "set", self.ns_if, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")

    def delete(self) -> None:
        _ip("netns", "del", self.ns, check=False)  # takes its veth end, and with it the pair
        _ip("link", "del", self.host_if, check=False)

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True, timeout=30,
                              check=False, **kwargs)


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    used = [ipaddress.IPv4Interface(word.split()[3]).network for word in _ip("-4", "-o", "addr").stdout.splitlines()]
    block = ipaddress.IPv4Network(f"10.{random.randrange(200, 250)}.{random.randrange(256)}.0/24")
    pool = list(block.subnets(new_prefix=30))
    free = [n for n in pool if not any(n.overlaps(u) for u in used)]
    return random.sample(free, count)


@pytest.fixture
def links() -> Iterator[list[Link]]:
    """Two namespaces with a veth link each, or a skip saying why the machine does not allow it."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("network namespaces need root on Linux (ip netns, unshare)")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"network namespace simulation needs `{tool}`")
    tag = f"qc{os.getpid() % 100000}{secrets.token_hex(1)}"
    made = [Link(f"{tag}{k}", subnet) for k, subnet in zip("ab", _free_subnets(2), strict=True)]
    try:
        probe = _ip("netns", "add", made[0].ns, check=False)
        if probe.returncode != 0:
            pytest.skip(f"network namespaces are not permitted here: {probe.stderr.strip()}")
        _ip("netns", "del", made[0].ns, check=False)
        for link in made:
            link.create()
        yield made
    finally:
        for link in made:
            link.delete()


class Forwarder:
    """TCP relays from the host end of each link to the server, on an event loop in a thread of this process.
    Counts the connections it accepted from each peer address."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.peers: Counter[str] = Counter()
        self.ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-forwarder", daemon=True)

    def start(self, addresses: list[str]) -> None:
        self._thread.start()
        for address in addresses:
            server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._relay, address, 0), self._loop
                                                      ).result(10)
            self._servers.append(server)
            self.ports[address] = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers[writer.get_extra_info("peername")[0]] += 1
        try:
            if isinstance(self.target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


def _target(url: str) -> tuple[str, int] | str:
    params: dict[str, Any] = conninfo_to_dict(url)
    host = str(params.get("host") or "/var/run/postgresql").split(",")[0]
    port = int(str(params.get("port") or 5432).split(",")[0])
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def _url_via(url: str, host: str, port: int, schema: str) -> str:
    """The test server's URL as seen from a namespace: the forwarder's address instead of the server's."""
    params: dict[str, Any] = conninfo_to_dict(url)
    auth = quote(str(params.get("user") or "postgres"), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")
    return url_with_schema(f"postgresql://{auth}@{host}:{port}/{quote(str(params.get('dbname') or ''), safe='')}",
                           schema)


class NsEngine:
    """`queuectl run` inside a link's namespace, in a UTS namespace of its own named `hostname`."""

    def __init__(self, link: Link, hostname: str, home: Path, url: str, workers: int) -> None:
        self.hostname = hostname
        self.home = home
        self.log_path = home.parent / f"{hostname}.log"
        boot = ("import os, socket, sys; socket.sethostname(sys.argv[1]); "
                "os.execv(sys.executable, [sys.executable, '-m', 'queuectl', *sys.argv[2:]])")
        env = cli_env(home, {"QUEUECTL_DATABASE_URL": url})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", link.ns, "unshare", "--uts", sys.executable, "-c", boot, hostname,
                 "run", "--workers", str(workers)], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine on {self.hostname} exited ({self.proc.returncode}):\n{self.log()}")
            return "started with" in self.log()

        wait_until(started, timeout=30, what=f"the engine on {self.hostname} to start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def test_engines_in_two_network_namespaces_share_one_queue_with_no_job_run_twice(
        links: list[Link], tmp_path: Path, home: Path) -> None:
    base = postgres_url()
    skip_unless_reachable(base)
    schema = reserve_schema(base)
    url = url_with_schema(base, schema)
    asyncio.run(_migrate(url))
    for link in links:  # isolation: the server's own address is not reachable from inside
        refused = link.run([sys.executable, "-c", f"import socket; socket.create_connection({_target(base)!r}, 2)"])
        assert refused.returncode != 0, f"{link.ns} reaches the server directly: not a separate network"
    forwarder = Forwarder(_target(base))
    engines: list[NsEngine] = []
    work = tmp_path / "work"
    work.mkdir()
    tag = secrets.token_hex(2)
    try:
        forwarder.start([link.host_ip for link in links])
        for name, link in zip(("a", "b"), links, strict=True):
            ns_home = tmp_path / f"host-{name}" / "home"
            ns_home.mkdir(parents=True)
            engines.append(NsEngine(link, f"host-{name}-{tag}", ns_home,
                                    _url_via(base, link.host_ip, forwarder.ports[link.host_ip], schema), workers=4))
        for engine in engines:
            engine.wait_started()
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            hosts = {r["host"] for r in conn.execute("SELECT host FROM engines").fetchall()}
            assert hosts == {e.hostname for e in engines}
            # Jobs enqueued on this host; each records the host (UTS name) it ran on.
            lines = "".join(json.dumps({"id": f"n{i:03d}", "command": f'echo "$QUEUECTL_JOB_ID $(hostname)" '
                                        f">> {work}/runs"}) + "\n" for i in range(JOBS))
            cli_ok(home, "enqueue", "--file", "-", input=lines, cwd=work, env={"QUEUECTL_DATABASE_URL": url})
            wait_until(lambda: conn.execute("SELECT count(*) AS n FROM jobs WHERE state = 'completed'").fetchone()[
                "n"] == JOBS or None, timeout=60, what=f"{JOBS} jobs completed")
            ran = [line.split() for line in (work / "runs").read_text().splitlines()]
            assert Counter(job_id for job_id, _ in ran).most_common(1)[0][1] == 1, "a job ran twice"
            assert sorted(job_id for job_id, _ in ran) == [f"n{i:03d}" for i in range(JOBS)]
            by_host = Counter(host for _, host in ran)
            assert set(by_host) == {e.hostname for e in engines}, f"not shared: {dict(by_host)}"
            rows = conn.execute("SELECT j.engine_id AS claimed_by, a.engine_id FROM attempts a JOIN jobs j "
                                "ON j.id = a.job_id").fetchall()
            assert len(rows) == JOBS and all(r["engine_id"].startswith(("host-a-", "host-b-")) for r in rows)
            assert conn.execute("SELECT count(*) AS n FROM jobs WHERE runs <> 1").fetchone()["n"] == 0
        assert {link.ns_ip for link in links} <= set(forwarder.peers), f"connections seen: {dict(forwarder.peers)}"

        # `worker stop` on this host cannot signal engines on other hosts: the flag reaches them at a heartbeat.
        t0 = time.monotonic()
        stop = cli(home, "worker", "stop", "--wait", "--timeout", "30s", env={"QUEUECTL_DATABASE_URL": url},
                   timeout=60)
        assert stop.returncode == 0, stop.stderr
        for engine in engines:
            assert f"on {engine.hostname}) stopped" in stop.stdout, stop.stdout
            assert engine.proc.wait(timeout=15) == 0, engine.log()
            assert "stop requested by `queuectl worker stop`" in engine.log()
        assert time.monotonic() - t0 < 30
    finally:
        for engine in engines:
            engine.stop()
            kill_processes_of_home(engine.home)
        forwarder.stop()


async def _migrate(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.close()
