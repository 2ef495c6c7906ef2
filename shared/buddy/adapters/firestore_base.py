"""What every Firestore adapter shares: its time limits, and Firestore being down or slow
answered as DependencyUnavailable (HTTP 503)."""

from __future__ import annotations

import collections
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from google.api_core import exceptions as gexc

from buddy.errors import DependencyUnavailable

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
TIMEOUT_SECONDS = 10.0
APPLY_ATTEMPTS = 12
LOST_ANSWERS = 1  # commits per write whose answer may be lost before Firestore counts as down
BUSY_SECONDS = 15.0  # how long one write keeps trying on a contended document before a 503

# Firestore failing on its side (unavailable, timed out, an internal error), cutting a
# call short (the emulator under load answers "call already cancelled") or over its
# quota: never the request's fault, so a 503. A commit that raised one of these may have
# landed all the same: its answer was lost.
LOST_ANSWER_ERRORS = (gexc.ServerError, gexc.Cancelled, gexc.TooManyRequests)


class LostAnswers:
    """What one write's commits answered. Those whose answer was lost: the caller reads the
    document again and looks for its own write there, LOST_ANSWERS times, then gives up
    (503). Those refused (someone else wrote first, a lock timed out): counted, so that the
    log says why a write that gave up on a busy document did."""

    def __init__(self) -> None:
        self.left = LOST_ANSWERS
        self.started = time.monotonic()
        self.refusals: collections.Counter[str] = collections.Counter()

    def lost(self, error: Exception) -> None:
        """One more lost answer; DependencyUnavailable once there were too many."""
        if not self.left:
            raise DependencyUnavailable("Firestore is unavailable") from error
        self.left -= 1

    def refused(self, error: gexc.GoogleAPICallError) -> None:
        self.refusals[f"{type(error).__name__}: {error.message}"[:120]] += 1

    def too_busy(self, message: str) -> DependencyUnavailable:
        """The 503 for a write that gave up, logged with what its commits were told."""
        seconds = round(time.monotonic() - self.started, 1)
        log.warning(
            "gave up on a busy document",
            extra={"reason": message, "seconds": seconds, "refusals": dict(self.refusals)},
        )
        return DependencyUnavailable(message)


def unavailable_is_ours(method: Callable[P, R]) -> Callable[P, R]:
    """Firestore being down or slow becomes DependencyUnavailable (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (*LOST_ANSWER_ERRORS, gexc.RetryError) as e:
            raise DependencyUnavailable("Firestore is unavailable") from e

    return wrapper


def wait_a_little(attempt: int, started: float) -> bool:
    """Sleeps before the next try of a write that lost a race on a shared document (with
    exponential backoff and jitter, so that racers spread out); False once the write has
    been at it for BUSY_SECONDS, when an answer (503, try again) beats a longer wait."""
    if time.monotonic() - started > BUSY_SECONDS:
        return False
    time.sleep(random.uniform(0.5, 1.0) * min(0.5, 0.01 * 2**attempt))
    return True
