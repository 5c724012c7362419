"""The dashboard: a small Starlette app over the library API (queuectl.api.Queue); it never touches SQL.

Pages: `/` (counts, engines, running jobs, the last 15 minutes, newest failures, enqueue), `/jobs` (the table:
filter by state, search by id or command, keyset pages that stay quick on a million jobs), `/jobs/{id}` (fields,
attempts, exit codes, errors, the live tail of the log). Live data: `/events` (server-sent events: counts,
engines, running jobs, pushed when they change), `/api/status`, `/api/jobs/{id}/log`. `/metrics`: Prometheus.
Actions (POST + CSRF): `/enqueue`, `/jobs/{id}/retry`, `/jobs/{id}/delete`, `/dlq/retry`.

Every error is a 4xx/5xx with one clear sentence (HTML on pages, JSON under /api/ and /events, text on
/metrics); a refused request changes nothing. Security rules: see queuectl.web.security.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from queuectl import jobspec
from queuectl.api import JobDetail, Queue, Status, parse_state
from queuectl.errors import ConflictError, NotFoundError, QueueCtlError, StoreError, ValidationError
from queuectl.metrics import CONTENT_TYPE, Metrics
from queuectl.models import TERMINAL_STATES, Job, JobState
from queuectl.stats import Stats, summarize
from queuectl.textfmt import one_line
from queuectl.timefmt import human_duration, iso
from queuectl.web.security import SECURITY_HEADERS, Guard

HERE = Path(__file__).parent
PAGE_SIZE = 50
#: A text search reads at most this many jobs (by enqueue order) per request, then offers to search further.
SEARCH_WINDOW = 50_000
#: The first read of a log shows at most its last 64 KiB; each later read returns at most 256 KiB more.
LOG_TAIL_BYTES = 64 * 1024
LOG_CHUNK_BYTES = 256 * 1024
#: A form body larger than this is refused: a command of the largest size, each byte form-encoded as %XX, and room
#: for the other fields.
MAX_FORM_BYTES = 3 * jobspec.MAX_COMMAND_BYTES + 64 * 1024
#: How often the live data (counts, engines, running jobs) is read, whatever the number of open pages.
LIVE_INTERVAL_S = 1.0
#: The overview's window for rates and newest failures.
OVERVIEW_WINDOW_S = 15 * 60
#: Its run-time and queue-wait percentiles are those of the newest this many attempts of the window.
OVERVIEW_SAMPLES = 2000
#: ... and are read again at most this often.
OVERVIEW_STATS_TTL_S = 3.0
API_PREFIXES = ("/api/", "/events", "/metrics")

DONE_MESSAGES = {
    "enqueued": "Job enqueued.",
    "retried": "Job sent back to the queue with its attempts reset.",
    "retried-all": "{n} dead job(s) sent back to the queue.",
    "deleted": "Job deleted, with its history and logs.",
}


def _is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES)


# ---- security: one ASGI middleware in front of everything -------------------------------------------------------


class SecurityMiddleware:
    """Host check, token check and security headers, before any route runs (see queuectl.web.security)."""

    def __init__(self, app: ASGIApp, guard: Guard, templates: jinja2.Environment) -> None:
        self.app = app
        self.guard = guard
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.append(name.decode(), value.decode())
                if "cache-control" not in headers:
                    headers.append("cache-control", "no-store")
            await send(message)

        refusal = self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _check(self, scope: Scope) -> Response | None:
        guard = self.guard
        headers = Headers(scope=scope)
        path: str = scope["path"]
        if not guard.host_ok(headers.get("host")):
            return self._error(path, 400, "unexpected Host header: this dashboard answers to 127.0.0.1 or "
                                          "localhost only (it listens on a loopback address)")
        if guard.token is None:
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = query.get("token", [None])[-1]
        if given is not None:
            if not guard.token_ok(given):
                return self._unauthorized(path, "wrong token")
            if _is_api(path) or scope["method"] not in ("GET", "HEAD"):
                return None
            rest = {k: v for k, v in query.items() if k != "token"}
            target = path + ("?" + urlencode(rest, doseq=True) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(guard.cookie_name, guard.session_value(), httponly=True, samesite="strict",
                                path="/")
            return response
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            if guard.token_ok(auth[7:].strip()):
                return None
            return self._unauthorized(path, "wrong token")
        cookies = _cookies(headers.get("cookie", ""))
        if guard.session_ok(cookies.get(guard.cookie_name)):
            return None
        return self._unauthorized(path, "this dashboard needs its token")

    def _unauthorized(self, path: str, reason: str) -> Response:
        message = (f"{reason}: send 'Authorization: Bearer <token>', or open the page once with ?token=<token>")
        response = self._error(path, 401, message, login=True)
        response.headers["www-authenticate"] = 'Bearer realm="queuectl"'
        return response

    def _error(self, path: str, status: int, message: str, *, login: bool = False) -> Response:
        if path == "/metrics":
            return PlainTextResponse(message + "\n", status_code=status)
        if _is_api(path):
            return JSONResponse({"error": message}, status_code=status)
        html = self.templates.get_template("error.html").render(
            status=status, message=message, login=login, path=path, counts=None, csrf="")
        return HTMLResponse(html, status_code=status)


def _cookies(header: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found.setdefault(name, value)
    return found


# ---- live data --------------------------------------------------------------------------------------------------


def status_payload(s: Status, now: float) -> dict[str, Any]:
    """Counts, engines and running jobs as the pages show them (times already human-readable)."""
    return {
        "counts": {state.value: s.counts.by_state.get(state, 0) for state in JobState},
        "total": s.counts.total,
        "oldest_due": None if s.counts.oldest_pending_age_s is None else human_duration(s.counts.oldest_pending_age_s),
        "engines": [
            {"id": e.id, "host": e.host, "pid": e.pid, "workers": e.workers,
             "up": human_duration(max(0.0, now - e.started_at)),
             "heartbeat": human_duration(max(0.0, now - e.heartbeat_at)),
             "running": sum(1 for j in s.running if j.engine_id == e.id)}
            for e in s.engines
        ],
        "running": [
            {"id": j.id, "engine": j.engine_id or "", "command": one_line(j.command, 200),
             "elapsed": human_duration(max(0.0, now - j.started_at)) if j.started_at else "-"}
            for j in s.running[:100]
        ],
        "running_total": len(s.running),
        "queues": [{"name": q.name, "concurrency": q.concurrency, "paused": q.paused, "running": q.running}
                   for q in s.queues],
    }


class Live:
    """One read of the live data per interval, shared by every open page and stream."""

    def __init__(self, queue: Queue, interval_s: float = LIVE_INTERVAL_S) -> None:
        self.queue = queue
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._at = -1e9
        self._payload: dict[str, Any] = {}

    async def current(self) -> dict[str, Any]:
        async with self._lock:
            if time.monotonic() - self._at >= self.interval_s * 0.9:
                status = await self.queue.status()
                self._payload = status_payload(status, time.time())
                self._at = time.monotonic()
            return self._payload

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events: the payload whenever it changes, a comment every 15 s otherwise."""
        yield "retry: 2000\n\n"
        last: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        while True:
            try:
                payload = await self.current()
            except QueueCtlError as exc:
                yield f"event: problem\ndata: {json.dumps({'error': str(exc)})}\n\n"
                payload = last or {}
            if payload != last:
                yield f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
                last = payload
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 15:
                yield ": still here\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(self.interval_s)


