"""Fixtures for the unit tests: fakes only, no emulators, no network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from buddy.domain.intent import RuleBasedClassifier
from buddy.service.execution import MissionRunner, RunSettings
from buddy.service.missions import MissionService
from buddy.service.progress_writer import ProgressWriter
from buddy.tools import ToolRegistry, default_registry

from .fakes import FakeClock, FakeDurationStats, FakeMissionStore, FakePublisher


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeMissionStore:
    return FakeMissionStore(clock)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def service(store: FakeMissionStore, publisher: FakePublisher, clock: FakeClock) -> MissionService:
    return MissionService(store, publisher, default_registry(), clock)


@pytest.fixture
def stats() -> FakeDurationStats:
    return FakeDurationStats()


class ManualHeartbeat:
    """The lease heartbeat, ticking only when a test says so (no thread, no real time)."""

    def __init__(self) -> None:
        self.writers: list[ProgressWriter] = []

    @contextlib.contextmanager
    def __call__(self, writer: ProgressWriter) -> Iterator[None]:
        self.writers.append(writer)
        yield

    def beat(self) -> None:
        """One tick of the newest run's heartbeat (an earlier, killed run's beats no more)."""
        if self.writers:
            self.writers[-1].heartbeat()


@pytest.fixture
def heartbeat() -> ManualHeartbeat:
    return ManualHeartbeat()


@pytest.fixture
def make_runner(
    store: FakeMissionStore, clock: FakeClock, stats: FakeDurationStats, heartbeat: ManualHeartbeat
):
    """Builds a MissionRunner over the fake store, with the default tools unless given; its
    heartbeat ticks when the test calls `heartbeat.beat()`."""

    def make(
        tools: ToolRegistry | None = None, interval: float = 1.0, **settings: Any
    ) -> MissionRunner:
        return MissionRunner(
            store,
            tools or default_registry(),
            RuleBasedClassifier(),
            clock,
            stats,
            RunSettings(progress_min_interval_seconds=interval, **settings),
            sleep=clock.advance,  # waiting (backoff, fault delays) moves the fake clock
            heartbeat=heartbeat,
        )

    return make
