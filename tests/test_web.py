"""The web dashboard: a real `queuectl dashboard` process (or uvicorn in a thread) on a real socket, real HTTP
requests, real SQLite under tmp_path, a real engine where the feature needs one. Every security rule and every
kind of bad request is checked, and each refused request is shown to change nothing."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from queuectl.api import Queue
from queuectl.jobspec import NewJob
from queuectl.store.sqlite import SQLiteStore
from tests.dashboard_helpers import (
    SSE,
    DashboardProc,
    ThreadDashboard,
    csrf_of,
    get,
    http,
    post_form,
    run_async,
    snapshot,
    store_attempt,
    unchanged,
)
from tests.engine_helpers import Engines, enqueue
from tests.helpers import run_proc, wait_until

TOKEN = "s3cret-token-for-tests-0123456789"
XSS = "<script>alert('pwned')</script>"
XSS_COMMAND = f"echo \"{XSS}\"; exit 3"


@dataclasses.dataclass
class Site:
    home: Path
    url: str

    def at(self, path: str) -> str:
        return self.url.rstrip("/") + path

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One dashboard over a queue where a real engine ran: a dead job whose command and output hold <script>, a
    completed job with output, and a pending one delayed by an hour. Tests that use it change nothing."""
    home = tmp_path_factory.mktemp("web") / "home"
    assert run_proc("enqueue", json.dumps({"id": "xss", "command": XSS_COMMAND, "max_retries": 0}),
                    home=home).code == 0
    assert run_proc("enqueue", "--id", "good", "--", "echo hello-from-good", home=home).code == 0
    ran = run_proc("run", "--until-idle", home=home, timeout_s=60)
    assert ran.code == 0, ran
    assert run_proc("enqueue", "--id", "later", "--delay", "1h", "--", "true", home=home).code == 0
    with DashboardProc(home) as dashboard:
        yield Site(home, dashboard.url)


def make_queue(home: Path) -> None:
    """d1, d2: dead (through the Store API, as an engine records them); p1: pending in an hour; r1: processing
    (claimed by an engine that does not run)."""
    home.mkdir(parents=True, exist_ok=True)
    now = time.time()

    async def go() -> None:
        async with SQLiteStore(home / "queue.db") as store:
            for job_id in ("d1", "d2"):
                await store.enqueue([NewJob(id=job_id, command=f"exit 4 # {job_id}", run_at=now - 60, cwd="/tmp",
                                            max_retries=0)], now=now - 60)
                assert await store_attempt(store, job_id, exit_code=4, started_at=now - 50, finished_at=now - 49,
                                           bury=True, tail=f"output of {job_id}\n")
            await store.enqueue([NewJob(id="r1", command="sleep 1000", run_at=now - 5, cwd="/tmp")], now=now - 5)
            assert [c.job.id for c in await store.claim_due("ghost-engine", now=now, limit=1)] == ["r1"]
            await store.enqueue([NewJob(id="p1", command="true", run_at=now + 3600, cwd="/tmp")], now=now)

    run_async(go())


@pytest.fixture
def fresh(home: Path) -> Iterator[Site]:
    """A dashboard of our own over make_queue(), for tests that change the queue."""
    make_queue(home)
    with DashboardProc(home) as dashboard:
        yield Site(home, dashboard.url)


def states(home: Path) -> dict[str, str]:
    return {job_id: job["state"] for job_id, job in snapshot(home)["jobs"].items()}


# ---- pages, escaping, assets, headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs", "/jobs?state=dead", "/jobs/xss", "/jobs?q=script",
                                  "/jobs?q=alert&state=dead"])
def test_commands_and_output_holding_script_show_as_text(site: Site, path: str) -> None:
    reply = get(site.at(path))
    assert reply.status == 200, reply
    assert reply.header("content-type") == "text/html; charset=utf-8"
    page = reply.text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
    assert page.count("<script") == 1 and '<script src="/static/dashboard.js" defer></script>' in page


