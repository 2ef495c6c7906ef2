"""HTTP for servers we do not trust: one deadline per request, bodies decoded within a size cap.

httpx's timeouts bound each socket operation, so a server that trickles a byte at a time keeps
a request alive for as long as it likes; and httpx inflates each compressed chunk with no limit,
so a few kilobytes of stacked gzip become a gibibyte in memory. BoundedClient ends every socket
operation of a request (name lookup, connect, TLS, request, headers, body) by the request's
deadline; read_body decodes the content encodings itself, never more than it was asked for.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import httpcore
import httpx

ACCEPT_ENCODING = "gzip, deflate"
# deflate inside gzip is plausible; more layers than this are not an honest page.
MAX_ENCODINGS = 3
# What a decoding layer asks of the one before it; httpcore reads the network 64 KiB at a time.
_READ_SIZE = 64 * 1024

# getaddrinfo has no timeout of its own: it runs here, and only the wait for it is bounded.
# A few threads suffice; a lookup that hangs holds one until the system resolver gives up.
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


class ContentEncodingError(Exception):
    """The body cannot be decoded; `encoding` names the content encoding at fault."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


class UnsupportedEncoding(ContentEncodingError):
    """A content encoding other than gzip, deflate and identity (br, zstd, compress, ...)."""


class TooManyEncodings(ContentEncodingError):
    """More than MAX_ENCODINGS content encodings stacked; `encoding` is the whole header."""


class CorruptEncoding(ContentEncodingError):
    """Compressed data that does not decompress, or that stops before its end."""


class _BodyTooLong(Exception):
    """The raw body passed its own cap (a stream that inflates to almost nothing)."""


def _seconds_until(deadline: float) -> float | None:
    """What to pass as a timeout: None for no deadline, never below zero."""
    return None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())


