"""Composition root: builds the real adapters once per instance, on first use."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from buddy.config import Settings
from buddy.domain.intent import RuleBasedClassifier
from buddy.domain.progress import utc_now
from buddy.service.execution import MissionRunner
from buddy.service.missions import MissionService
from buddy.tools import default_registry

if TYPE_CHECKING:
    from buddy.adapters.auth import FirebaseTokenVerifier
    from buddy.adapters.firestore_store import FirestoreMissionStore


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def _store() -> FirestoreMissionStore:
    from google.cloud import firestore

    from buddy.adapters.firestore_store import FirestoreMissionStore

    return FirestoreMissionStore(firestore.Client(project=settings().project_id), utc_now)


@functools.cache
def mission_service() -> MissionService:
    from buddy.adapters.pubsub import PubSubPublisher

    config = settings()
    publisher = PubSubPublisher(config.project_id, config.executions_topic)
    return MissionService(_store(), publisher, default_registry(), utc_now)


@functools.cache
def token_verifier() -> FirebaseTokenVerifier:
    from buddy.adapters.auth import FirebaseTokenVerifier

    return FirebaseTokenVerifier(settings().project_id)


@functools.cache
def mission_runner() -> MissionRunner:
    return MissionRunner(
        store=_store(),
        tools=default_registry(),
        classifier=RuleBasedClassifier(),
        clock=utc_now,
        progress_min_interval_seconds=settings().progress_min_interval_seconds,
    )
