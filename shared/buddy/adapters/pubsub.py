"""Publishing execution messages, and the topic/subscription layout they travel through."""

from __future__ import annotations

import contextlib
import json
import logging

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from buddy.config import MAX_DELIVERY_ATTEMPTS
from buddy.errors import DependencyUnavailable

log = logging.getLogger(__name__)


class PubSubPublisher:
    def __init__(self, project_id: str, topic: str, timeout_seconds: float = 10.0) -> None:
        # Publish each message at once: an execute call waits for its message id.
        self._client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
        )
        self._topic = self._client.topic_path(project_id, topic)
        self._timeout = timeout_seconds

    def publish_execution(self, mission_id: str) -> None:
        data = json.dumps({"mission_id": mission_id}).encode()
        retry = Retry(timeout=self._timeout)
        try:
            future = self._client.publish(self._topic, data, retry=retry, timeout=self._timeout)
            future.result(timeout=self._timeout + 1)
        except Exception as e:
            # Whatever broke (emulator down, timeout, no topic), the message did not leave.
            log.warning("publish failed", extra={"mission_id": mission_id, "error": repr(e)})
            raise DependencyUnavailable("Pub/Sub is unavailable; the mission was not queued") from e


def worker_subscription(topic: str) -> str:
    """The push subscription that feeds `topic` to the stage worker."""
    return f"{topic}-worker"


def ensure_execution_topology(
    project_id: str,
    topic: str,
    dead_letter_topic: str,
    push_endpoint: str,
    dead_letter_endpoint: str,
) -> None:
    """Topic, dead-letter topic and the push subscription that feeds the stage worker.

    Idempotent. Used for the local stack and tests; production uses the deploy script.
    """
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project_id, topic)
    dead_path = publisher.topic_path(project_id, dead_letter_topic)
    for path in (topic_path, dead_path):
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=path)
    retry = {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 60}}
    subscriptions = {
        subscriber.subscription_path(project_id, worker_subscription(topic)): {
            "topic": topic_path,
            "push_config": {"push_endpoint": push_endpoint},
            "ack_deadline_seconds": 600,
            "retry_policy": retry,
            "dead_letter_policy": {
                "dead_letter_topic": dead_path,
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            },
        },
        # Dead letters go to their own function, which ends their missions with a clear error.
        subscriber.subscription_path(project_id, worker_subscription(dead_letter_topic)): {
            "topic": dead_path,
            "push_config": {"push_endpoint": dead_letter_endpoint},
            "ack_deadline_seconds": 60,
            "retry_policy": retry,
        },
    }
    for name, spec in subscriptions.items():
        try:
            subscriber.create_subscription(request={"name": name, **spec})
        except gexc.AlreadyExists:
            subscriber.modify_push_config(
                request={"subscription": name, "push_config": spec.get("push_config", {})}
            )
    subscriber.close()