def test_job_page_shows_attempts_exit_codes_errors_and_output(site: Site) -> None:
    page = get(site.at("/jobs/xss")).text
    assert 'id="job-state">dead<' in page
    assert "exit code 3" in page and "attempt-failed" in page and '<a href="?attempt=1">1</a>' in page
    assert 'id="retry"' in page and 'id="delete"' in page
    assert "&lt;script&gt;" in page.split('id="log"')[1]  # the stored output tail, escaped
    good = get(site.at("/jobs/good")).text
    assert 'id="job-state">completed<' in good and "hello-from-good" in good and 'id="retry"' not in good
    later = get(site.at("/jobs/later")).text
    assert "(the job has not run yet)" in later and "no attempt has finished yet" in later


def test_log_api_returns_the_tail_then_what_follows(site: Site) -> None:
    first = get(site.at("/api/jobs/good/log"))
    assert first.status == 200 and first.header("content-type") == "application/json"
    data = first.json()
    assert data["text"] == "hello-from-good\n" and data["attempt"] == 1 and data["state"] == "completed"
    assert data["offset"] == data["size"] == len(b"hello-from-good\n") and data["start"] == 0
    assert data["live"] is False and data["missing"] is False
    assert get(site.at(f"/api/jobs/good/log?offset={data['offset']}")).json()["text"] == ""
    assert get(site.at("/api/jobs/good/log?offset=3&attempt=1")).json()["text"] == "lo-from-good\n"
    xss = get(site.at("/api/jobs/xss/log")).json()
    assert XSS in xss["text"]  # JSON data: the page sets it with textContent
    never = get(site.at("/api/jobs/later/log")).json()
    assert never["attempt"] is None and never["runs"] == 0 and never["state"] == "pending"


def test_job_table_filters_and_search(site: Site) -> None:
    dead = get(site.at("/jobs?state=dead")).text
    assert 'data-job="xss"' in dead and 'data-job="good"' not in dead and "1 dead job(s)" in dead
    assert 'action="/dlq/retry"' in dead
    assert 'data-job="good"' in get(site.at("/jobs?state=completed")).text
    everything = get(site.at("/jobs")).text
    assert all(f'data-job="{j}"' in everything for j in ("xss", "good", "later")) and "3 job(s)" in everything
    by_command = get(site.at("/jobs?q=hello-from")).text
    assert 'data-job="good"' in by_command and 'data-job="xss"' not in by_command
    by_prefix = get(site.at("/jobs?q=goo")).text
    assert 'data-job="good"' in by_prefix and 'data-job="later"' not in by_prefix
    assert "no jobs matching" in get(site.at("/jobs?q=nothing-like-this")).text


def test_assets_ship_in_the_package_and_nothing_comes_from_the_internet(site: Site) -> None:
    import queuectl.web

    static = Path(queuectl.web.__file__).parent / "static"
    for name in ("dashboard.js", "dashboard.css"):
        reply = get(site.at(f"/static/{name}"))
        assert reply.status == 200 and reply.body == (static / name).read_bytes()
    for path in ("/", "/jobs", "/jobs/xss"):
        assert not re.search(r"""(src|href|action)=["']?(https?:)?//""", get(site.at(path)).text)
    for name in ("dashboard.js", "dashboard.css"):
        assert "http://" not in (static / name).read_text() and "https://" not in (static / name).read_text()
    assert "innerHTML" not in (static / "dashboard.js").read_text()


def test_security_headers_on_every_answer(site: Site) -> None:
    for path in ("/", "/static/dashboard.js", "/api/status", "/metrics", "/jobs/nope"):
        reply = get(site.at(path))
        csp = reply.header("content-security-policy") or ""
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert reply.header("x-frame-options") == "DENY" and reply.header("x-content-type-options") == "nosniff"
        assert reply.header("referrer-policy") == "same-origin"
    assert get(site.at("/")).header("cache-control") == "no-store"


