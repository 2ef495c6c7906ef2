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
    search_url: str | None = None

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
            search_url=env.get("BUDDY_SEARCH_URL") or None,
        )
