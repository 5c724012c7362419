"""HTTP webhooks: a JSON event POSTed to a URL, signed with HMAC-SHA256, retried with backoff.

An engine worker hands a delivery to WebhookSender.submit(), which only queues it: a slow or dead receiver never
holds up a job. Delivery is at least once: a receiver that answers after our timeout gets the retry too, and can
recognise it by the X-Queuectl-Delivery id. Standard library only (urllib in a thread).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping

from queuectl.errors import ValidationError
from queuectl.timefmt import iso

EVENTS = ("completed", "failed", "dead", "cancelled", "timed_out")
SIGNATURE_HEADER = "X-Queuectl-Signature"
EVENT_HEADER = "X-Queuectl-Event"
DELIVERY_HEADER = "X-Queuectl-Delivery"
MAX_URL_LENGTH = 2048
#: Statuses worth another try although they are 4xx: the receiver asks us to come back.
_RETRYABLE_4XX = frozenset({408, 429})

Log = Callable[[str, str, dict[str, object]], None]


class DeliveryError(Exception):
    """The request got no HTTP answer: connection refused or reset, DNS failure, timeout."""


def validate_url(url: str) -> str:
    text = url.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        ok = False
    # Control characters and spaces would be refused by http.client at send time, far from the config that is wrong.
    if not ok or len(text) > MAX_URL_LENGTH or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ValidationError(f"webhook URL must be http(s)://host[:port][/path], at most {MAX_URL_LENGTH} "
                              f"characters; got {shown!r}")
    if "@" in parts.netloc:  # urllib would take user:password@host for a host name, and a log would show it
        raise ValidationError("webhook URL must not hold credentials (user:password@host): sign with a secret instead")
    return text


def parse_events(text: str) -> tuple[str, ...]:
    """Event names from "completed,dead" (any case, duplicates ignored)."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ValidationError(f"webhook events must name at least one of {', '.join(EVENTS)}; got {text!r}")
    for name in names:
        if name not in EVENTS:
            raise ValidationError(f"unknown webhook event {name!r}; known: {', '.join(EVENTS)}")
    return tuple(dict.fromkeys(names))


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is reported as its status, not followed: urllib would turn the POST into a bodiless GET (whose 200
    would count as delivered) and would follow https to http."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post_blocking(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(65536)  # a little of the body, so that a keep-alive server sees the answer taken
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DeliveryError(str(reason) or type(reason).__name__) from exc


async def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float) -> int:
    """Deliver once; the HTTP status, whatever it is. The timeout bounds the whole call (urllib's only bounds each
    socket operation, and not name resolution); a thread that outlives it ends at its own socket timeout."""
    validate_url(url)
    try:
        return await asyncio.wait_for(asyncio.to_thread(_post_blocking, url, body, headers, timeout_s), timeout_s)
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout_s:g}s") from None


def _redact(url: str) -> str:
    """The URL without credentials or query string, which often hold tokens: fit for a log."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


@dataclasses.dataclass
class WebhookStats:
    """Counters since the sender was made; pending counts queued deliveries, sending ones and those in backoff."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0


@dataclasses.dataclass(frozen=True)
class _Delivery:
    url: str
    event: str
    id: str
    body: bytes
    headers: dict[str, str]


class WebhookSender:
    """Queues deliveries and sends them from run(), a background task. Use from the event loop's thread."""

    def __init__(
        self, *, max_pending: int = 1000, attempts: int = 5, first_delay_s: float = 1.0, max_delay_s: float = 60.0,
        timeout_s: float = 10.0, log: Log | None = None, concurrency: int = 4,
    ) -> None:
        self._max_pending, self._attempts = max_pending, max(1, attempts)
        self._first_delay_s, self._max_delay_s, self._timeout_s = first_delay_s, max_delay_s, timeout_s
        self._log, self._concurrency = log, max(1, concurrency)
        self._queue: collections.deque[_Delivery] = collections.deque()
        self._wake, self._idle = asyncio.Event(), asyncio.Event()  # bound to a loop on first use, not here
        self._idle.set()
        self.stats = WebhookStats()

    def _emit(self, event: str, message: str, fields: dict[str, object]) -> None:
        if self._log is not None:
            with contextlib.suppress(Exception):  # a broken log sink must not stop deliveries
                self._log(event, message, fields)

    def submit(self, url: str, secret: str | None, event: str, payload: Mapping[str, object]) -> bool:
        """Queue one delivery and return at once; False (and a log line) if the queue is full and it was dropped."""
        delivery_id = str(uuid.uuid4())
        if self.stats.pending >= self._max_pending:
            self.stats.dropped += 1
            self._emit("webhook_dropped", f"webhook to {_redact(url)} dropped: {self._max_pending} deliveries pending",
                       {"url": _redact(url), "event": event, "delivery": delivery_id})
            return False
        doc: dict[str, object] = {"event": event, "delivery": delivery_id, "sent_at": iso(time.time())}
        doc.update((k, v) for k, v in payload.items() if k not in doc)
        # Encoded once: every retry sends, and signs, the very same bytes. default=str: never fail the caller.
        body = json.dumps(doc, default=str, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "queuectl", EVENT_HEADER: event,
                   DELIVERY_HEADER: delivery_id}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        self._queue.append(_Delivery(url=url, event=event, id=delivery_id, body=body, headers=headers))
        self.stats.pending += 1
        self._idle.clear()
        self._wake.set()
        return True

    async def run(self) -> None:
        """Send until cancelled; a delivery waiting out its backoff does not hold one of the concurrent slots."""
        slots = asyncio.Semaphore(self._concurrency)
        async with asyncio.TaskGroup() as tasks:
            while True:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                delivery = self._queue.popleft()
                tasks.create_task(self._deliver(delivery, slots), name=f"webhook-{delivery.id}")

    async def _deliver(self, d: _Delivery, slots: asyncio.Semaphore) -> None:
        try:
            outcome = await self._attempts_of(d, slots)
            if outcome is None:
                self.stats.delivered += 1
            else:
                self.stats.failed += 1
                self._emit("webhook_failed", f"webhook to {_redact(d.url)} failed {outcome}",
                           {"url": _redact(d.url), "event": d.event, "delivery": d.id, "reason": outcome})
        finally:
            self.stats.pending -= 1
            if not self.stats.pending:
                self._idle.set()

    async def _attempts_of(self, d: _Delivery, slots: asyncio.Semaphore) -> str | None:
        """None once delivered, else why not."""
        why = ""
        for k in range(self._attempts):
            if k:
                await asyncio.sleep(min(self._first_delay_s * 2.0 ** min(k - 1, 60), self._max_delay_s))
            async with slots:
                try:
                    status = await post(d.url, d.body, d.headers, timeout_s=self._timeout_s)
                except ValidationError as exc:
                    return f"at once: {exc}"
                except DeliveryError as exc:
                    why = str(exc)
                    continue
            if 200 <= status < 300:
                return None
            why = f"HTTP {status}"
            if 400 <= status < 500 and status not in _RETRYABLE_4XX:
                return f"after {k + 1} attempt{'s' if k else ''}: {why} (not retried)"
        return f"after {self._attempts} attempts: {why}"

    async def drain(self, timeout_s: float) -> None:
        """Wait until nothing is pending, or timeout_s; deliveries still pending afterwards stay counted in stats."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
