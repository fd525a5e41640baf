"""The stable-port proxy's HTTP/1.1 plumbing: a server protocol and a pooled upstream client.

Both sides parse with httptools (llhttp, C; what uvicorn itself uses) and write bytes on asyncio
transports, with no ASGI layer and no client library in between: that per-request Python is most
of what a proxy hop costs (BENCHMARKS.md, "Proxy: canary and shadow routes"). The policy (which
upstream, stats, shadow copies, the admin API) is `serving/proxy.py`'s; this module knows HTTP.

* `ClientConnection`: one accepted connection. Requests are read whole (the proxy needs the body
  for a retry and for a shadow copy) and handled one at a time in arrival order (pipelining);
  keep-alive with an idle timeout; `Expect: 100-continue` answered; an Upgrade is not taken (the
  request is answered over HTTP/1.1, then the connection closes); a request that cannot be
  parsed is a 400 and the connection closes.
* `UpstreamPool`: keep-alive connections per upstream base URL, reused while idle for less than
  `idle_seconds` (below uvicorn's 5 s server keep-alive, so the pool never picks a connection
  the upstream is closing). `Exchange` is one request on one of them; its answer's body can be
  streamed (`sink`) as it arrives, with the client's write back-pressure passed on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

import httptools

logger = logging.getLogger("serving.proxy")

CLIENT_IDLE_SECONDS = 5.0  # an idle keep-alive client connection closes after this (uvicorn's)
MAX_PIPELINED = 32  # requests read ahead on one connection before reading pauses
_STATUS_LINES: dict[int, bytes] = {}


class UpstreamError(Exception):
    """The upstream gave no usable answer: refused, reset or closed the connection, or sent
    bytes that are not HTTP. The message is for logs only: never sent to a client."""


@dataclass(slots=True)
class Request:
    """One parsed client request. Header names are lower case; `target` is the request line's
    target as sent (path and query, still %-encoded); `path` its decoded path."""

    method: bytes
    target: bytes
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    http11: bool
    client: str | None


def status_line(status: int, reason: bytes = b"") -> bytes:
    """b"HTTP/1.1 200 OK\\r\\n" (the standard reason phrase when `reason` is empty)."""
    if reason:
        return b"HTTP/1.1 %d %s\r\n" % (status, reason)
    line = _STATUS_LINES.get(status)
    if line is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return line


def simple_response(
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    close: bool = False,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """A whole response with a Content-Length (and `connection: close` when `close`)."""
    parts = [
        status_line(status),
        b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(body)),
    ]
    parts.extend(b"%s: %s\r\n" % (k, v) for k, v in headers or ())
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests and hands each to `handler(request, self)`,
    one at a time. The handler writes its answer with `write`; after it returns, the
    connection serves the next request, waits (keep-alive) or closes.

    Args:
        handler: the proxy's request coroutine.
        connections: the set of open connections (for a graceful shutdown); this one adds and
            removes itself.
        stopping: returns True once the server is shutting down: the connection then closes
            after its current request.
    """

    def __init__(
        self,
        handler: Callable[[Request, ClientConnection], Awaitable[None]],
        connections: set[ClientConnection],
        stopping: Callable[[], bool],
    ) -> None:
        self.handler = handler
        self.connections = connections
        self.stopping = stopping
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: str | None = None
        self.queue: collections.deque[Request] = collections.deque()
        self.busy = False
        self.closed = False
        self.started = False  # the current request's answer has begun: no error page any more
        self._idle: asyncio.TimerHandle | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._upstream_paused: asyncio.Transport | None = None
        self._writable = True
        self._last: Request | None = None  # the last request read whole

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else None
        self.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        self._cancel_idle()
        self.resume_writing()  # an upstream paused for this client must not stay paused

    def data_received(self, data: bytes) -> None:
        self._cancel_idle()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # an Upgrade (h2c, websocket) is not taken: the request is answered over HTTP/1.1,
            # then the connection closes (the parser reads nothing after an upgrade)
            if self._last is not None:
                self._last.keep_alive = False
                self.transport.pause_reading()
            else:
                self._refuse(b"The request is not valid HTTP/1.1.")
        except httptools.HttpParserError:
            self._refuse(b"The request is not valid HTTP/1.1.")

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        if self._upstream_paused is not None:
            self._upstream_paused.resume_reading()
            self._upstream_paused = None

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._last = b"", [], [], None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        expects = (b"expect", b"100-continue") in self._headers
        if expects and self.parser.get_http_version() == "1.1":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        target = self._url
        if target[:1] == b"/":
            path, _, query = target.partition(b"?")
        else:  # absolute-form or "*"
            parsed = httptools.parse_url(target) if target != b"*" else None
            path, query = (parsed.path or b"/", parsed.query or b"") if parsed else (b"*", b"")
        request = Request(
            method=self.parser.get_method(),
            target=target,
            path=(unquote_to_bytes(path) if b"%" in path else path).decode("latin-1"),
            query=query,
            headers=self._headers,
            body=b"".join(self._body) if self._body else b"",
            keep_alive=self.parser.should_keep_alive(),
            http11=self.parser.get_http_version() == "1.1",
            client=self.client,
        )
        self._last = request
        self.queue.append(request)
        if len(self.queue) > MAX_PIPELINED:
            self.transport.pause_reading()
        if not self.busy:
            self._next()

    # -- serving ------------------------------------------------------------------------------

    def _next(self) -> None:
        if self.closed:
            return
        if len(self.queue) == MAX_PIPELINED:
            self.transport.resume_reading()
        if self.queue:
            self.busy = True
            self.loop.create_task(self._serve(self.queue.popleft()))
        else:
            self.busy = False
            if self.stopping():
                self.transport.close()
            else:
                self._arm_idle()

    async def _serve(self, request: Request) -> None:
        self.started = False
        try:
            await self.handler(request, self)
        except Exception:  # never a traceback to the client: a clean 500, and the log has it
            logger.exception("request %s %s failed", request.method.decode(), request.path)
            request.keep_alive = False
            if not self.started:
                failed = _error(b"internal", b"The proxy failed.")
                self.write(simple_response(500, failed, close=True))
        # the handler may have turned keep-alive off (an answer delimited by the close)
        if not request.keep_alive or self.stopping():
            self.closed = True
            self.connections.discard(self)
            self.transport.close()
            return
        self._next()

    def write(self, data: bytes) -> None:
        """Send bytes (dropped once the client has gone)."""
        self.started = True
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def hold(self, upstream: asyncio.Transport) -> None:
        """Pause reading `upstream` until this client's send buffer drains (back-pressure)."""
        if not self._writable and self._upstream_paused is None:
            upstream.pause_reading()
            self._upstream_paused = upstream

    def abort(self) -> None:
        """End the connection after a partly sent answer: the client sees a truncated one."""
        self.closed = True
        self.connections.discard(self)
        self.transport.close()

    def _refuse(self, message: bytes) -> None:
        """A 400 for bytes that are not HTTP/1.1, then close."""
        if not self.busy:  # mid-answer, the connection just closes
            body = _error(b"bad_request", message)
            self.transport.write(simple_response(400, body, close=True))
        self.abort()

    def _arm_idle(self) -> None:
        self._idle = self.loop.call_later(CLIENT_IDLE_SECONDS, self._close_idle)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _close_idle(self) -> None:
        if not self.busy and not self.queue:
            self.abort()


