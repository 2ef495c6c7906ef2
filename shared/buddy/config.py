"""Settings from the environment, read in one place.

Precedence: an explicit BUDDY_* variable, then the platform's variable
(GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT), then the local-stack default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    project_id: str = "demo-buddy"
    executions_topic: str = "mission-executions"
    dead_letter_topic: str = "mission-executions-dead"
    progress_min_interval_seconds: float = 1.0
    # Development only: lets web tools fetch from 127.0.0.1 (local test servers).
    web_allow_loopback: bool = False
    # One deadline per page fetched: DNS, connect, headers, body and every redirect.
    web_fetch_timeout_seconds: float = 30.0
    search_url: str | None = None
    # Origins whose pages may call the API from a browser (the dashboard).
    cors_origins: frozenset[str] = frozenset({"http://127.0.0.1:5000", "http://localhost:5000"})
    max_active_missions: int = 10
    # A run's lease: renewed by every write and a heartbeat; past it, another run takes over.
    lease_seconds: float = 60.0
    tool_max_attempts: int = 3
    retry_backoff_seconds: float = 1.0
    # Recovery: a mission is failed after this many runs, or requeued when queued this long.
    max_runs: int = 5
    # Events older than this are deleted by a Firestore TTL policy on `expire_at`.
    event_ttl_days: float = 30.0
    queue_timeout_seconds: float = 300.0
    # Test hook (fault injection): the worker pauses this long at the start of every step.
    fault_step_delay_seconds: float = 0.0
    # Refuse ID tokens revoked (or users disabled) since they were issued: one Auth call more
    # per request, and the API's account needs to read users (roles/firebaseauth.viewer).
    check_revoked: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        project = (
            env.get("BUDDY_PROJECT_ID")
            or env.get("GOOGLE_CLOUD_PROJECT")
            or env.get("GCLOUD_PROJECT")
            or cls.project_id
        )
        return cls(
            project_id=project,
            executions_topic=env.get("BUDDY_EXECUTIONS_TOPIC", cls.executions_topic),
            dead_letter_topic=env.get("BUDDY_DEAD_LETTER_TOPIC", cls.dead_letter_topic),
            progress_min_interval_seconds=float(
                env.get("BUDDY_PROGRESS_MIN_INTERVAL_SECONDS", cls.progress_min_interval_seconds)
            ),
            web_allow_loopback=env.get("BUDDY_WEB_ALLOW_LOOPBACK", "").lower() in {"1", "true"},
            web_fetch_timeout_seconds=float(
                env.get("BUDDY_WEB_FETCH_TIMEOUT_SECONDS", cls.web_fetch_timeout_seconds)
            ),
            search_url=env.get("BUDDY_SEARCH_URL") or None,
            cors_origins=frozenset(
                o.strip() for o in env["BUDDY_CORS_ORIGINS"].split(",") if o.strip()
            )
            if "BUDDY_CORS_ORIGINS" in env
            else cls.cors_origins,
            max_active_missions=int(env.get("BUDDY_MAX_ACTIVE_MISSIONS", cls.max_active_missions)),
            lease_seconds=float(env.get("BUDDY_LEASE_SECONDS", cls.lease_seconds)),
            tool_max_attempts=int(env.get("BUDDY_TOOL_MAX_ATTEMPTS", cls.tool_max_attempts)),
            retry_backoff_seconds=float(
                env.get("BUDDY_RETRY_BACKOFF_SECONDS", cls.retry_backoff_seconds)
            ),
            max_runs=int(env.get("BUDDY_MAX_RUNS", cls.max_runs)),
            event_ttl_days=float(env.get("BUDDY_EVENT_TTL_DAYS", cls.event_ttl_days)),
            queue_timeout_seconds=float(
                env.get("BUDDY_QUEUE_TIMEOUT_SECONDS", cls.queue_timeout_seconds)
            ),
            fault_step_delay_seconds=float(env.get("BUDDY_FAULT_STEP_DELAY_SECONDS", "0")),
            check_revoked=env.get("BUDDY_CHECK_REVOKED", "").lower() in {"1", "true"},
        )


EMULATOR_VARIABLES = (
    "FIREBASE_AUTH_EMULATOR_HOST",
    "FIRESTORE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
)


class UnsafeEnvironment(RuntimeError):
    """Emulator settings in production would, e.g., accept unsigned ID tokens."""


def refuse_emulators_in_production(env: Mapping[str, str] = os.environ) -> None:
    """Stops start-up on Cloud Run/Functions (K_SERVICE is set) when an emulator is configured.

    BUDDY_LOCAL_DEV=1 says on purpose that this is a local run that happens to set K_SERVICE.
    """
    if not env.get("K_SERVICE") or env.get("BUDDY_LOCAL_DEV") == "1":
        return
    set_here = [name for name in EMULATOR_VARIABLES if env.get(name)]
    if set_here:
        raise UnsafeEnvironment(
            f"Refusing to start: {', '.join(set_here)} set in production (K_SERVICE="
            f"{env['K_SERVICE']}). Emulator mode accepts unsigned ID tokens; unset it, or set "
            "BUDDY_LOCAL_DEV=1 if this really is a local run."
        )
