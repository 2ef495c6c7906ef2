"""Settings from the environment, read in one place, and the values everything shares.

Precedence: an explicit BUDDY_* variable, then the platform's variable (GOOGLE_CLOUD_PROJECT,
GCLOUD_PROJECT), then the default here. The functions, the local stack, the deploy script,
the test suite, the benchmarks and the dashboard (through its generated buddy-config.json)
all read topics, ports, delivery attempts and limits from this module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROJECT_ID = "demo-buddy"  # the `demo-` prefix keeps the emulators off real services
EXECUTIONS_TOPIC = "mission-executions"
DEAD_LETTER_TOPIC = "mission-executions-dead"
# Deliveries of one execution message before Pub/Sub moves it to the dead-letter topic.
MAX_DELIVERY_ATTEMPTS = 5
MAX_BODY_BYTES = 64 * 1024
LOCAL_HOST = "127.0.0.1"
# Locally, the CLI and the dashboard act as this Auth-emulator user until someone signs in.
LOCAL_USER_UID = "local-user"


@dataclass(frozen=True)
class LocalPorts:
    """Where the local stack listens (SPEC §2); BUDDY_<NAME>_PORT overrides each."""

    firestore: int = 8080
    pubsub: int = 8085
    auth: int = 9099
    hosting: int = 5000
    api: int = 5001
    worker: int = 5002
    sweeper: int = 5003
    dead_letter: int = 5004
    scheduler: int = 5005

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LocalPorts:
        ports = {
            f.name: int(env.get(f"BUDDY_{f.name.upper()}_PORT", getattr(cls, f.name)))
            for f in dataclasses.fields(cls)
        }
        return cls(**ports)

    def address(self, name: str) -> str:
        """host:port of one part, e.g. address("firestore") → "127.0.0.1:8080"."""
        return f"{LOCAL_HOST}:{getattr(self, name)}"

    def url(self, name: str) -> str:
        return f"http://{self.address(name)}"

    def emulator_env(self) -> dict[str, str]:
        """The variables that point the Google and Firebase SDKs at the local emulators."""
        return {
            # First: in production it is the dangerous one (it accepts unsigned ID tokens).
            "FIREBASE_AUTH_EMULATOR_HOST": self.address("auth"),
            "FIRESTORE_EMULATOR_HOST": self.address("firestore"),
            "PUBSUB_EMULATOR_HOST": self.address("pubsub"),
        }


def _flag(value: str) -> bool:
    return value.lower() in {"1", "true"}


def _optional(value: str) -> str | None:
    """The value, or None when it is empty (a variable set to "" means unset)."""
    return value.strip() or None


def _origins(value: str) -> frozenset[str]:
    return frozenset(origin.strip() for origin in value.split(",") if origin.strip())


def _setting(env: str, parse: Any = str, **kwargs: Any) -> Any:
    """A field read from the environment variable `env`, parsed with `parse`."""
    return field(metadata={"env": env, "parse": parse}, **kwargs)


@dataclass(frozen=True)
class Settings:
    project_id: str = PROJECT_ID
    executions_topic: str = _setting("BUDDY_EXECUTIONS_TOPIC", default=EXECUTIONS_TOPIC)
    dead_letter_topic: str = _setting("BUDDY_DEAD_LETTER_TOPIC", default=DEAD_LETTER_TOPIC)
    progress_min_interval_seconds: float = _setting(
        "BUDDY_PROGRESS_MIN_INTERVAL_SECONDS", float, default=1.0
    )
    # Development only: lets web tools fetch from 127.0.0.1 (local test servers).
    web_allow_loopback: bool = _setting("BUDDY_WEB_ALLOW_LOOPBACK", _flag, default=False)
    # One deadline per page fetched: DNS, connect, headers, body and every redirect.
    web_fetch_timeout_seconds: float = _setting(
        "BUDDY_WEB_FETCH_TIMEOUT_SECONDS", float, default=30.0
    )
    # web_search and research: duckduckgo (no key), searxng, brave or tavily. A value that
    # names none of them leaves search "not available", saying why (tools/search_providers).
    search_provider: str = _setting(
        "BUDDY_SEARCH_PROVIDER", lambda v: v.strip().lower() or "duckduckgo", default="duckduckgo"
    )
    # The provider's base URL: required for searxng, an override for the others.
    search_url: str | None = _setting("BUDDY_SEARCH_URL", _optional, default=None)
    # brave and tavily: the key itself, else the provider's usual variable, else (in
    # production) the Secret Manager version that holds it, read on the first search.
    search_api_key: str | None = _setting(
        "BUDDY_SEARCH_API_KEY", _optional, default=None, repr=False
    )
    brave_api_key: str | None = _setting("BRAVE_API_KEY", _optional, default=None, repr=False)
    tavily_api_key: str | None = _setting("TAVILY_API_KEY", _optional, default=None, repr=False)
    search_api_key_secret: str | None = _setting(
        "BUDDY_SEARCH_API_KEY_SECRET", _optional, default=None
    )
    # Origins whose pages may call the API from a browser (the dashboard).
    cors_origins: frozenset[str] = _setting(
        "BUDDY_CORS_ORIGINS",
        _origins,
        default=frozenset(
            {f"http://{LOCAL_HOST}:{LocalPorts.hosting}", f"http://localhost:{LocalPorts.hosting}"}
        ),
    )
    max_active_missions: int = _setting("BUDDY_MAX_ACTIVE_MISSIONS", int, default=10)
    # A run's lease: renewed by every write and a heartbeat; past it, another run takes over.
    lease_seconds: float = _setting("BUDDY_LEASE_SECONDS", float, default=60.0)
    tool_max_attempts: int = _setting("BUDDY_TOOL_MAX_ATTEMPTS", int, default=3)
    retry_backoff_seconds: float = _setting("BUDDY_RETRY_BACKOFF_SECONDS", float, default=1.0)
    # Recovery: a mission is failed after this many runs, or requeued when queued this long.
    max_runs: int = _setting("BUDDY_MAX_RUNS", int, default=5)
    # Events older than this are deleted by a Firestore TTL policy on `expire_at`.
    event_ttl_days: float = _setting("BUDDY_EVENT_TTL_DAYS", float, default=30.0)
    queue_timeout_seconds: float = _setting("BUDDY_QUEUE_TIMEOUT_SECONDS", float, default=300.0)
    # How long `execute` waits for Pub/Sub before it undoes the queueing and answers 503.
    publish_timeout_seconds: float = _setting("BUDDY_PUBLISH_TIMEOUT_SECONDS", float, default=10.0)
    # How long a mission that asks its owner to lift a limit waits before it fails.
    pause_timeout_hours: float = _setting("BUDDY_PAUSE_TIMEOUT_HOURS", float, default=72.0)
    max_schedules: int = _setting("BUDDY_MAX_SCHEDULES", int, default=50)
    # The local stack's stand-in for Cloud Scheduler calls the scheduler this often.
    scheduler_tick_seconds: float = _setting("BUDDY_SCHEDULER_TICK_SECONDS", float, default=15.0)
    # Test hook (fault injection): the worker pauses this long at the start of every step.
    fault_step_delay_seconds: float = _setting("BUDDY_FAULT_STEP_DELAY_SECONDS", float, default=0.0)
    # Refuse ID tokens revoked (or users disabled) since they were issued: one Auth call more
    # per request, and the API's account needs to read users (roles/firebaseauth.viewer).
    check_revoked: bool = _setting("BUDDY_CHECK_REVOKED", _flag, default=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        values: dict[str, Any] = {
            f.name: f.metadata["parse"](env[f.metadata["env"]])
            for f in dataclasses.fields(cls)
            if "env" in f.metadata and f.metadata["env"] in env
        }
        values["project_id"] = (
            env.get("BUDDY_PROJECT_ID")
            or env.get("GOOGLE_CLOUD_PROJECT")
            or env.get("GCLOUD_PROJECT")
            or PROJECT_ID
        )
        return cls(**values)


EMULATOR_VARIABLES = tuple(LocalPorts().emulator_env())


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
