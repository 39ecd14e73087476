"""Exposing the service safely: API key, allowed hosts, same-origin POSTs, per-client rate limit.

All pieces are pure ASGI middleware (or Starlette's own, for the host check), added by
:func:`install` in the order that matters: the host check first (a DNS-rebinding page
never reaches anything), then the origin check, the API key and the rate limit.

* **API key** (:class:`ApiKeyAuth`): ``Authorization: Bearer <key>`` or ``X-API-Key:
  <key>``, compared in constant time; ``401`` with ``WWW-Authenticate: Bearer``
  otherwise. The page (``/``, ``/static/…``) and ``GET /v1/health`` stay open (a
  liveness probe carries no key). ``skinlesion serve`` requires a key whenever it binds
  a non-loopback address.
* **Allowed hosts**: Starlette's ``TrustedHostMiddleware`` answers ``400`` to a request
  whose ``Host`` header is not listed — a page on ``evil.example`` that rebinds its DNS
  to 127.0.0.1 sends ``Host: evil.example`` and is refused.
* **Cross-origin POSTs** (:class:`SameOriginPosts`): a multipart POST is a "simple"
  request that any web page can make a visitor's browser send (CORS does not stop it,
  it only hides the answer). A state-changing request (POST, PUT, PATCH, DELETE) with
  ``Sec-Fetch-Site: cross-site``/``same-site``, or with an ``Origin`` that is neither
  the server's own nor listed in ``allowed_origins``, is answered ``403``. Requests
  without those headers (curl, scripts, server-to-server) are not affected.
* **Rate limit** (:class:`RateLimit`): a token bucket per client address for
  ``POST /v1/predict``: ``rate_per_minute`` requests per minute on average, bursts up
  to ``burst``; beyond it ``429`` with ``Retry-After``. No maintained Starlette/FastAPI
  rate limiter fits without new dependencies and a storage backend (slowapi needs the
  ``limits`` package and decorators on each route); one process needs only this
  in-memory bucket (~40 lines). Behind a reverse proxy every client has the proxy's
  address: rate-limit at the proxy instead.
* **Response headers** (:func:`security_headers`, an HTTP middleware that ``create_app``
  registers innermost): ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer`` and a ``Content-Security-Policy`` that lets a page load only the
  service's own scripts, styles and images.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response

from skinlesion.service.limits import ASGIApp, Receive, Scope, Send, send_json

LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
"""Interfaces that only this machine can reach."""

OPEN_PATHS: tuple[str, ...] = ("/", "/v1/health")
OPEN_PREFIXES: tuple[str, ...] = ("/static/",)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'")
"""Set on every answer except the API docs pages (their inline bootstrap scripts)."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


class ApiKeyAuth:
    """Require an API key on every route except the page and the health probe."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-api-key")
        auth = _header(scope, b"authorization")
        if given is None and auth is not None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), self._key):
            await send_json(send, 401, "missing or wrong API key: send 'Authorization: Bearer "
                                       "<key>' or 'X-API-Key: <key>'",
                            headers=[(b"www-authenticate", b"Bearer")], close=False)
            return
        await self.app(scope, receive, send)


class SameOriginPosts:
    """Refuse state-changing requests a browser sends on behalf of another site (CSRF)."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") in STATE_CHANGING:
            why = self._refusal(scope)
            if why:
                await send_json(send, 403, why, close=False)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        origin = _header(scope, b"origin")
        if origin is not None and origin.rstrip("/").lower() in self.allowed:
            return None
        site = (_header(scope, b"sec-fetch-site") or "").lower()
        if site in ("cross-site", "same-site"):
            return (f"cross-origin request refused (Sec-Fetch-Site: {site}); allow the page's "
                    "origin with --allowed-origin")
        if origin is not None:
            own = {f"{scope.get('scheme', 'http')}://{h}".lower()
                   for h in (_header(scope, b"host") or "",) if h}
            if origin.rstrip("/").lower() not in own:
                return (f"cross-origin request refused (Origin: {origin[:100]}); allow it with "
                        "--allowed-origin")
        return None


class RateLimit:
    """A token bucket per client address for the paths in ``paths``: 429 + Retry-After."""

    def __init__(self, app: ASGIApp, rate_per_minute: float, burst: int | None = None,
                 paths: Sequence[str] = ("/v1/predict",), max_clients: int = 10_000) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.app = app
        self.rate = rate_per_minute / 60.0  # tokens per second
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate_per_minute / 6)))
        self.paths = tuple(paths)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in self.paths:
            client = (scope.get("client") or ("?", 0))[0]
            wait = self._take(str(client))
            if wait > 0:
                await send_json(send, 429, f"too many requests from {client}: limit "
                                           f"{self.rate * 60:g} per minute (bursts of "
                                           f"{self.burst:g}); retry in {math.ceil(wait)} s",
                                headers=[(b"retry-after", str(math.ceil(wait)).encode())],
                                close=False)
                return
        await self.app(scope, receive, send)

    def _take(self, client: str) -> float:
        """Take a token for ``client``; 0 if granted, else seconds until one is available."""
        now = time.monotonic()
        tokens, then = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:  # bounded memory: forget the oldest
            self._buckets.popitem(last=False)
        return wait


def install(app: Any, *, api_key: str | None = None, allowed_hosts: Sequence[str] | None = None,
            allowed_origins: Sequence[str] = (), rate_per_minute: float | None = None,
            rate_burst: int | None = None) -> None:
    """Add the exposure middleware to a FastAPI/Starlette ``app`` (see the module docstring).

    Middleware added last runs first, so the order here is innermost first.
    """
    if rate_per_minute:
        app.add_middleware(RateLimit, rate_per_minute=rate_per_minute, burst=rate_burst)
    if api_key:
        app.add_middleware(ApiKeyAuth, api_key=api_key)
    app.add_middleware(SameOriginPosts, allowed_origins=allowed_origins)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts),
                           www_redirect=False)


async def security_headers(request: Request,
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """HTTP middleware: ``nosniff``, no referrer, and :data:`CONTENT_SECURITY_POLICY`.

    Registered with ``app.middleware("http")``; a header the route set itself is kept.
    """
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    # The docs pages run inline bootstrap scripts, which this policy would block.
    if not request.url.path.startswith(("/docs", "/redoc")):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


def read_api_key(path: str | None, env: str | None) -> str | None:
    """The API key from a file (first line, stripped) or an environment value; None if neither.

    Raises:
        ValueError: if the file cannot be read or the key is shorter than 16 characters.
    """
    key = None
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                key = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--api-key-file {path}: cannot read ({exc})") from None
    elif env:
        key = env.strip()
    if key is not None and len(key) < 16:
        raise ValueError("the API key must be at least 16 characters (e.g. `python -c "
                         "'import secrets; print(secrets.token_urlsafe(32))'`)")
    return key
