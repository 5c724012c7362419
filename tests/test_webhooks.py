"""Webhooks against real HTTP servers on 127.0.0.1: the signed JSON as received, retries with backoff, final 4xx,
refused connections, a receiver that never answers (submit still returns at once), a full queue, bad config."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from queuectl.errors import ValidationError
from queuectl.webhooks import (
    EVENTS,
    SIGNATURE_HEADER,
    DeliveryError,
    WebhookSender,
    parse_events,
    post,
    sign,
    validate_url,
)
from tests.engine_helpers import await_until

SECRET = "s3cret"


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


class Receiver(ThreadingHTTPServer):
    """Records every POST, then answers with the next scripted status (200 once the script runs out)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.statuses: list[int] = []
        self.headers_out: dict[str, str] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.received.append(Received(self.path, dict(self.headers.items()), body))
            status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        for name, value in self.server.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them into the backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.fixture
def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Logged:
    lines: list[tuple[str, str, dict[str, object]]] = dataclasses.field(default_factory=list)

    def __call__(self, event: str, message: str, fields: dict[str, object]) -> None:
        self.lines.append((event, message, fields))

    def events(self) -> list[str]:
        return [line[0] for line in self.lines]


@pytest.fixture
def logged() -> Logged:
    return Logged()


@contextlib.asynccontextmanager
async def running(sender: WebhookSender) -> AsyncIterator[WebhookSender]:
    task = asyncio.create_task(sender.run(), name="webhooks")
    try:
        yield sender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def fast(logged: Logged, *, attempts: int = 5, timeout_s: float = 2.0, first_delay_s: float = 0.01) -> WebhookSender:
    """A sender with a backoff short enough for a test."""
    return WebhookSender(log=logged, attempts=attempts, timeout_s=timeout_s, first_delay_s=first_delay_s,
                         max_delay_s=max(first_delay_s, 0.05))


# ---- delivery -----------------------------------------------------------------------------------------------------


async def test_delivered_signed_json_with_headers(receiver: Receiver, logged: Logged) -> None:
    sender = fast(logged)
    async with running(sender):
        payload = {"job": {"id": "j1", "command": "echo 'hi' \"$(x)\""}, "exit_code": 3, "event": "not ours"}
        assert sender.submit(receiver.url + "/hook?x=1", SECRET, "failed", payload)
        await sender.drain(5)
    assert (sender.stats.delivered, sender.stats.failed, sender.stats.pending) == (1, 0, 0)
    [got] = receiver.requests()
    assert got.path == "/hook?x=1"
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers[SIGNATURE_HEADER], expected)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "queuectl"
    assert got.headers["X-Queuectl-Event"] == "failed"
    doc = got.doc
    assert doc["event"] == "failed"  # the payload cannot override the envelope
    assert doc["delivery"] == got.headers["X-Queuectl-Delivery"]
    assert doc["job"] == payload["job"]
    assert doc["exit_code"] == 3
    assert isinstance(doc["sent_at"], str)
    sent_at = dt.datetime.fromisoformat(doc["sent_at"].replace("Z", "+00:00"))
    assert abs(sent_at.timestamp() - time.time()) < 60
    assert logged.lines == []


async def test_no_secret_no_signature(receiver: Receiver, logged: Logged) -> None:
    sender = fast(logged)
    async with running(sender):
        assert sender.submit(receiver.url, None, "completed", {})
        await sender.drain(5)
    [got] = receiver.requests()
    assert SIGNATURE_HEADER not in got.headers
    assert sender.stats.delivered == 1


@pytest.mark.parametrize("first", [500, 503, 408, 429])
async def test_a_passing_failure_is_retried_with_the_same_signed_bytes(
    receiver: Receiver, logged: Logged, first: int
) -> None:
    receiver.statuses = [first, first]
    sender = fast(logged)
    async with running(sender):
        assert sender.submit(receiver.url, SECRET, "dead", {"job": {"id": "j2"}})
        await sender.drain(5)
    got = receiver.requests()
    assert len(got) == 3
    assert len({r.body for r in got}) == 1
    assert len({r.headers["X-Queuectl-Delivery"] for r in got}) == 1
    assert all(r.headers[SIGNATURE_HEADER] == sign(SECRET, got[0].body) for r in got)
    assert (sender.stats.delivered, sender.stats.failed) == (1, 0)
    assert logged.lines == []


@pytest.mark.parametrize("status", [400, 401, 404, 410])
async def test_a_final_4xx_is_not_retried(receiver: Receiver, logged: Logged, status: int) -> None:
    receiver.statuses = [status]
    sender = fast(logged)
    async with running(sender):
        sender.submit(receiver.url, SECRET, "failed", {})
        await sender.drain(5)
    assert len(receiver.requests()) == 1
    assert (sender.stats.delivered, sender.stats.failed) == (0, 1)
    [(event, message, fields)] = logged.lines
    assert event == "webhook_failed"
    assert f"HTTP {status}" in message
    assert "not retried" in message
    assert fields["url"] == receiver.url


async def test_every_attempt_failing_gives_up_after_n(receiver: Receiver, logged: Logged) -> None:
    receiver.statuses = [500] * 10
    sender = fast(logged, attempts=4)
    async with running(sender):
        sender.submit(receiver.url + "/p?token=abc", SECRET, "failed", {})
        await sender.drain(5)
    assert len(receiver.requests()) == 4
    [(event, message, _)] = logged.lines
    assert event == "webhook_failed"
    assert "after 4 attempts: HTTP 500" in message
    assert "token" not in message  # a query string often holds a credential