def _error(code: bytes, message: bytes) -> bytes:
    return b'{"error": {"code": "%s", "message": "%s"}}' % (code, message)


# -- upstream side ----------------------------------------------------------------------------


class Exchange(asyncio.Protocol):
    """One keep-alive upstream connection, and the request/answer on it now.

    After `send`, `head` resolves once the status line and headers are in (`status`, `reason`,
    `headers`), `done` once the whole answer is. Body bytes collect in `body` until a `sink` is
    set, then go straight to it. Both futures fail with `UpstreamError` (no answer) or
    `TimeoutError` (see `expire`).
    """

    def __init__(self, pool: UpstreamPool, upstream: str) -> None:
        self.pool = pool
        self.upstream = upstream
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.lost = False
        self.idle_since = 0.0
        self.head: asyncio.Future[None] | None = None
        self.done: asyncio.Future[None] | None = None
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.sink: Callable[[bytes], None] | None = None
        self.received = False
        self._head_only = False
        self._until_close = False
        self._keep_alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        if self.head is None or self.done is None or self.done.done():
            return
        if self.head.done() and self._until_close:  # a body delimited by the close
            self._keep_alive = False
            self.done.set_result(None)
        else:
            self._fail(UpstreamError(f"{self.upstream} closed the connection: {exc or 'EOF'}"))

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # bytes nobody asked for: the connection cannot be trusted
            self.transport.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"{self.upstream} answered with invalid HTTP: {exc}"))
            self.transport.close()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer: the real one follows
            self.reason, self.headers = b"", []
            return
        names = {k.lower() for k, _ in self.headers}
        self._until_close = b"content-length" not in names and b"transfer-encoding" not in names
        if not self.head.done():
            self.head.set_result(None)
        if self._head_only:  # HEAD: a Content-Length, but no body follows
            self._complete(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink(body)
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            return
        self._complete(self.parser.should_keep_alive())

    # -- use ----------------------------------------------------------------------------------

    def send(self, data: bytes, head_only: bool = False) -> None:
        """Write one whole request; the answer resolves `head` and `done`."""
        self.parser = httptools.HttpResponseParser(self)
        self.head, self.done = self.loop.create_future(), self.loop.create_future()
        self.status, self.reason, self.headers, self.body = 0, b"", [], []
        self.sink, self.received, self._head_only = None, False, head_only
        self.transport.write(data)

    def expire(self) -> None:
        """The deadline passed: fail what is still pending with TimeoutError and close."""
        if self.done is not None and not self.done.done():
            self._fail(TimeoutError(f"{self.upstream} did not answer in time"))
            self.transport.close()

    def reusable(self) -> bool:
        return self._keep_alive and not self.lost and self.done is not None and self.done.done()

    def _complete(self, keep_alive: bool) -> None:
        self._keep_alive = keep_alive and not self._until_close
        self.parser = None
        if not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self._keep_alive = False
        self.parser = None
        for future in (self.head, self.done):
            if future is not None and not future.done():
                future.set_exception(exc)
                # marked as retrieved: one nobody awaits is not logged; an awaiter still gets it
                future.exception()


class UpstreamPool:
    """Keep-alive connections to upstreams, by base URL (http://host:port or https://...).

    Args:
        connect_timeout: seconds to open a connection.
        idle_seconds: an idle connection older than this is closed instead of reused.
    """

    def __init__(self, connect_timeout: float, idle_seconds: float = 4.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self._idle: dict[str, list[Exchange]] = {}
        self._addresses: dict[str, tuple[str, int, bytes, ssl.SSLContext | None]] = {}
        self._open: set[Exchange] = set()

    def host_header(self, upstream: str) -> bytes:
        return self._address(upstream)[2]

    async def acquire(self, upstream: str) -> Exchange:
        """An idle connection to `upstream`, else a new one.

        Raises:
            UpstreamError: the connection could not be opened.
            TimeoutError: not within `connect_timeout`.
        """
        idle = self._idle.get(upstream)
        if idle:
            now = time.monotonic()
            while idle:
                exchange = idle.pop()
                if not exchange.lost and now - exchange.idle_since < self.idle_seconds:
                    return exchange
                exchange.transport.close()
        host, port, _, context = self._address(upstream)
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, exchange = await self.loop.create_connection(
                    lambda: Exchange(self, upstream),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {upstream}: {exc}") from exc
        self._open.add(exchange)
        return exchange

    def release(self, exchange: Exchange) -> None:
        """Return a connection whose answer is complete, or close it when it cannot serve
        another request."""
        if exchange.reusable():
            exchange.idle_since = time.monotonic()
            self._idle.setdefault(exchange.upstream, []).append(exchange)
        else:
            exchange.transport.close()

    def forget(self, exchange: Exchange) -> None:
        self._open.discard(exchange)
        idle = self._idle.get(exchange.upstream)
        if idle and exchange in idle:
            idle.remove(exchange)

    def close(self) -> None:
        for exchange in list(self._open):
            exchange.transport.close()
        self._idle.clear()

    def _address(self, upstream: str) -> tuple[str, int, bytes, ssl.SSLContext | None]:
        found = self._addresses.get(upstream)
        if found is None:
            parts = urlsplit(upstream)
            https = parts.scheme == "https"
            host = parts.hostname or "127.0.0.1"
            port = parts.port or (443 if https else 80)
            context = ssl.create_default_context() if https else None
            found = self._addresses[upstream] = (host, port, parts.netloc.encode(), context)
        return found


async def fetch(
    pool: UpstreamPool,
    upstream: str,
    data: bytes,
    timeout: float,
    head_only: bool = False,
    keep_body: bool = False,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Send one request (`data`: its whole bytes) and read the whole answer; its status, its
    headers and, with `keep_body`, its body (else the body is read and dropped: b"").

    Raises:
        UpstreamError: no answer.
        TimeoutError: none within `timeout` seconds (connecting included).
    """
    deadline = pool.loop.time() + timeout
    exchange = await pool.acquire(upstream)
    timer = pool.loop.call_at(deadline, exchange.expire)
    try:
        exchange.send(data, head_only)
        await exchange.done
        body = b"".join(exchange.body) if keep_body else b""
    finally:
        timer.cancel()
        exchange.body = []
        pool.release(exchange)  # closed unless the answer was complete
    return exchange.status, exchange.headers, body


def request_bytes(
    method: bytes, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """One HTTP/1.1 request: `headers` as given, plus Host and (with a body, or for methods that
    carry one) Content-Length."""
    parts = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, target, host)]
    parts.extend(b"%s: %s\r\n" % header for header in headers)
    if body or method in (b"POST", b"PUT", b"PATCH"):
        parts.append(b"content-length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty `data` would end the body: never pass one)."""
    return b"%x\r\n%s\r\n" % (len(data), data)
