"""Fixtures for the unit tests: fakes only, no emulators, no network."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from buddy import bootstrap
from buddy.config import Settings
from buddy.domain.intent import RuleBasedClassifier
from buddy.service.execution import MissionRunner
from buddy.service.missions import MissionService
from buddy.service.progress_writer import ProgressWriter
from buddy.tools import ToolRegistry, default_registry

from .fakes import (
    FakeClock,
    FakeDurationStats,
    FakeMissionStore,
    FakePublisher,
    FakeRecipeStore,
    FakeScheduleStore,
    FakeToolStats,
    FakeVerifier,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeMissionStore:
    return FakeMissionStore(clock)


@pytest.fixture
def schedule_store(store: FakeMissionStore) -> FakeScheduleStore:
    return FakeScheduleStore(store)


@pytest.fixture
def recipe_store(store: FakeMissionStore) -> FakeRecipeStore:
    return FakeRecipeStore(store)


@pytest.fixture
def tool_stats(store: FakeMissionStore) -> FakeToolStats:
    return FakeToolStats(store)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


# What RunSettings calls the runner's settings, by their names in Settings.
_RUN_SETTINGS = {
    "interval": "progress_min_interval_seconds",
    "step_delay_seconds": "fault_step_delay_seconds",
}


@pytest.fixture
def make_app(
    store: FakeMissionStore,
    publisher: FakePublisher,
    clock: FakeClock,
    stats: FakeDurationStats,
    heartbeat: ManualHeartbeat,
    schedule_store: FakeScheduleStore,
    recipe_store: FakeRecipeStore,
    tool_stats: FakeToolStats,
) -> Callable[..., bootstrap.App]:
    """The composition root over the fakes: `make_app(tools=..., max_active_missions=2)`."""

    def make(tools: ToolRegistry | None = None, **settings: Any) -> bootstrap.App:
        named = {_RUN_SETTINGS.get(k, k): v for k, v in settings.items()}
        return bootstrap.build(
            Settings(**named),
            clock=clock,
            store=store,
            publisher=publisher,
            verifier=FakeVerifier(),
            tools=tools or default_registry(),
            stats=stats,
            classifier=RuleBasedClassifier(),
            schedule_store=schedule_store,
            recipe_store=recipe_store,
            tool_stats=tool_stats,
            heartbeat=heartbeat,
            sleep=clock.advance,  # waiting (backoff, fault delays) moves the fake clock
        )

    return make


@pytest.fixture
def service(make_app: Callable[..., bootstrap.App]) -> MissionService:
    return make_app().missions


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
def make_runner(make_app: Callable[..., bootstrap.App]) -> Callable[..., MissionRunner]:
    """A MissionRunner over the fake store, with the default tools unless given; its
    heartbeat ticks when the test calls `heartbeat.beat()`."""

    def make(
        tools: ToolRegistry | None = None, interval: float = 1.0, **settings: Any
    ) -> MissionRunner:
        return make_app(tools, interval=interval, **settings).runner

    return make