async def test_a_refused_connection_fails_after_n_attempts(refused_port: int, logged: Logged) -> None:
    url = f"http://127.0.0.1:{refused_port}/hook"
    sender = fast(logged, attempts=3)
    async with running(sender):
        started = time.monotonic()
        sender.submit(url, SECRET, "dead", {})
        await sender.drain(10)
    # Three attempts with 0.01 s and 0.02 s between: the backoff was waited out, not skipped.
    assert time.monotonic() - started >= 0.03
    assert (sender.stats.delivered, sender.stats.failed, sender.stats.pending) == (0, 1, 0)
    [(event, message, fields)] = logged.lines
    assert event == "webhook_failed"
    assert message.startswith(f"webhook to {url} failed after 3 attempts: ")
    assert "refused" in message.lower()
    assert fields["delivery"]


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [302]
    receiver.headers_out = {"Location": "ftp://127.0.0.1/elsewhere"}
    assert await post(receiver.url, b"{}", {"Content-Type": "application/json"}, timeout_s=5) == 302
    assert len(receiver.requests()) == 1


async def test_post_raises_delivery_error_without_an_answer(refused_port: int, silent_port: int) -> None:
    with pytest.raises(DeliveryError):
        await post(f"http://127.0.0.1:{refused_port}/", b"{}", {}, timeout_s=5)
    started = time.monotonic()
    with pytest.raises(DeliveryError):
        await post(f"http://127.0.0.1:{silent_port}/", b"{}", {}, timeout_s=0.2)
    assert time.monotonic() - started < 5


# ---- never blocking the caller ------------------------------------------------------------------------------------


async def test_submit_returns_at_once_while_the_receiver_hangs(silent_port: int, logged: Logged) -> None:
    sender = fast(logged, attempts=2, timeout_s=0.2)
    url = f"http://127.0.0.1:{silent_port}/"
    async with running(sender):
        for _ in range(8):
            started = time.monotonic()
            assert sender.submit(url, SECRET, "timed_out", {"n": 1})
            assert time.monotonic() - started < 0.05
            await asyncio.sleep(0)  # let the sender start sending: the next submit happens while it waits
        await await_until(lambda: len(logged.lines) == 8, timeout=20, what="8 deliveries to fail")
    assert (sender.stats.delivered, sender.stats.failed, sender.stats.pending) == (0, 8, 0)
    assert set(logged.events()) == {"webhook_failed"}


async def test_drain_gives_up_at_its_timeout(silent_port: int, logged: Logged) -> None:
    sender = fast(logged, attempts=5, timeout_s=1.0, first_delay_s=1.0)
    async with running(sender):
        sender.submit(f"http://127.0.0.1:{silent_port}/", None, "failed", {})
        started = time.monotonic()
        await sender.drain(0.2)
        assert time.monotonic() - started < 2
        assert sender.stats.pending == 1


async def test_a_full_queue_drops_with_a_log_line(receiver: Receiver, logged: Logged) -> None:
    sender = WebhookSender(max_pending=2, log=logged)
    assert sender.submit(receiver.url, None, "completed", {"n": 1})
    assert sender.submit(receiver.url, None, "completed", {"n": 2})
    assert not sender.submit(receiver.url + "?token=abc", None, "completed", {"n": 3})
    assert sender.stats.dropped == 1
    [(event, message, fields)] = logged.lines
    assert event == "webhook_dropped"
    assert "token" not in message
    assert fields["event"] == "completed"
    # What was queued before the sender started is delivered once it runs.
    async with running(sender):
        await sender.drain(5)
    assert sorted(json.loads(r.body)["n"] for r in receiver.requests()) == [1, 2]
    assert (sender.stats.delivered, sender.stats.pending) == (2, 0)


async def test_a_broken_log_sink_does_not_stop_deliveries(receiver: Receiver) -> None:
    def broken(event: str, message: str, fields: dict[str, object]) -> None:
        raise RuntimeError("log sink down")

    receiver.statuses = [400]
    sender = WebhookSender(log=broken, first_delay_s=0.01)
    async with running(sender):
        sender.submit(receiver.url, None, "failed", {})
        sender.submit(receiver.url, None, "completed", {})
        await sender.drain(5)
    assert (sender.stats.delivered, sender.stats.failed) == (1, 1)


# ---- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://example.com", "https://example.com:8443/hooks/q?x=1", " HTTPS://h/ "])
def test_valid_urls(url: str) -> None:
    assert validate_url(url) == url.strip()


@pytest.mark.parametrize("url", [
    "ftp://x", "file:///etc/passwd", "http://", "https:///path", "example.com", "", "http://h:notaport/",
    "http://h:0/", "http://h/a b", "http://h/\nX-Injected: 1", "http://user:pw@h/", "http://h/" + "a" * 2048,
])
def test_invalid_urls(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_url(url)
    assert "\n" not in str(info.value)
    assert "pw@" not in str(info.value)


def test_invalid_url_message() -> None:
    with pytest.raises(ValidationError, match=r"webhook URL must be http\(s\)://host.*; got 'ftp://x'"):
        validate_url("ftp://x")


def test_parse_events() -> None:
    assert parse_events("completed") == ("completed",)
    assert parse_events(" Dead, FAILED ,dead,,timed_out ") == ("dead", "failed", "timed_out")
    assert parse_events(",".join(EVENTS)) == EVENTS


@pytest.mark.parametrize("text", ["", " , ", "completed,exploded", "success"])
def test_parse_events_refuses(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_events(text)
    assert all(name in str(info.value) for name in EVENTS)


def test_sign() -> None:
    signature = sign("k", b"body")
    assert signature == "sha256=" + hmac.new(b"k", b"body", hashlib.sha256).hexdigest()
    assert len(signature) == len("sha256=") + 64