# ---- bad requests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "status", "needle"), [
    ("GET", "/jobs?state=bogus", 400, "unknown state 'bogus'"),
    ("GET", "/jobs?before=abc", 400, "before must be a whole number"),
    ("GET", "/jobs?before=-1", 400, "before must be from 0"),
    ("GET", "/jobs?before=5&after=2", 400, "either before or after"),
    ("GET", "/jobs?limit=0", 400, "limit must be from 1 to 500"),
    ("GET", "/jobs?colour=red", 400, "unknown parameter 'colour'"),
    ("GET", "/jobs/nope", 404, "no job 'nope'"),
    ("GET", "/jobs/xss?attempt=9", 400, "attempt must be from 1 to 1"),
    ("GET", "/jobs/later?attempt=1", 400, "job 'later' has not run yet"),
    ("GET", "/api/jobs/nope/log", 404, '{"error":"no job \'nope\'"}'),
    ("GET", "/api/jobs/good/log?attempt=2", 400, "attempt must be from 1 to 1"),
    ("GET", "/api/jobs/good/log?offset=x", 400, "offset must be a whole number"),
    ("GET", "/nowhere", 404, "no such page: /nowhere"),
    ("GET", "/static/nothing.js", 404, "404"),
    ("GET", "/jobs/xss/retry", 405, "GET is not allowed here"),
    ("GET", "/enqueue", 405, "GET is not allowed here"),
    ("PUT", "/jobs", 405, "PUT is not allowed here"),
    ("DELETE", "/jobs/xss", 405, "DELETE is not allowed here"),
    ("POST", "/jobs", 405, "POST is not allowed here"),
])
def test_bad_requests_get_a_clear_4xx_and_change_nothing(site: Site, method: str, path: str, status: int,
                                                         needle: str) -> None:
    with unchanged(site.home):
        reply = http(method, site.at(path))
    assert reply.status == status, reply
    assert needle in html.unescape(reply.text), reply.text
    if not path.startswith("/api/") and not path.startswith("/static/"):
        assert 'id="error-message"' in reply.text


def test_dns_rebinding_is_refused_on_loopback(site: Site) -> None:
    with unchanged(site.home):
        reply = get(site.at("/"), headers={"Host": f"attacker.example:{site.port}"})
        assert reply.status == 400 and "unexpected Host header" in reply.text
        assert get(site.at("/api/status"), headers={"Host": "attacker.example"}).status == 400
        csrf = csrf_of(get(site.at("/")).text)
        forged = http("POST", site.at("/dlq/retry"), form={"csrf": csrf},
                      headers={"Host": "attacker.example", "Origin": "http://attacker.example"})
        assert forged.status == 400
    for host in (f"localhost:{site.port}", f"127.0.0.1:{site.port}", f"[::1]:{site.port}"):
        assert get(site.at("/api/status"), headers={"Host": host}).status == 200, host


def test_port_in_use_is_one_clear_error(site: Site) -> None:
    result = run_proc("dashboard", "--port", str(site.port), home=site.home)
    assert result.code == 1
    assert result.err.startswith(f"queuectl: error: cannot listen on 127.0.0.1:{site.port}")
    assert result.err.count("\n") == 1


# ---- actions --------------------------------------------------------------------------------------------------------


