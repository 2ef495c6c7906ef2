"""Firestore failing is the dependency's fault: a 503 (DependencyUnavailable), never a 500."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from buddy.adapters.firestore_base import unavailable_is_ours
from buddy.errors import DependencyUnavailable


def failing(error: Exception) -> object:
    @unavailable_is_ours
    def read() -> object:
        raise error

    return read()


@pytest.mark.parametrize(
    "error",
    [
        gexc.ServiceUnavailable("down"),
        gexc.DeadlineExceeded("slow"),
        gexc.Cancelled("call already cancelled"),  # the emulator under load
        gexc.InternalServerError("internal"),
        gexc.Unknown("unknown"),
        gexc.ResourceExhausted("quota"),
        gexc.RetryError("gave up", cause=None),
    ],
    ids=lambda e: type(e).__name__,
)
def test_firestore_failing_on_its_side_is_unavailable(error: Exception) -> None:
    with pytest.raises(DependencyUnavailable, match="Firestore is unavailable"):
        failing(error)


@pytest.mark.parametrize(
    "error", [gexc.BadRequest("too big"), gexc.NotFound("no such"), gexc.PermissionDenied("no")]
)
def test_what_firestore_refuses_is_not_called_unavailable(error: Exception) -> None:
    with pytest.raises(type(error)):
        failing(error)
