"""A TCP server on 127.0.0.1 whose connections a test's handler answers byte by byte.

HTTP servers refuse to misbehave the way hostile ones do (trickled headers, a Content-Length
that lies, garbage instead of HTTP), so here a handler writes whatever it likes, whenever.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

Handler = Callable[[socket.socket], None]


class RawServer:
    """Accepts connections on 127.0.0.1 and runs handler(conn) for each, in its own thread."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        # A short accept timeout lets stop() end the accept loop quickly.
        self._listener.settimeout(0.05)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for conn in self._connections:  # a handler still trickling fails and ends
                with contextlib.suppress(OSError):  # already closed by the handler or client
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self._connections.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self._handler(conn)
        except OSError:
            pass  # the client hung up on purpose (a timeout, a size cap) or stop() closed it
        finally:
            conn.close()


def read_request(conn: socket.socket) -> bytes:
    """The request's head (request line and headers), read up to the blank line."""
    conn.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(4096)
        if not data:
            break
        head += data
    return head


def head(status: int = 200, **headers: str | int) -> bytes:
    """A response head: head(200, content_type="text/html") → b"HTTP/1.1 200 OK\\r\\n..."."""
    lines = [f"HTTP/1.1 {status} Status"]
    lines += [f"{name.replace('_', '-').title()}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(*parts: bytes | Iterable[bytes]) -> Handler:
    """A handler that reads the request, then sends each part (bytes, or chunks of bytes)."""

    def handle(conn: socket.socket) -> None:
        read_request(conn)
        for part in parts:
            for chunk in [part] if isinstance(part, bytes) else part:
                conn.sendall(chunk)

    return handle


@dataclass(frozen=True)
class Trickle:
    """data one byte at a time, interval seconds apart; iterable again for each connection."""

    data: bytes
    interval: float

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self.data)):
            time.sleep(self.interval)
            yield self.data[i : i + 1]


GIB = 1024 * 1024 * 1024


def gzip_bomb(layers: int) -> bytes:
    """1 GiB of zeros gzipped once (about 4.5 MiB) or twice (about 12 KiB)."""
    return _gzip_bombs()[layers - 1]


@functools.cache
def _gzip_bombs() -> tuple[bytes, bytes]:
    """Built once per test session by streaming zeros through zlib (about 2 s); nothing of
    the gibibyte is ever held in memory."""
    once = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # level 1: the fastest
    twice = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    single: list[bytes] = []
    double: list[bytes] = []
    for _ in range(GIB // len(zeros)):
        single.append(once.compress(zeros))
        double.append(twice.compress(single[-1]))
    single.append(once.flush())
    double += [twice.compress(single[-1]), twice.flush()]
    return b"".join(single), b"".join(double)