def test_actions_retry_retry_all_enqueue_delete(fresh: Site) -> None:
    csrf = csrf_of(get(fresh.at("/jobs/d1")).text)
    reply = post_form(fresh.url, "/jobs/d1/retry", {"csrf": csrf})
    assert reply.status == 303 and reply.header("location") == "/jobs/d1?done=retried"
    job = snapshot(fresh.home)["jobs"]["d1"]
    assert job["state"] == "pending" and job["attempts"] == 0
    assert "Job sent back to the queue" in get(fresh.at("/jobs/d1?done=retried")).text

    reply = post_form(fresh.url, "/dlq/retry", {"csrf": csrf})
    assert reply.status == 303 and reply.header("location") == "/jobs?state=dead&done=retried-all&n=1"
    assert states(fresh.home)["d2"] == "pending"
    assert "1 dead job(s) sent back to the queue." in get(fresh.at(reply.header("location") or "")).text

    form = {"csrf": csrf, "command": "echo <b>bold</b> && true", "id": "web-1", "priority": "5", "delay": "1h",
            "timeout": "30s", "max_retries": "2", "cwd": ""}
    reply = post_form(fresh.url, "/enqueue", form)
    assert reply.status == 303 and reply.header("location") == "/jobs/web-1?done=enqueued", reply
    job = snapshot(fresh.home)["jobs"]["web-1"]
    assert (job["command"], job["priority"], job["timeout_s"], job["max_retries"], job["state"]) == (
        "echo <b>bold</b> && true", 5, 30.0, 2, "pending")
    assert job["cwd"] == str(Path.cwd()) or Path(job["cwd"]).is_absolute()
    page = get(fresh.at("/jobs/web-1?done=enqueued")).text
    assert "Job enqueued." in page and "echo &lt;b&gt;bold&lt;/b&gt; &amp;&amp; true" in page

    generated = post_form(fresh.url, "/enqueue", {"csrf": csrf, "command": "true"})
    assert generated.status == 303 and re.fullmatch(r"/jobs/[0-9a-f]{12}\?done=enqueued",
                                                    generated.header("location") or "")

    reply = post_form(fresh.url, "/jobs/web-1/delete", {"csrf": csrf})
    assert reply.status == 303 and reply.header("location") == "/jobs?done=deleted"
    assert "web-1" not in snapshot(fresh.home)["jobs"]


