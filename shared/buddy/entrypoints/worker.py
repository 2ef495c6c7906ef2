"""The stage worker: a Pub/Sub push delivered as a CloudEvent runs one mission.

Returning acknowledges the message; raising asks Pub/Sub to redeliver it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from buddy import bootstrap
from buddy.config import MAX_DELIVERY_ATTEMPTS
from buddy.domain.lifecycle import MissionBusy
from buddy.logs import configure_logging
from buddy.schemas import valid_mission_id

log = logging.getLogger(__name__)


class PoisonMessage(ValueError):
    """Signal: a message no retry can fix. Acknowledged and logged, never retried."""


def mission_id_of(data: dict[str, Any]) -> str:
    try:
        payload = json.loads(base64.b64decode(data["message"]["data"], validate=True))
        mission_id = payload["mission_id"]
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise PoisonMessage(f"not an execution message: {e!r}") from e
    if not isinstance(mission_id, str) or not valid_mission_id(mission_id):
        raise PoisonMessage("mission_id is not a valid id")
    return mission_id


class RetryLater(Exception):
    """Signal: raised out of the function so that Pub/Sub redelivers the message after its
    backoff (functions-framework answers 500, which the push subscription retries)."""


def handle(event: Any, app: bootstrap.App | None = None) -> None:
    configure_logging()
    data = event.data or {}
    try:
        mission_id = mission_id_of(data)
    except PoisonMessage as e:
        log.error("dropping poison message", extra={"event_id": event["id"], "reason": str(e)})
        return
    try:
        outcome = (app or bootstrap.app()).runner.run(mission_id)
    except MissionBusy as e:
        log.info(
            "another run holds the mission; asking for a later delivery",
            extra={"mission_id": mission_id, "event_id": event["id"]},
        )
        raise RetryLater(mission_id) from e
    log.info(
        "delivery handled",
        extra={"mission_id": mission_id, "event_id": event["id"], "outcome": outcome.value},
    )


def handle_dead_letter(event: Any, app: bootstrap.App | None = None) -> None:
    """A message Pub/Sub gave up on: end its mission with a clear error (unless a run is live)."""
    configure_logging()
    data = event.data or {}
    try:
        mission_id = mission_id_of(data)
    except PoisonMessage as e:
        log.error("dropping poison dead letter", extra={"event_id": event["id"], "reason": str(e)})
        return
    attempts = int(data["message"].get("deliveryAttempt") or MAX_DELIVERY_ATTEMPTS)
    (app or bootstrap.app()).recovery.dead_lettered(mission_id, attempts)
    log.warning("dead letter handled", extra={"mission_id": mission_id, "event_id": event["id"]})
