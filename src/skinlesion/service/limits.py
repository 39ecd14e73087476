"""Upload size, request-body deadlines and the concurrency cap (pure ASGI middleware).

:class:`UploadLimit` caps a body's size (``413``, before the body is read when
``Content-Length`` declares it, otherwise as soon as the streamed bytes pass the limit)
and the longest *pause* inside it (``408``). That alone lets a client send one byte
every 10 s forever: each pause is under the limit. :class:`BodyDeadline` adds

* an **overall deadline** for the whole body (``deadline_s``, default 60 s), and
* a **minimum transfer rate** (``min_rate_bps``, default 1,024 bytes/s, measured from
  the first body byte after a ``grace_s`` of 5 s): a client whose average rate falls
  below it is answered ``408`` and disconnected as soon as it does — the 1-byte-every-
  10-s client after 5 s. A 20 MB upload at the minimum rate would need 5.7 hours, so
  the deadline is the binding limit for large bodies: at 60 s a client needs ~350 KB/s
  for a full 20 MB upload (a real photo is 0.1–5 MB).

:class:`ConcurrencyCap` answers ``503`` with ``Retry-After`` once ``max_requests``
requests are in flight, before their bodies are read. uvicorn's own
``limit_concurrency`` (set by ``skinlesion serve --max-connections``) is the backstop
for open *connections*; its 503 is plain text without ``Retry-After``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import anyio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 50_000_000
"""Service pixel limit: 50 MP (ISIC 2020's largest photos are 24 MP); a 50 MP RGB decode
needs 150 MB, so a few concurrent uploads cannot exhaust memory."""
DEFAULT_READ_TIMEOUT_S = 15.0
"""Longest pause allowed while a client sends a request body (slow-client guard)."""
DEFAULT_BODY_DEADLINE_S = 60.0
DEFAULT_MIN_RATE_BPS = 1024.0
DEFAULT_GRACE_S = 5.0
DEFAULT_MAX_REQUESTS = 32
RETRY_AFTER_S = 2


async def send_json(send: Send, status: int, detail: str, *,
                    headers: Sequence[tuple[bytes, bytes]] = (), close: bool = True) -> None:
    """Send a whole JSON ``{"detail": ...}`` answer."""
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            *headers]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class UploadLimit:
    """Refuse request bodies over ``max_bytes`` with 413, without buffering them.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the
    streamed chunks are counted and the request is cut off as soon as the count
    passes the limit (a chunked upload, or a lying header). A client that stops
    sending its body for ``read_timeout_s`` seconds gets 408 and is disconnected:
    uvicorn itself would wait for it forever, one held connection per stalled client.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await send_json(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await send_json(send, 413, self._message(int(declared)))
                return

        seen = 0
        started = False
        rejected = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal seen, rejected, body_done
            if rejected:
                return {"type": "http.disconnect"}
            message = None
            # Only while the body is arriving: afterwards the app may wait on receive() for
            # a disconnect while it works, and that wait must not time out.
            with anyio.move_on_after(None if body_done else self.read_timeout_s):
                message = await receive()
            if message is None:  # the client stalled mid-body
                rejected = True
                if not started:
                    await send_json(send, 408, f"request body stalled for more than "
                                               f"{self.read_timeout_s:g} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answer now, then tell the app the client went away: raising instead
                    # would be turned into a 400 by FastAPI's body parsing.
                    rejected = True
                    if not started:
                        await send_json(send, 413, self._message(seen, streamed=True))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # our 413 is the answer; drop whatever the app says after the cut
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _message(self, size: int, streamed: bool = False) -> str:
        amount = f"more than {self.max_bytes:,} bytes" if streamed else f"{size:,} bytes"
        return (f"upload too large: {amount}, over the limit of {self.max_bytes:,} bytes "
                f"({self.max_bytes / 2**20:g} MB)")


class BodyDeadline:
    """408 for a request body that takes longer than ``deadline_s`` or arrives slower
    than ``min_rate_bps`` on average (after ``grace_s``)."""

    def __init__(self, app: ASGIApp, deadline_s: float | None = DEFAULT_BODY_DEADLINE_S,
                 min_rate_bps: float | None = DEFAULT_MIN_RATE_BPS,
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        self.app = app
        self.deadline_s = deadline_s
        self.min_rate = min_rate_bps
        self.grace_s = grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.deadline_s is None and self.min_rate is None):
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        seen = 0
        done = False
        cut = False
        started = False

        def allowed_until() -> float:
            """Monotonic time by which the next chunk must arrive."""
            limit = start + self.deadline_s if self.deadline_s is not None else float("inf")
            if self.min_rate:
                limit = min(limit, start + max(self.grace_s, seen / self.min_rate))
            return limit

        async def timed_receive() -> Message:
            nonlocal seen, done, cut
            if cut:
                return {"type": "http.disconnect"}
            if done:  # the body is in: the app may wait for a disconnect as long as it likes
                return await receive()
            message = None
            with anyio.move_on_after(max(0.0, allowed_until() - time.monotonic())):
                message = await receive()
            if message is None:
                cut = True
                elapsed = time.monotonic() - start
                if not started:
                    if self.deadline_s is not None and elapsed >= self.deadline_s - 0.05:
                        why = f"request body not received within {self.deadline_s:g} s"
                    else:
                        why = (f"request body too slow: {seen:,} bytes in {elapsed:.0f} s, under "
                               f"the minimum of {self.min_rate:g} bytes/s")
                    await send_json(send, 408, why)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)


class ConcurrencyCap:
    """503 + ``Retry-After`` once ``max_requests`` HTTP requests are in flight."""

    def __init__(self, app: ASGIApp, max_requests: int = DEFAULT_MAX_REQUESTS,
                 retry_after_s: int = RETRY_AFTER_S) -> None:
        self.app = app
        self.max_requests = max(1, int(max_requests))
        self.retry_after = str(int(retry_after_s)).encode()
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_requests:
            await send_json(send, 503, f"server busy: {self.in_flight} requests in flight (limit "
                                       f"{self.max_requests}); retry shortly",
                            headers=[(b"retry-after", self.retry_after)])
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def install(app: Any, *, body_deadline_s: float | None = DEFAULT_BODY_DEADLINE_S,
            min_rate_bps: float | None = DEFAULT_MIN_RATE_BPS,
            max_requests: int | None = DEFAULT_MAX_REQUESTS) -> None:
    """Add :class:`BodyDeadline` and :class:`ConcurrencyCap` to ``app`` (outermost: the cap)."""
    if body_deadline_s is not None or min_rate_bps is not None:
        app.add_middleware(BodyDeadline, deadline_s=body_deadline_s, min_rate_bps=min_rate_bps)
    if max_requests:
        app.add_middleware(ConcurrencyCap, max_requests=max_requests)