@pytest.mark.parametrize("path", ["/jobs/d1/retry", "/dlq/retry", "/jobs/d1/delete", "/enqueue"])
def test_forged_and_malformed_posts_are_refused_and_change_nothing(fresh: Site, path: str) -> None:
    csrf = csrf_of(get(fresh.at("/")).text)
    origin = fresh.url.rstrip("/")
    form = {"command": "touch /tmp/forged"}
    cases: list[tuple[dict[str, str], dict[str, str], bytes | None, int, str]] = [
        ({**form}, {"Origin": origin}, None, 403, "missing or wrong CSRF token"),
        ({**form, "csrf": "guess"}, {"Origin": origin}, None, 403, "missing or wrong CSRF token"),
        ({**form, "csrf": csrf + "x"}, {"Origin": origin}, None, 403, "missing or wrong CSRF token"),
        ({**form, "csrf": csrf}, {"Origin": "http://evil.example"}, None, 403, "cross-site request refused"),
        ({**form, "csrf": csrf}, {"Origin": "null"}, None, 403, "cross-site request refused"),
        ({**form, "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}, None, 403, "cross-site request refused"),
        ({**form, "csrf": csrf}, {"Origin": origin, "Sec-Fetch-Site": "same-site"}, None, 403, "cross-site"),
        ({}, {"Origin": origin, "Content-Type": "application/json"},
         json.dumps({**form, "csrf": csrf}).encode(), 415, "actions take a form"),
        ({}, {"Origin": origin, "Content-Type": "application/x-www-form-urlencoded"},
         b"csrf=" + csrf.encode() + b"&command=" + b"x" * (3 * 1024 * 1024), 413, "form too large"),
        ({}, {"Origin": origin, "Content-Type": "application/x-www-form-urlencoded"},
         b"csrf=" + csrf.encode() + b"&command=\xff\xfe", 400, "not valid UTF-8"),
    ]
    with unchanged(fresh.home):
        for fields, headers, body, status, needle in cases:
            if body is None:
                reply = http("POST", fresh.at(path), form=fields, headers=headers)
            else:
                reply = http("POST", fresh.at(path), body=body, headers=headers)
            assert reply.status == status, (fields, headers, reply)
            assert needle in html.unescape(reply.text), reply.text


@pytest.mark.parametrize(("path", "fields", "status", "needle"), [
    ("/jobs/nope/retry", {}, 404, "no job 'nope'"),
    ("/jobs/p1/retry", {}, 409, "job 'p1' is pending and cannot be retried"),
    ("/jobs/nope/delete", {}, 404, "no job 'nope'"),
    ("/jobs/r1/delete", {}, 409, "job 'r1' is processing and cannot be deleted while it runs"),
    ("/enqueue", {}, 400, "missing command"),
    ("/enqueue", {"command": "   "}, 400, "missing command"),
    ("/enqueue", {"command": "true", "priority": "high"}, 400, "priority must be a whole number"),
    ("/enqueue", {"command": "true", "id": "p1"}, 409, "job 'p1' already exists"),
    ("/enqueue", {"command": "true", "id": "../etc"}, 400, "job id must be"),
    ("/enqueue", {"command": "true", "delay": "soon"}, 400, "delay must be"),
    ("/enqueue", {"command": "true", "cwd": "relative/dir"}, 400, "cwd must be an absolute path"),
    ("/enqueue", {"command": "true", "state": "dead"}, 400, "unknown form field 'state'"),
    ("/enqueue", {"command": "true", "timeout": "-1"}, 400, "timeout must be"),
])
def test_refused_actions_get_a_clear_4xx_and_change_nothing(fresh: Site, path: str, fields: dict[str, str],
                                                            status: int, needle: str) -> None:
    csrf = csrf_of(get(fresh.at("/")).text)
    with unchanged(fresh.home):
        reply = post_form(fresh.url, path, {"csrf": csrf, **fields})
    assert reply.status == status, reply
    assert needle in html.unescape(reply.text), reply.text
    assert 'id="error-message"' in reply.text


# ---- live data ------------------------------------------------------------------------------------------------------


def test_counts_are_pushed_live_over_server_sent_events(fresh: Site) -> None:
    stream = SSE(fresh.at("/events"))
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("content-type", "").startswith("text/event-stream")
        first = stream.next_data()
        assert first["counts"] == {"pending": 1, "waiting": 0, "processing": 1, "completed": 0, "failed": 0,
                                   "dead": 2, "cancelled": 0}
        assert first["running"][0]["id"] == "r1" and first["running"][0]["command"] == "sleep 1000"

        async def add() -> None:
            async with Queue(fresh.home) as q:
                await q.enqueue([NewJob(id="new", command="true", run_at=time.time() + 600, cwd="/tmp")])

        run_async(add())
        later = stream.wait_for(lambda d: d["counts"]["pending"] == 2)
        assert later["total"] == 5
    finally:
        stream.close()
    status = get(fresh.at("/api/status")).json()
    assert status["counts"]["pending"] == 2 and status["engines"] == []


def test_the_dashboard_stops_promptly_with_a_stream_open(home: Path) -> None:
    make_queue(home)
    dashboard = DashboardProc(home)
    stream = SSE(dashboard.url + "events")
    try:
        stream.next_data()
        started = time.monotonic()
        assert dashboard.stop() == 0
        assert time.monotonic() - started < 8
    finally:
        stream.close()
        dashboard.__exit__(None, None, None)
    with pytest.raises(OSError):
        get(dashboard.url, timeout=2)


# ---- tokens -----------------------------------------------------------------------------------------------------


@pytest.fixture
def guarded(home: Path) -> Iterator[Site]:
    make_queue(home)
    with DashboardProc(home, "--token", TOKEN) as dashboard:
        yield Site(home, dashboard.url)


PATHS = ["/", "/jobs", "/jobs/d1", "/jobs/nope", "/static/dashboard.js", "/metrics", "/events", "/api/status",
         "/api/jobs/d1/log", "/nowhere"]


def test_a_token_is_required_on_every_request(guarded: Site) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with unchanged(guarded.home):
        for path in PATHS:
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": "Basic eA=="},
                            {"Cookie": f"queuectl_session_{guarded.port}=forged"}):
                reply = get(guarded.at(path), headers=headers)
                assert reply.status == 401, (path, headers, reply)
                assert reply.header("www-authenticate") == 'Bearer realm="queuectl"'
            assert get(guarded.at(path + ("&" if "?" in path else "?") + "token=wrong")).status == 401
        assert 'name="token"' in get(guarded.at("/")).text  # the 401 page asks for it
        assert get(guarded.at("/api/status")).json()["error"].startswith("this dashboard needs its token")
        for path in ("/", "/jobs", "/jobs/d1", "/static/dashboard.js", "/metrics", "/api/status"):
            assert get(guarded.at(path), headers=bearer).status == 200, path
        assert get(guarded.at("/jobs/nope"), headers=bearer).status == 404
        page = get(guarded.at("/"), headers=bearer).text
        csrf = csrf_of(page)
        for path in ("/jobs/d1/retry", "/dlq/retry", "/jobs/d1/delete", "/enqueue"):
            refused = post_form(guarded.url, path, {"csrf": csrf, "command": "true"})
            assert refused.status == 401, path
    stream = SSE(guarded.at("/events"), headers=bearer)
    try:
        assert stream.next_data()["counts"]["dead"] == 2
    finally:
        stream.close()


def test_a_browser_trades_the_token_for_a_session_cookie(guarded: Site) -> None:
    first = get(guarded.at(f"/jobs?state=dead&token={TOKEN}"))
    assert first.status == 303 and first.header("location") == "/jobs?state=dead"
    cookie = first.header("set-cookie") or ""
    name = f"queuectl_session_{guarded.port}"
    assert cookie.startswith(f"{name}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert TOKEN not in value and len(value) == 64
    session = {"Cookie": f"{name}={value}"}
    page = get(guarded.at("/jobs?state=dead"), headers=session)
    assert page.status == 200 and 'data-job="d1"' in page.text
    reply = post_form(guarded.url, "/jobs/d1/retry", {"csrf": csrf_of(page.text)}, headers=session)
    assert reply.status == 303 and states(guarded.home)["d1"] == "pending"
    # API paths take ?token= as it is (Prometheus can be given it as a parameter); no redirect.
    assert get(guarded.at(f"/metrics?token={TOKEN}")).status == 200
    assert get(guarded.at(f"/api/status?token={TOKEN}")).status == 200


@pytest.mark.parametrize("args", [["dashboard", "--port", "99999"], ["dashboard", "--port", "-1"],
                                  ["run", "--until-idle", "--dashboard", "--dashboard-port", "70000"]])
def test_a_port_out_of_range_is_a_usage_error(home: Path, args: list[str]) -> None:
    make_queue(home)
    refused = run_proc(*args, home=home)
    assert refused.code == 2 and refused.err.strip().startswith("queuectl: error: port must be from 0 to 65535")
    assert len(refused.err.strip().splitlines()) == 1


def test_listening_beyond_loopback_needs_a_token(home: Path) -> None:
    make_queue(home)
    refused = run_proc("dashboard", "--host", "0.0.0.0", "--port", "0", home=home)
    assert refused.code == 2 and "refusing to serve the dashboard on 0.0.0.0 without a token" in refused.err
    short = run_proc("dashboard", "--host", "0.0.0.0", "--port", "0", "--token", "short", home=home)
    assert short.code == 2 and "at least 16 characters" in short.err
    empty_env = run_proc("dashboard", "--host", "0.0.0.0", "--port", "0", home=home,
                         env={"QUEUECTL_DASHBOARD_TOKEN": ""})
    assert empty_env.code == 2
    with DashboardProc(home, "--host", "0.0.0.0", env={"QUEUECTL_DASHBOARD_TOKEN": TOKEN}) as dashboard:
        port = urlsplit(dashboard.url).port
        assert dashboard.url.startswith("http://0.0.0.0:")
        local = f"http://127.0.0.1:{port}"
        assert get(local + "/api/status").status == 401
        # Not bound to loopback: any Host name is fine, the token is what counts.
        reply = get(local + "/api/status", headers={"Authorization": f"Bearer {TOKEN}", "Host": "queue.example"})
        assert reply.status == 200 and reply.json()["counts"]["dead"] == 2


# ---- search over a window; the engine with its dashboard ------------------------------------------------------


def test_a_text_search_reads_a_bounded_window_and_offers_to_go_further(home: Path) -> None:
    home.mkdir(parents=True)
    now = time.time()

    async def fill() -> None:
        async with Queue(home) as q:
            await q.enqueue([NewJob(id=f"job-{i:03d}", command=f"echo {'needle' if i in (10, 150) else 'hay'}",
                                    run_at=now + 3600, cwd="/tmp") for i in range(200)])

    run_async(fill())
    with ThreadDashboard(home, search_window=60) as dashboard:
        first = get(dashboard.url + "jobs?q=needle").text
        assert 'data-job="job-150"' in first and 'data-job="job-010"' not in first
        further = re.search(r'href="(/jobs\?[^"]*before=\d+[^"]*)" rel="next">search older jobs', first)
        assert further, first
        found = None
        url = further.group(1).replace("&amp;", "&")
        for _ in range(5):
            page = get(dashboard.url.rstrip("/") + url).text
            if 'data-job="job-010"' in page:
                found = page
                break
            more = re.search(r'href="(/jobs\?[^"]*)" rel="next">', page)
            assert more, page
            url = more.group(1).replace("&amp;", "&")
        assert found is not None
        # An exact id is found wherever it is, first.
        exact = get(dashboard.url + "jobs?q=job-003").text
        assert exact.index('data-job="job-003"') < exact.index("</tbody>")
        # Keyset pages without a search: 50 per page, newest first, back and forth.
        page1 = get(dashboard.url + "jobs").text
        ids1 = re.findall(r'data-job="(job-\d+)"', page1)
        assert ids1 == [f"job-{i:03d}" for i in range(199, 149, -1)]
        older = re.search(r'href="(/jobs\?before=\d+)" rel="next"', page1)
        assert older
        page2 = get(dashboard.url.rstrip("/") + older.group(1)).text
        assert re.findall(r'data-job="(job-\d+)"', page2) == [f"job-{i:03d}" for i in range(149, 99, -1)]
        newer = re.search(r'href="(/jobs\?after=\d+)" rel="prev"', page2)
        assert newer
        back = get(dashboard.url.rstrip("/") + newer.group(1)).text
        assert re.findall(r'data-job="(job-\d+)"', back) == ids1


def test_run_with_dashboard_serves_it_from_inside_the_engine(home: Path, tmp_path: Path) -> None:
    with Engines(home, tmp_path) as engines:
        engine = engines.start("--dashboard", "--dashboard-port", "0", workers=2)
        url = engine.wait_log(r"dashboard on (http://127\.0\.0\.1:\d+/)").group(1)
        assert get(url + "api/status").json()["counts"]["pending"] == 0
        # Other processes open and close the database meanwhile (that once deleted the WAL under an engine that
        # held two connections): they must still see what the engine writes.
        assert run_proc("status", home=home).code == 0
        job_id = enqueue(home, "echo from-the-engine")
        wait_until(lambda: '"state": "completed"' in run_proc("inspect", job_id, "--json", home=home).out,
                   timeout_s=30, what="another process to see the job completed")
        status = wait_until(lambda: (s := get(url + "api/status").json())["counts"]["completed"] == 1 and s,
                            timeout_s=30, what="the dashboard to see it")
        assert status and len(status["engines"]) == 1 and status["engines"][0]["workers"] == 2
        assert get(url + f"api/jobs/{job_id}/log").json()["text"] == "from-the-engine\n"
        metrics = get(url + "metrics").text
        assert "queuectl_engines 1.0" in metrics
        engine.send(signal.SIGTERM)
        assert engine.wait_exit(timeout=20) == 0
        assert "engine stopped after" in engine.log()
    with pytest.raises(OSError):
        get(url, timeout=2)


def test_run_with_dashboard_refuses_a_busy_port_before_starting(home: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_proc("run", "--dashboard", "--dashboard-port", str(port), home=home)
    assert result.code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.err
    assert "started with" not in result.err  # the engine never started


def test_overview_shows_queues_and_which_are_paused(fresh: Site) -> None:
    assert run_proc("queue", "add", "gpu", "--concurrency", "2", home=fresh.home).code == 0
    assert run_proc("pause", "gpu", home=fresh.home).code == 0

    def shown() -> str | None:
        page = get(fresh.at("/")).text
        return page if "gpu" in page.split('id="queues"')[1] else None

    page = wait_until(shown, 10, "the overview to list queue gpu")
    row = page.split('id="queues"')[1].split("gpu", 1)[1].split("</tr>")[0]
    assert "paused" in row and ">2<" in row
