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


def unavailable_is_ours(method: Callable[P, R]) -> Callable[P, R]:
    """Firestore being down or slow becomes DependencyUnavailable (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as e:
            raise DependencyUnavailable("Firestore is unavailable") from e

    return wrapper
