"""Fixtures for the tool tests: a real HTTP server on 127.0.0.1 and a recording reporter."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from buddy.tools import ToolContext

from ..localserver import LocalServer


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    local.start()
    yield local
    local.stop()


class Progress:
    """A reporter that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str, str | None]] = []

    def __call__(self, done: int, total: int, unit: str, message: str | None) -> None:
        self.calls.append((done, total, unit, message))

    @property
    def messages(self) -> list[str | None]:
        return [call[3] for call in self.calls]


@pytest.fixture
def progress() -> Progress:
    return Progress()


MakeContext = Callable[..., ToolContext]


@pytest.fixture
def make_context(progress: Progress) -> MakeContext:
    """Builds a ToolContext that reports into `progress`; loopback is in scope by default."""

    def make(
        objective: str = "",
        inputs: dict[str, Any] | None = None,
        allowed_domains: tuple[str, ...] = ("127.0.0.1",),
        cancelled: Callable[[], bool] = lambda: False,
    ) -> ToolContext:
        return ToolContext(
            objective=objective,
            inputs=inputs or {},
            allowed_domains=allowed_domains,
            report=progress,
            cancelled=cancelled,
        )

    return make


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """getaddrinfo never answers (until the test ends), as with a dead DNS server."""
    release = threading.Event()

    def hang(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    yield
    release.set()