# ---- the app ------------------------------------------------------------------------------------------------------


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template: a command or output holding <script> shows as text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dur"] = human_duration
    env.filters["iso"] = lambda ts: iso(ts) or "-"
    env.filters["clock"] = lambda ts: "-" if ts is None else time.strftime("%H:%M:%S", time.gmtime(ts))
    env.filters["num"] = lambda n: f"{n:,}"
    env.filters["short"] = one_line
    env.filters["pct"] = lambda x: "-" if x is None else f"{x * 100:.1f}%"
    return env


class Dashboard:
    """Handlers over one open Queue."""

    def __init__(self, queue: Queue, guard: Guard, *, cwd: str | None = None,
                 live_interval_s: float = LIVE_INTERVAL_S, search_window: int = SEARCH_WINDOW) -> None:
        self.queue = queue
        self.guard = guard
        self.cwd = cwd or os.getcwd()
        self.search_window = search_window
        self.templates = make_templates()
        self.live = Live(queue, live_interval_s)
        self.metrics = Metrics()
        self._stats_lock = asyncio.Lock()
        self._stats_at = -1e9
        self._stats: Stats | None = None

    # ---- rendering helpers ----

    async def page(self, name: str, request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
        counts = context.pop("counts", None)
        if counts is None:
            counts = (await self.live.current())["counts"]
        done = request.query_params.get("done")
        message = DONE_MESSAGES.get(done or "", "")
        if "{n}" in message:
            n = request.query_params.get("n", "")
            message = message.format(n=int(n) if n.isdigit() else "some")
        html = self.templates.get_template(name).render(
            counts=counts, csrf=self.guard.csrf, done=message, path=request.url.path, **context)
        return HTMLResponse(html, status_code=status_code)

    # ---- pages ----

    async def overview(self, request: Request) -> Response:
        live = await self.live.current()
        return await self.page("index.html", request, counts=live["counts"], live=live,
                               stats=await self.window_stats(), cwd=self.cwd,
                               window=f"{OVERVIEW_WINDOW_S // 60} min")

    async def window_stats(self) -> Stats | None:
        """The overview's last 15 minutes, read at most every OVERVIEW_STATS_TTL_S whatever the number of open
        pages; None if the backend cannot compute stats (or the database is busy beyond its timeout)."""
        async with self._stats_lock:
            if time.monotonic() - self._stats_at >= OVERVIEW_STATS_TTL_S:
                now = time.time()
                try:
                    self._stats = summarize(await self.queue.stats_row(
                        since=now - OVERVIEW_WINDOW_S, until=now, samples=OVERVIEW_SAMPLES, bucket_s=60, top=8))
                except StoreError:
                    self._stats = None
                self._stats_at = time.monotonic()
            return self._stats

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        _only(params, {"state", "q", "before", "after", "limit", "done", "n"})
        state = parse_state(params["state"]) if params.get("state") else None
        text = (params.get("q") or "").strip()
        before = _seq(params.get("before"), "before")
        after = _seq(params.get("after"), "after")
        if before is not None and after is not None:
            raise ValidationError("give either before or after, not both")
        limit = _int(params.get("limit"), "limit", PAGE_SIZE, 1, 500)
        q = self.queue
        exact: Job | None = None
        if text and before is None and after is None:
            try:
                found = await q.get(text)
            except QueueCtlError:
                found = None
            if found is not None and (state is None or found.state == state):
                exact = found
        newest = 0
        if text:  # the bounds of a text search's window
            newest_list = await q.list_jobs(limit=1)
            newest = newest_list[0].seq if newest_list else 0
        window_end: int | None = None  # a text search stopped here (seq): "search older" continues below it
        if after is not None:
            hi = after + 1 + self.search_window if text else None
            rows = await q.search_jobs(text=text or None, state=state, above_seq=after, below_seq=hi,
                                       limit=limit + 1, newest_first=False)
            has_newer = len(rows) > limit or (hi is not None and hi <= newest)
            rows = list(reversed(rows[:limit]))
            has_older = True
        else:
            lo = max(0, (before if before is not None else newest + 1) - 1 - self.search_window) if text else None
            rows = await q.search_jobs(text=text or None, state=state, below_seq=before, above_seq=lo or None,
                                       limit=limit + 1, newest_first=True)
            has_older = len(rows) > limit
            rows = rows[:limit]
            if text and not has_older and lo:
                window_end = lo + 1
            has_newer = before is not None
        if exact is not None:
            rows = [exact] + [j for j in rows if j.id != exact.id]
        base = {"state": state.value if state else None, "q": text or None, "limit": limit if limit != PAGE_SIZE
                else None}
        links = {
            "newer": _url("/jobs", base, after=rows[0].seq) if has_newer and rows else
            (_url("/jobs", base) if has_newer else None),
            "older": _url("/jobs", base, before=rows[-1].seq) if has_older and rows else None,
            "further": _url("/jobs", base, before=window_end) if window_end else None,
            "first": _url("/jobs", base) if (before is not None or after is not None) else None,
        }
        live = await self.live.current()
        return await self.page(
            "jobs.html", request, counts=live["counts"], jobs=rows, state=state, q=text, links=links,
            states=[s.value for s in JobState], searched_from=window_end, window=self.search_window,
            state_total=live["counts"].get(state.value, 0) if state else live["total"])

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        _only(request.query_params, {"attempt", "done", "n"})
        detail: JobDetail = await self.queue.inspect(job_id)
        runs = detail.job.runs
        if not runs and request.query_params.get("attempt"):
            raise ValidationError(f"job {job_id!r} has not run yet: it has no attempts")
        attempt = _int(request.query_params.get("attempt"), "attempt", runs, 1, runs) if runs else None
        return await self.page("job.html", request, d=detail, job=detail.job, attempt=attempt,
                               terminal=detail.job.state in TERMINAL_STATES)

    # ---- live data and APIs ----

    async def events(self, request: Request) -> Response:
        return StreamingResponse(self.live.stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def api_status(self, request: Request) -> Response:
        return JSONResponse(await self.live.current())

    async def api_log(self, request: Request) -> Response:
        """A piece of an attempt's log: from `offset` (bytes), or its last 64 KiB when offset is -1 or absent."""
        job_id = request.path_params["job_id"]
        _only(request.query_params, {"attempt", "offset"})
        job = await self.queue.get(job_id)
        base = {"job": job.id, "state": job.state.value, "runs": job.runs}
        if job.runs == 0:
            return JSONResponse({**base, "attempt": None, "text": "", "offset": 0, "start": 0, "size": 0,
                                 "missing": False})
        attempt = _int(request.query_params.get("attempt"), "attempt", job.runs, 1, job.runs)
        offset = _int(request.query_params.get("offset"), "offset", -1, -1, 1 << 62)
        _, number, path = await self.queue.log_path(job_id, attempt)
        text, start, end, size, missing = await asyncio.to_thread(_read_log, path, offset)
        return JSONResponse({**base, "attempt": number, "text": text, "offset": end, "start": start, "size": size,
                             "missing": missing,
                             "live": job.state == JobState.PROCESSING and job.runs == number})

    async def metrics_endpoint(self, request: Request) -> Response:
        body = await self.metrics.render(self.queue)
        return Response(body, media_type=CONTENT_TYPE)

    # ---- actions: POST, CSRF-checked, then one API call ----

    async def form(self, request: Request) -> dict[str, str]:
        """The submitted form, once the request is shown to come from one of our pages (403 otherwise)."""
        headers = request.headers
        if not self.guard.same_origin(headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host")):
            raise HTTPException(403, "cross-site request refused: actions must come from the dashboard's own pages")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise HTTPException(415, "actions take a form (application/x-www-form-urlencoded)")
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            raise HTTPException(413, "form too large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(413, "form too large")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=50)
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "the form is not valid UTF-8 url-encoded data") from None
        form = {k: v[-1] for k, v in fields.items()}
        if not self.guard.csrf_ok(form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return form

    async def retry(self, request: Request) -> Response:
        await self.form(request)
        job_id = request.path_params["job_id"]
        await self.queue.retry_dead([job_id])
        return RedirectResponse(_url(f"/jobs/{_quote(job_id)}", {}, done="retried"), status_code=303)

    async def retry_all(self, request: Request) -> Response:
        await self.form(request)
        ids = await self.queue.retry_dead(None)
        return RedirectResponse(_url("/jobs", {"state": "dead"}, done="retried-all", n=len(ids)), status_code=303)

    async def delete(self, request: Request) -> Response:
        await self.form(request)
        await self.queue.delete([request.path_params["job_id"]])
        return RedirectResponse(_url("/jobs", {}, done="deleted"), status_code=303)

    async def enqueue(self, request: Request) -> Response:
        form = await self.form(request)
        fields = ("command", "id", "priority", "delay", "timeout", "max_retries", "cwd")
        unknown = sorted(set(form) - set(fields) - {"csrf"})
        if unknown:
            raise ValidationError(f"unknown form field {unknown[0]!r}")
        spec: dict[str, Any] = {k: form[k].strip() if k != "command" else form[k]
                                for k in fields if form.get(k, "").strip()}
        if "command" not in spec:
            raise ValidationError("missing command")
        job = jobspec.from_mapping(spec, cwd=self.cwd)
        await self.queue.enqueue([job])
        return RedirectResponse(_url(f"/jobs/{_quote(job.id)}", {}, done="enqueued"), status_code=303)

    # ---- errors ----

    async def on_error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
            if status == 404 and message in ("Not Found", ""):
                message = f"no such page: {request.url.path}"
            elif status == 405:
                message = f"{request.method} is not allowed here (actions are POST forms from the dashboard)"
        elif isinstance(exc, NotFoundError):
            status, message = 404, str(exc)
        elif isinstance(exc, ValidationError):
            status, message = 400, str(exc)
        elif isinstance(exc, ConflictError):
            status, message = 409, str(exc)
        elif isinstance(exc, StoreError):
            status, message = 503, str(exc)
        else:
            status, message = 500, str(exc)
        if request.url.path == "/metrics":
            return PlainTextResponse(message + "\n", status_code=status)
        if _is_api(request.url.path):
            return JSONResponse({"error": message}, status_code=status)
        try:
            counts = (await self.live.current())["counts"]
        except QueueCtlError:
            counts = None
        html = self.templates.get_template("error.html").render(
            status=status, message=message, login=False, path=request.url.path, counts=counts, csrf="")
        return HTMLResponse(html, status_code=status)


def _only(params: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed - {"token"})
    if unknown:
        raise ValidationError(f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(allowed))}")


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number; got {value[:40]!r}") from None
    if not low <= number <= high:
        raise ValidationError(f"{name} must be from {low} to {high}; got {number}")
    return number


def _seq(value: str | None, name: str) -> int | None:
    return None if value is None or value == "" else _int(value, name, 0, 0, 1 << 62)


def _quote(job_id: str) -> str:
    from urllib.parse import quote

    return quote(job_id, safe="")


def _url(path: str, base: Mapping[str, object], **more: object) -> str:
    params = {k: v for k, v in {**base, **more}.items() if v is not None}
    return path + ("?" + urlencode(params) if params else "")


def _read_log(path: Path, offset: int) -> tuple[str, int, int, int, bool]:
    """(text, start, end, size, missing): bytes [start, end) of the file decoded; never splits a UTF-8 character
    except at the end of the file."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - LOG_TAIL_BYTES) if offset < 0 or offset > size else offset
            f.seek(start)
            data = f.read(min(LOG_CHUNK_BYTES, size - start))
    except FileNotFoundError:
        return "", 0, 0, 0, True
    end = start + len(data)
    if end < size:
        data = _whole_utf8(data)
        end = start + len(data)
    return data.decode("utf-8", "replace"), start, end, size, False


def _whole_utf8(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence at the end (at most 3 bytes)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def create_app(queue: Queue, guard: Guard, *, cwd: str | None = None,
               live_interval_s: float = LIVE_INTERVAL_S, search_window: int = SEARCH_WINDOW) -> Starlette:
    """The ASGI app over an open Queue. The caller owns the Queue (opens it before, closes it after)."""
    d = Dashboard(queue, guard, cwd=cwd, live_interval_s=live_interval_s, search_window=search_window)

    def handler(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except (QueueCtlError, HTTPException) as exc:
                return await d.on_error(request, exc)

        return wrapped

    routes = [
        Route("/", handler(d.overview)),
        Route("/jobs", handler(d.jobs)),
        Route("/jobs/{job_id:str}", handler(d.job)),
        Route("/events", handler(d.events)),
        Route("/api/status", handler(d.api_status)),
        Route("/api/jobs/{job_id:str}/log", handler(d.api_log)),
        Route("/metrics", handler(d.metrics_endpoint)),
        Route("/enqueue", handler(d.enqueue), methods=["POST"]),
        Route("/dlq/retry", handler(d.retry_all), methods=["POST"]),
        Route("/jobs/{job_id:str}/retry", handler(d.retry), methods=["POST"]),
        Route("/jobs/{job_id:str}/delete", handler(d.delete), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        return await d.on_error(request, exc)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityMiddleware, guard=guard, templates=d.templates)],
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    app.state.dashboard = d
    return app