def resolve(host: str, port: int, deadline: float) -> list[str]:
    """The addresses host resolves to, in the resolver's order; TimeoutError past the deadline."""
    lookup = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=_seconds_until(deadline))
    except TimeoutError:
        lookup.cancel()  # if it has not started yet
        raise
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's SyncBackend with every operation cut short at `deadline`."""

    def __init__(self) -> None:
        self.deadline = math.inf
        self._backend = httpcore.SyncBackend()

    def timeout(
        self, requested: float | None, expired: type[httpcore.TimeoutException]
    ) -> float | None:
        """The shorter of httpcore's timeout for one operation and the time left."""
        left = _seconds_until(self.deadline)
        if left is None:
            return requested
        if left <= 0:
            raise expired("the request's deadline has passed")
        return left if requested is None else min(requested, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = [host] if is_ip(host) else resolve(host, port, self.deadline)
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(f"looking up {host} took too long") from e
        except (OSError, UnicodeError) as e:
            raise httpcore.ConnectError(f"cannot resolve {host}") from e
        error = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:  # in turn, as socket.create_connection does
            try:
                stream = self._backend.connect_tcp(
                    address,
                    port,
                    self.timeout(timeout, httpcore.ConnectTimeout),
                    local_address,
                    socket_options,
                )
            except httpcore.ConnectError as e:
                error = e
                continue
            return _DeadlineStream(stream, self)
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("Unix sockets are not for untrusted servers")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads, writes and TLS handshake end by the backend's deadline.

    The deadline is read at each operation, so a kept-alive connection serves the next
    request under that request's deadline.
    """

    def __init__(self, stream: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._stream = stream
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._backend.timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._backend.timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The socket timeout bounds the whole handshake (CPython's ssl counts it down).
        timeout = self._backend.timeout(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, timeout), self._backend
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False)
        self.backend = _DeadlineBackend()
        # httpx offers no way to choose httpcore's network backend, so the pool it built is
        # replaced by the same pool over ours. Safe because httpx is pinned (0.28.1).
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=self.backend)


class BoundedClient:
    """An httpx client that ends each request by its deadline; one request at a time.

    Reads no settings from the environment (a proxy there would resolve names behind
    web_extract's address checks), follows no redirects, and asks only for the content
    encodings read_body can decode.
    """

    def __init__(self, timeout: httpx.Timeout, headers: Mapping[str, str]) -> None:
        self._transport = _DeadlineTransport()
        self._client = httpx.Client(
            transport=self._transport,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={**headers, "Accept-Encoding": ACCEPT_ENCODING},
        )

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        return self._client.build_request(method, url, **kwargs)

    def send(self, request: httpx.Request, *, deadline: float) -> httpx.Response:
        """The response with its body still to read; reading it is bound by deadline too."""
        self._transport.backend.deadline = deadline
        return self._client.send(request, stream=True)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> BoundedClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class Body:
    data: bytes
    truncated: bool


class _Reader(Protocol):
    def read(self, limit: int) -> bytes:
        """At most limit bytes; b"" once there are no more."""
        ...


class _RawReader:
    """The body as it came over the network, at most max_bytes of it."""

    def __init__(
        self, chunks: Iterator[bytes], max_bytes: int, between_reads: Callable[[], None]
    ) -> None:
        self._chunks = chunks
        self._bytes_left = max_bytes
        self._between_reads = between_reads
        self._pending = b""

    def read(self, limit: int) -> bytes:
        if not self._pending:
            self._between_reads()
            self._pending = next(self._chunks, b"")
            self._bytes_left -= len(self._pending)
            if self._bytes_left < 0:
                raise _BodyTooLong
        data, self._pending = self._pending[:limit], self._pending[limit:]
        return data


def _has_zlib_header(data: bytes) -> bool:
    """True for a zlib-wrapped deflate stream (RFC 1950), False for raw deflate."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


class _Inflater:
    """One gzip or deflate layer that inflates only as much as it is asked for.

    Input zlib has not taken yet (its unconsumed_tail) waits here, so a layer inside another
    never inflates more than the layer after it asks for.
    """

    def __init__(self, upstream: _Reader, encoding: str) -> None:
        self._upstream = upstream
        self._encoding = encoding
        self._gzip = encoding != "deflate"
        self._zlib: zlib._Decompress | None = None
        self._pending = b""
        self._exhausted = False
        self._finished = False

    def read(self, limit: int) -> bytes:
        while not self._finished:
            if self._zlib is None or self._zlib.eof:
                self._zlib = self._next_stream()
                if self._zlib is None:
                    self._finished = True
                    break
            self._fill(1)
            data, self._pending = self._pending, b""
            try:
                out = self._zlib.decompress(data, limit)
            except zlib.error as e:
                raise CorruptEncoding(self._encoding) from e
            self._pending = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
            if out:
                return out
            if not data and not self._zlib.eof:
                raise CorruptEncoding(self._encoding)  # the input ends inside the stream
        return b""

    def _fill(self, size: int) -> None:
        """Takes input until size bytes wait or there is no more."""
        while len(self._pending) < size and not self._exhausted:
            data = self._upstream.read(_READ_SIZE)
            self._pending += data
            self._exhausted = not data

    def _next_stream(self) -> zlib._Decompress | None:
        """A decompressor for the next stream in the input, None when no stream follows."""
        first = self._zlib is None
        self._fill(2)
        if not self._pending:
            return None
        if self._gzip:
            # Gzip members may follow one another; anything else after a member is ignored,
            # as gzip readers do with trailing garbage.
            if not first and not self._pending.startswith(b"\x1f\x8b"):
                return None
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if not first:
            return None  # bytes after the end of a deflate stream are ignored
        # "deflate" is meant to be zlib-wrapped, but some servers send it raw.
        wbits = zlib.MAX_WBITS if _has_zlib_header(self._pending) else -zlib.MAX_WBITS
        return zlib.decompressobj(wbits)


def content_encodings(header: str) -> list[str]:
    """The codings in a Content-Encoding header, in the order they were applied."""
    codings = [coding.strip().lower() for coding in header.split(",")]
    return [coding for coding in codings if coding and coding != "identity"]


def read_body(
    response: httpx.Response,
    max_bytes: int,
    between_reads: Callable[[], None] = lambda: None,
) -> Body:
    """The decoded body, cut at max_bytes and flagged truncated when there was more.

    Decoding stops at the cap, so memory stays near max_bytes whatever the compression
    ratio. between_reads runs before each network read (a cancel check, say). Raises a
    ContentEncodingError for a body it cannot decode.
    """
    header = response.headers.get("content-encoding", "")
    codings = content_encodings(header)
    if len(codings) > MAX_ENCODINGS:
        raise TooManyEncodings(header)
    unsupported = [coding for coding in codings if coding not in ("gzip", "x-gzip", "deflate")]
    if unsupported:
        raise UnsupportedEncoding(unsupported[0])
    # The raw body gets a cap of its own: compressed data can inflate to next to nothing.
    reader: _Reader = _RawReader(response.iter_raw(), 2 * max_bytes + _READ_SIZE, between_reads)
    for coding in reversed(codings):  # the last one applied is the first undone
        reader = _Inflater(reader, coding)
    body = bytearray()
    try:
        while len(body) <= max_bytes:
            data = reader.read(min(_READ_SIZE, max_bytes + 1 - len(body)))
            if not data:
                return Body(bytes(body), truncated=False)
            body += data
    except _BodyTooLong:
        pass
    del body[max_bytes:]
    return Body(bytes(body), truncated=True)
