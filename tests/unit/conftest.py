"""Fixtures for the unit tests: fakes only, no emulators, no network."""

from __future__ import annotations

from typing import Any

import pytest

from buddy.domain.intent import RuleBasedClassifier
from buddy.service.execution import MissionRunner, RunSettings
from buddy.service.missions import MissionService
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


@pytest.fixture
def make_runner(store: FakeMissionStore, clock: FakeClock, stats: FakeDurationStats):
    """Builds a MissionRunner over the fake store, with the default tools unless given."""

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
        )

    return make
