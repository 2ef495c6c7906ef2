"""A realtime listener on one mission document, for clients (BuddyClient.watch).

Against the emulator it reads as the emulator's admin; against a deployed project it reads
with the user's own ID token, so the security rules decide what it may see.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from google.cloud import firestore

OnChange = Callable[[Mapping[str, Any] | None], None]
_EMULATOR_VARIABLE = "FIRESTORE_EMULATOR_HOST"
_environment_lock = threading.Lock()


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
                from google.oauth2.credentials import Credentials

                # The user's own ID token, so that the security rules decide what they read.
                credentials = Credentials(self._id_token())
                self._client = firestore.Client(project=self._project_id, credentials=credentials)
        return self._client
