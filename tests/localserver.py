"""A real HTTP server on 127.0.0.1 whose routes each test registers (no internet here)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Reply:
    """What a route answers; delay is slept before anything is sent."""

    status: int = 200
    body: str | bytes = ""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


Route = Reply | Callable[[Received], Reply]


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 whose routes each test registers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # Daemon handler threads: a slow route may still be sleeping when the test ends.
        self._httpd.daemon_threads = True
        # A short poll interval keeps shutdown (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"{self.base_url}{path}"

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def route(self, path: str, reply: Route) -> None:
        self.routes[path] = reply

    def page(self, path: str, html: str) -> None:
        self.route(path, Reply(body=html))

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.route(path, Reply(status=status, headers={"Location": location}))

    def json(self, path: str, payload: Any, status: int = 200, delay: float = 0.0) -> None:
        body = json.dumps(payload)
        self.route(path, Reply(status, body, "application/json", delay=delay))

    def record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            split = urlsplit(self.path)
            received = Received(split.path, dict(parse_qsl(split.query)), dict(self.headers))
            server.record(received)
            route = server.routes.get(split.path, Reply(404, "not found", "text/plain"))
            reply = route if isinstance(route, Reply) else route(received)
            time.sleep(reply.delay)
            body = reply.body.encode() if isinstance(reply.body, str) else reply.body
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading on purpose (timeouts, size caps)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler
