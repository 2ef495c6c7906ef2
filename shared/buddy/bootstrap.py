"""Composition root: what the entry points run on, built from settings and adapters.

    build(settings, store=..., publisher=...)   # any adapter can be given (tests: fakes)
    app()                                       # the production instance, made on first use

Every part is made on first use and kept: cold start is a product metric, and an API
instance never needs the worker's runner or the web tools' HTTP stack. Real adapters (and
their SDKs) are imported only when no other was given.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from buddy.config import Settings
from buddy.domain.progress import Clock, utc_now

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from google.cloud import firestore

    from buddy.domain.intent import IntentClassifier
    from buddy.domain.mission import Mission
    from buddy.service.execution import Heartbeat, MissionRunner
    from buddy.service.missions import MissionService
    from buddy.service.ports import (
        DurationStatsStore,
        ExecutionPublisher,
        MissionStore,
        RecipeStore,
        ScheduleStore,
        TokenVerifier,
        ToolStatsStore,
    )
    from buddy.service.recipes import RecipeService
    from buddy.service.recovery import Recovery
    from buddy.service.schedules import ScheduleService
    from buddy.service.tool_stats import ToolStatsService
    from buddy.tools import ToolRegistry


@dataclass
class App:
    """The use cases and the adapters they run on; each made on first use, once."""

    settings: Settings
    clock: Clock = utc_now
    given_store: MissionStore | None = None
    given_publisher: ExecutionPublisher | None = None
    given_verifier: TokenVerifier | None = None
    given_tools: ToolRegistry | None = None
    given_stats: DurationStatsStore | None = None
    given_classifier: IntentClassifier | None = None
    given_schedule_store: ScheduleStore | None = None
    given_recipe_store: RecipeStore | None = None
    given_tool_stats: ToolStatsStore | None = None
    heartbeat: Heartbeat | None = None
    sleep: Callable[[float], None] = time.sleep  # the runner's waits (backoff, fault delays)

    @functools.cached_property
    def _firestore(self) -> firestore.Client:
        from google.cloud import firestore

        return firestore.Client(project=self.settings.project_id)

    @functools.cached_property
    def store(self) -> MissionStore:
        if self.given_store is not None:
            store = self.given_store
        else:
            from buddy.adapters.firestore_store import FirestoreMissionStore

            keep = timedelta(days=self.settings.event_ttl_days)
            store = FirestoreMissionStore(self._firestore, self.clock, keep)
        store.ended.append(self._mission_ended)
        return store

    def _mission_ended(self, mission: Mission) -> None:
        """Whoever ended it (its run, its owner, the sweeper), a scheduled mission's end is
        counted by its schedule."""
        if mission.schedule_id is None:
            return
        try:
            self.schedules.mission_ended(mission)
        except Exception:
            # The end is written; its schedule's count is a follow-up (the next tick of the
            # schedule counts it again), never a reason to fail the write that ended it.
            log.exception(
                "could not count a scheduled mission's end",
                extra={"mission_id": mission.mission_id},
            )

    @functools.cached_property
    def schedule_store(self) -> ScheduleStore:
        if self.given_schedule_store is not None:
            return self.given_schedule_store
        from buddy.adapters.firestore_schedules import FirestoreScheduleStore
        from buddy.adapters.firestore_store import FirestoreMissionStore

        missions = self.store
        assert isinstance(missions, FirestoreMissionStore)
        return FirestoreScheduleStore(self._firestore, missions)

    @functools.cached_property
    def schedules(self) -> ScheduleService:
        from buddy.service.schedules import ScheduleService

        config = self.settings
        return ScheduleService(
            self.schedule_store,
            self.store,
            self.publisher,
            self.missions,
            self.clock,
            recipes=self.recipes,
            max_schedules=config.max_schedules,
            max_active=config.max_active_missions,
        )

    @functools.cached_property
    def recipe_store(self) -> RecipeStore:
        if self.given_recipe_store is not None:
            return self.given_recipe_store
        from buddy.adapters.firestore_recipes import FirestoreRecipeStore

        return FirestoreRecipeStore(self._firestore)

    @functools.cached_property
    def recipes(self) -> RecipeService:
        from buddy.service.recipes import RecipeService

        return RecipeService(self.recipe_store, self.store, self.missions, self.clock)

    @functools.cached_property
    def tool_stats_store(self) -> ToolStatsStore:
        if self.given_tool_stats is not None:
            return self.given_tool_stats
        from buddy.adapters.firestore_stats import FirestoreToolStats

        return FirestoreToolStats(self._firestore)

    @functools.cached_property
    def tool_stats(self) -> ToolStatsService:
        from buddy.service.tool_stats import ToolStatsService

        return ToolStatsService(self.tool_stats_store, self.tools, self.clock)

    @functools.cached_property
    def publisher(self) -> ExecutionPublisher:
        if self.given_publisher is not None:
            return self.given_publisher
        from buddy.adapters.pubsub import PubSubPublisher

        config = self.settings
        return PubSubPublisher(
            config.project_id, config.executions_topic, config.publish_timeout_seconds
        )

    @functools.cached_property
    def verifier(self) -> TokenVerifier:
        if self.given_verifier is not None:
            return self.given_verifier
        from buddy.adapters.auth import FirebaseTokenVerifier

        return FirebaseTokenVerifier(self.settings.project_id, self.settings.check_revoked)

    @functools.cached_property
    def tools(self) -> ToolRegistry:
        if self.given_tools is not None:
            return self.given_tools
        from buddy.tools import default_registry
        from buddy.tools.search import provider_from_settings

        config = self.settings
        return default_registry(
            web_allow_loopback=config.web_allow_loopback,
            search_provider=provider_from_settings(config),
            web_fetch_timeout=config.web_fetch_timeout_seconds,
        )

    @functools.cached_property
    def stats(self) -> DurationStatsStore:
        if self.given_stats is not None:
            return self.given_stats
        from buddy.adapters.firestore_store import FirestoreDurationStats

        return FirestoreDurationStats(self._firestore)

    @functools.cached_property
    def missions(self) -> MissionService:
        from buddy.service.missions import MissionService

        return MissionService(
            self.store, self.publisher, self.tools, self.clock, self.settings.max_active_missions
        )

    @functools.cached_property
    def recovery(self) -> Recovery:
        from buddy.service.recovery import Recovery

        config = self.settings
        return Recovery(
            self.store, self.publisher, self.clock, config.max_runs, config.queue_timeout_seconds
        )

    @functools.cached_property
    def runner(self) -> MissionRunner:
        from buddy.domain.intent import RuleBasedClassifier
        from buddy.service.execution import MissionRunner, RunSettings

        config = self.settings
        return MissionRunner(
            store=self.store,
            tools=self.tools,
            classifier=self.given_classifier or RuleBasedClassifier(),
            clock=self.clock,
            stats=self.stats,
            settings=RunSettings(
                progress_min_interval_seconds=config.progress_min_interval_seconds,
                lease_seconds=config.lease_seconds,
                tool_max_attempts=config.tool_max_attempts,
                retry_backoff_seconds=config.retry_backoff_seconds,
                step_delay_seconds=config.fault_step_delay_seconds,
                pause_timeout_seconds=config.pause_timeout_hours * 3600,
            ),
            ratings=self.tool_stats_store,
            sleep=self.sleep,
            heartbeat=self.heartbeat,
        )


def build(
    settings: Settings | None = None,
    *,
    clock: Clock = utc_now,
    store: MissionStore | None = None,
    publisher: ExecutionPublisher | None = None,
    verifier: TokenVerifier | None = None,
    tools: ToolRegistry | None = None,
    stats: DurationStatsStore | None = None,
    classifier: IntentClassifier | None = None,
    schedule_store: ScheduleStore | None = None,
    recipe_store: RecipeStore | None = None,
    tool_stats: ToolStatsStore | None = None,
    heartbeat: Heartbeat | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> App:
    """An App on the given adapters, and real ones (from `settings`) for the rest."""
    return App(
        settings or Settings.from_env(),
        clock,
        given_store=store,
        given_publisher=publisher,
        given_verifier=verifier,
        given_tools=tools,
        given_stats=stats,
        given_classifier=classifier,
        given_schedule_store=schedule_store,
        given_recipe_store=recipe_store,
        given_tool_stats=tool_stats,
        heartbeat=heartbeat,
        sleep=sleep,
    )


_installed: App | None = None
_lock = threading.Lock()


def app() -> App:
    """The instance the entry points run on: the production one, made on first use (from
    the environment), unless a test installed another."""
    global _installed
    with _lock:
        if _installed is None:
            _installed = build()
        return _installed


@contextlib.contextmanager
def installed(instance: App) -> Iterator[App]:
    """Runs the entry points on `instance` for a while (in-process tests)."""
    global _installed
    with _lock:
        before, _installed = _installed, instance
    try:
        yield instance
    finally:
        with _lock:
            _installed = before
