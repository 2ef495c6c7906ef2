"""Composition root: builds the real adapters once per instance, on first use."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import TYPE_CHECKING

from buddy.config import Settings
from buddy.domain.progress import utc_now

# Everything below is imported where it is first needed: cold start is a product metric,
# and an API instance never needs the worker's runner or the web tools' HTTP stack.
if TYPE_CHECKING:
    from google.cloud import firestore

    from buddy.adapters.auth import FirebaseTokenVerifier
    from buddy.adapters.firestore_store import FirestoreMissionStore
    from buddy.adapters.pubsub import PubSubPublisher
    from buddy.service.execution import MissionRunner
    from buddy.service.missions import MissionService
    from buddy.service.recovery import Recovery
    from buddy.tools import ToolRegistry


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def _firestore() -> firestore.Client:
    from google.cloud import firestore

    return firestore.Client(project=settings().project_id)


@functools.cache
def _store() -> FirestoreMissionStore:
    from buddy.adapters.firestore_store import FirestoreMissionStore

    keep = timedelta(days=settings().event_ttl_days)
    return FirestoreMissionStore(_firestore(), utc_now, keep)


@functools.cache
def tools() -> ToolRegistry:
    from buddy.tools import default_registry

    config = settings()
    return default_registry(
        web_allow_loopback=config.web_allow_loopback,
        search_url=config.search_url,
        web_fetch_timeout=config.web_fetch_timeout_seconds,
    )


@functools.cache
def _publisher() -> PubSubPublisher:
    from buddy.adapters.pubsub import PubSubPublisher

    return PubSubPublisher(settings().project_id, settings().executions_topic)


@functools.cache
def mission_service() -> MissionService:
    from buddy.service.missions import MissionService

    config = settings()
    return MissionService(_store(), _publisher(), tools(), utc_now, config.max_active_missions)


@functools.cache
def recovery() -> Recovery:
    from buddy.service.recovery import Recovery

    config = settings()
    return Recovery(_store(), _publisher(), utc_now, config.max_runs, config.queue_timeout_seconds)


@functools.cache
def token_verifier() -> FirebaseTokenVerifier:
    from buddy.adapters.auth import FirebaseTokenVerifier

    return FirebaseTokenVerifier(settings().project_id, check_revoked=settings().check_revoked)


@functools.cache
def mission_runner() -> MissionRunner:
    from buddy.adapters.firestore_store import FirestoreDurationStats
    from buddy.domain.intent import RuleBasedClassifier
    from buddy.service.execution import MissionRunner, RunSettings

    config = settings()
    return MissionRunner(
        store=_store(),
        tools=tools(),
        classifier=RuleBasedClassifier(),
        clock=utc_now,
        stats=FirestoreDurationStats(_firestore()),
        settings=RunSettings(
            progress_min_interval_seconds=config.progress_min_interval_seconds,
            lease_seconds=config.lease_seconds,
            tool_max_attempts=config.tool_max_attempts,
            retry_backoff_seconds=config.retry_backoff_seconds,
            step_delay_seconds=config.fault_step_delay_seconds,
        ),
    )
