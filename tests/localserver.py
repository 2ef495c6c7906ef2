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

import httpx


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
    """One request as it came; header names match in any case, as in HTTP."""

    path: str
    query: dict[str, str]
    headers: httpx.Headers
    method: str = "GET"
    body: bytes = b""

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


Route = Reply | Callable[[Received], Reply]


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 whose routes each test registers."""

    def __init__(self) -> None:
        # Keyed "METHOD /path".
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

    def route(self, target: str, reply: Route) -> None:
        """Answers target, "/path" for a GET or "METHOD /path", with reply."""
        method, _, path = target.rpartition(" ")
        self.routes[f"{method or 'GET'} {path}"] = reply

    def page(self, target: str, html: str) -> None:
        self.route(target, Reply(body=html))

    def redirect(self, target: str, location: str, status: int = 302) -> None:
        self.route(target, Reply(status=status, headers={"Location": location}))

    def json(self, target: str, payload: Any, status: int = 200, delay: float = 0.0) -> None:
        body = json.dumps(payload)
        self.route(target, Reply(status, body, "application/json", delay=delay))

    def answer(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
        route = self.routes.get(f"{received.method} {received.path}")
        if route is None:
            return Reply(404, "not found", "text/plain")
        return route if isinstance(route, Reply) else route(received)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            received = Received(
                split.path,
                dict(parse_qsl(split.query)),
                httpx.Headers(self.headers.items()),
                self.command,
                self.rfile.read(length),
            )
            reply = server.answer(received)
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
