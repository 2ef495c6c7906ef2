"""What every Firestore adapter shares: its time limits, and Firestore being down or slow
answered as DependencyUnavailable (HTTP 503)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from google.api_core import exceptions as gexc

from buddy.errors import DependencyUnavailable

P = ParamSpec("P")
R = TypeVar("R")
TIMEOUT_SECONDS = 10.0
APPLY_ATTEMPTS = 12
LOST_ANSWERS = 2  # commits per write whose answer may be lost before Firestore counts as down

# A commit that raised one of these may have landed all the same: its answer was lost.
LOST_ANSWER_ERRORS = (gexc.DeadlineExceeded, gexc.ServiceUnavailable)


class LostAnswers:
    """Counts one write's commits that answered a lost-answer error: the caller reads the
    document again and looks for its own write there, a few times, then gives up (503)."""

    def __init__(self) -> None:
        self.left = LOST_ANSWERS

    def lost(self, error: Exception) -> None:
        """One more lost answer; DependencyUnavailable once there were too many."""
        if not self.left:
            raise DependencyUnavailable("Firestore is unavailable") from error
        self.left -= 1


def unavailable_is_ours(method: Callable[P, R]) -> Callable[P, R]:
    """Firestore being down or slow becomes DependencyUnavailable (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as e:
            raise DependencyUnavailable("Firestore is unavailable") from e

    return wrapper
