"""The dashboard's security rules, all in one place.

- **Where it listens.** 127.0.0.1 by default. Any address that is not loopback needs a token (`--token` or
  QUEUECTL_DASHBOARD_TOKEN, at least 16 characters), or the dashboard refuses to start. A token given on a
  loopback address is enforced too (useful on a machine shared with other users).
- **Every request carries the token** when one is set: `Authorization: Bearer <token>` (scripts, Prometheus),
  `?token=<token>` (a first visit from a browser; the dashboard answers with a session cookie and a redirect to
  the same address without the token, so that it stays out of the history; API paths accept it as it is), or
  that session cookie (HttpOnly, SameSite=Strict; it holds an HMAC of the token, not the token). Anything else
  is 401 and reaches no handler.
- **DNS rebinding.** Bound to loopback, only requests whose Host header names a loopback address or `localhost`
  are served (400 otherwise): a hostile web page cannot rebind its own name to 127.0.0.1 and read the pages.
- **Cross-site request forgery.** Every action that changes data is a POST whose form carries the CSRF token
  of this server process (a random value, compared in constant time), and whose Origin (and Sec-Fetch-Site),
  when the browser sends them, must be this same origin. Otherwise 403 and nothing changes. GET requests never
  change anything.
- **Output** is escaped by Jinja2's autoescaping in every template; the scripts set text with textContent only.
  A Content-Security-Policy allows scripts and styles from the dashboard itself only (no inline script), and
  framing is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from queuectl.errors import ValidationError

MIN_TOKEN_LENGTH = 16
TOKEN_ENV = "QUEUECTL_DASHBOARD_TOKEN"

#: Sent with every response.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # not no-referrer: Chrome then sends "Origin: null" on POST
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    """Whether a host name or address (IPv6 in brackets or not) stays on this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, and refuse a guessable token anywhere."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValidationError(
            f"the dashboard token must be at least {MIN_TOKEN_LENGTH} characters "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe())' makes one)")
    if token is None and not is_loopback(host):
        raise ValidationError(
            f"refusing to serve the dashboard on {host} without a token: anyone who reaches it could run "
            f"commands as you. Pass --token or set {TOKEN_ENV} (or listen on 127.0.0.1)")


def host_name(host_header: str) -> str:
    """The name part of a Host header: `[::1]:8765` -> `::1`, `localhost:8765` -> `localhost`."""
    value = host_header.strip()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclasses.dataclass(frozen=True)
class Guard:
    """The rules of one running dashboard."""

    #: Required on every request when set.
    token: str | None
    #: Bound to a loopback address: Host headers must name this machine.
    loopback: bool
    #: Port it listens on: names the session cookie (browsers share cookies between ports of one host).
    port: int
    #: This process's CSRF token, embedded in every form.
    csrf: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def cookie_name(self) -> str:
        return f"queuectl_session_{self.port}"

    def session_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"queuectl dashboard session v1", hashlib.sha256).hexdigest()

    def token_ok(self, candidate: str | None) -> bool:
        if self.token is None:
            return True
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    def session_ok(self, cookie: str | None) -> bool:
        return self.token is None or (cookie is not None and hmac.compare_digest(cookie, self.session_value()))

    def host_ok(self, host_header: str | None) -> bool:
        if not self.loopback:
            return True
        return host_header is not None and is_loopback(host_name(host_header))

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())

    @staticmethod
    def same_origin(origin: str | None, fetch_site: str | None, host_header: str | None) -> bool:
        """A POST from a page of this dashboard: Origin (if sent) names this host, Sec-Fetch-Site (if sent)
        says same-origin (or none: typed by the user)."""
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return False
        if origin is None:
            return True
        parts = urlsplit(origin)
        return origin != "null" and parts.scheme in ("http", "https") and host_header is not None \
            and parts.netloc.lower() == host_header.strip().lower()
