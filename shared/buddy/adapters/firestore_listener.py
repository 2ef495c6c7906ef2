"""A realtime listener on one mission document, for clients (BuddyClient.watch).

Against the emulator it reads as the emulator's admin; against a deployed project it reads
with the user's own ID token, so the security rules decide what it may see.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.credentials
from google.auth import _helpers
from google.cloud import firestore

OnChange = Callable[[Mapping[str, Any] | None], None]
_EMULATOR_VARIABLE = "FIRESTORE_EMULATOR_HOST"
_environment_lock = threading.Lock()
# How often a listener with a user's ID token asks for it again.
ASK_AGAIN = timedelta(minutes=1)


@contextlib.contextmanager
def _emulator(host: str | None) -> Iterator[None]:
    """The Firestore client finds its emulator only through the environment, and only while
    it is being made: set it for that moment, then put back what was there."""
    if host is None:
        yield
        return
    with _environment_lock:
        before = os.environ.get(_EMULATOR_VARIABLE)
        os.environ[_EMULATOR_VARIABLE] = host
        try:
            yield
        finally:
            if before is None:
                del os.environ[_EMULATOR_VARIABLE]
            else:
                os.environ[_EMULATOR_VARIABLE] = before


class FirestoreMissionListener:
    def __init__(
        self,
        project_id: str,
        emulator: str | None = None,
        id_token: Callable[[], str] | None = None,
    ) -> None:
        self._project_id = project_id
        self._emulator_host = emulator
        self._id_token = id_token
        self._client: firestore.Client | None = None

    def listen(self, mission_id: str, on_change: OnChange) -> Any:
        """Calls on_change with the mission document (None once it is gone) on every change,
        from the listener's own thread; returns the watch (`unsubscribe()`, `is_active`)."""

        def on_snapshot(docs: list[Any], _changes: Any, _read_time: Any) -> None:
            on_change(docs[0].to_dict() if docs and docs[0].exists else None)

        return (
            self._firestore().collection("missions").document(mission_id).on_snapshot(on_snapshot)
        )

    def _firestore(self) -> firestore.Client:
        if self._client is None:
            if self._emulator_host is not None or self._id_token is None:
                with _emulator(self._emulator_host):
                    self._client = firestore.Client(project=self._project_id)
            else:
                # The user's own ID token, so that the security rules decide what they read.
                credentials = _IdToken(self._id_token)
                self._client = firestore.Client(project=self._project_id, credentials=credentials)
        return self._client


class _IdToken(google.auth.credentials.Credentials):
    """The user's ID token as Firestore's credentials, asked for again every few minutes: the
    token source (BuddyClient's) refreshes it before it ends, so a watch longer than the
    token's hour reconnects with the next one (the watch retries an UNAUTHENTICATED stream)."""

    def __init__(self, id_token: Callable[[], str]) -> None:
        super().__init__()
        self._id_token = id_token

    def refresh(self, request: Any) -> None:
        self.token = self._id_token()
        # google-auth compares naive UTC times, and refreshes REFRESH_THRESHOLD (3m45s) early.
        now = datetime.now(UTC).replace(tzinfo=None)
        self.expiry = now + _helpers.REFRESH_THRESHOLD + ASK_AGAIN
