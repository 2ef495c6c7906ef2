"""Composition root: builds the real adapters once per instance, on first use."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from buddy.config import Settings
from buddy.domain.intent import RuleBasedClassifier
from buddy.domain.progress import utc_now
from buddy.service.execution import MissionRunner
from buddy.service.missions import MissionService
from buddy.tools import ToolRegistry, default_registry

if TYPE_CHECKING:
    from google.cloud import firestore

    from buddy.adapters.auth import FirebaseTokenVerifier
    from buddy.adapters.firestore_store import FirestoreMissionStore


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

    return FirestoreMissionStore(_firestore(), utc_now)


@functools.cache
def tools() -> ToolRegistry:
    config = settings()
    return default_registry(
        web_allow_loopback=config.web_allow_loopback, search_url=config.search_url
    )


@functools.cache
def mission_service() -> MissionService:
    from buddy.adapters.pubsub import PubSubPublisher

    config = settings()
    publisher = PubSubPublisher(config.project_id, config.executions_topic)
    return MissionService(_store(), publisher, tools(), utc_now, config.max_active_missions)


@functools.cache
def token_verifier() -> FirebaseTokenVerifier:
    from buddy.adapters.auth import FirebaseTokenVerifier

    return FirebaseTokenVerifier(settings().project_id)


@functools.cache
def mission_runner() -> MissionRunner:
    from buddy.adapters.firestore_store import FirestoreDurationStats

    return MissionRunner(
        store=_store(),
        tools=tools(),
        classifier=RuleBasedClassifier(),
        clock=utc_now,
        stats=FirestoreDurationStats(_firestore()),
        progress_min_interval_seconds=settings().progress_min_interval_seconds,
    )
