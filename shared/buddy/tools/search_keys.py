"""A search provider's API key: given in the environment, or read once from Secret Manager.

In production the key lives in Secret Manager and the function names its version
(BUDDY_SEARCH_API_KEY_SECRET); the first search reads it through Secret Manager's REST API
with the function's own credentials (Application Default Credentials), and keeps it for the
life of the instance. google-auth is imported then, not at start-up (cold start is a product
metric), and no Secret Manager SDK is needed for one GET.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from buddy.tools.base import ToolError
from buddy.tools.search_http import Service, exchange

SECRET_MANAGER_URL = "https://secretmanager.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# projects/P/secrets/S/versions/V; without /versions/V it means the latest version.
SECRET_NAME = re.compile(r"projects/[^/\s]+/secrets/[^/\s]+(/versions/[^/\s]+)?")
# Getting a token is one call to the metadata server (or a token endpoint).
TOKEN_TIMEOUT = 5.0
ACCESS_TIMEOUT = 5.0

TokenSource = Callable[[], str]


class ApiKey(Protocol):
    def get(self, deadline: float) -> str:
        """The key, read by deadline (a time.monotonic() value) if it must be read."""
        ...


@dataclass(frozen=True)
class StaticKey:
    """A key given in the environment (BUDDY_SEARCH_API_KEY, BRAVE_API_KEY, ...)."""

    value: str = field(repr=False)

    def get(self, deadline: float) -> str:
        return self.value


def secret_version(name: str) -> str | None:
    """The full version name (".../versions/latest" added when none is given), or None when
    name is not a secret's name."""
    name = name.strip()
    if not SECRET_NAME.fullmatch(name):
        return None
    return name if "/versions/" in name else f"{name}/versions/latest"


class SecretManagerKey:
    """A key read from a Secret Manager version on first use, then kept.

    A failed read is not kept: the next search tries again (a permission granted meanwhile,
    a transient outage over).
    """

    def __init__(
        self,
        version: str,
        *,
        base_url: str = SECRET_MANAGER_URL,
        token: TokenSource | None = None,
    ) -> None:
        self.version = version
        self.base_url = base_url.rstrip("/")
        self._token = token or google_access_token
        self._value: str | None = None
        self._lock = threading.Lock()
        self._service = Service.at("Secret Manager", self.base_url, role="")

    def __repr__(self) -> str:
        return f"SecretManagerKey({self.version!r})"

    def get(self, deadline: float) -> str:
        with self._lock:  # one read, however many searches start at once
            if self._value is None:
                self._value = self._read(deadline)
            return self._value

    def _read(self, deadline: float) -> str:
        answer = exchange(
            self._service,
            "GET",
            f"{self.base_url}/v1/{self.version}:access",
            deadline=deadline,
            timeout=ACCESS_TIMEOUT,
            headers={"Authorization": f"Bearer {self._token()}", "Accept": "application/json"},
        )
        if answer.status != 200:
            raise self._refusal(answer.status)
        try:
            payload: Any = json.loads(answer.body)["payload"]["data"]
            key = base64.b64decode(payload, validate=True).decode().strip()
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise ToolError(
                f"Secret Manager returned an unreadable answer for the secret {self.version}"
            ) from e
        if not key:
            raise ToolError(f"The secret {self.version} (the search API key) is empty")
        return key

    def _refusal(self, status: int) -> ToolError:
        if status == 403:
            return ToolError(
                f"Secret Manager refused to give the secret {self.version} (HTTP 403): the "
                "function's service account needs roles/secretmanager.secretAccessor on it"
            )
        if status == 404:
            return ToolError(
                f"Secret Manager has no secret version {self.version} (HTTP 404): check "
                "BUDDY_SEARCH_API_KEY_SECRET"
            )
        if status == 401:
            return ToolError("Secret Manager refused this instance's credentials (HTTP 401)")
        return ToolError(
            f"Secret Manager answered HTTP {status} for the secret {self.version}",
            transient=status == 429 or status >= 500,
        )


class _TimedRequest:
    """google-auth's requests transport with a timeout on every call (its default is 120 s)."""

    def __init__(self, request: Callable[..., Any], timeout: float) -> None:
        self._request = request
        self._timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        return self._request(*args, **kwargs)


def google_access_token() -> str:
    """An OAuth access token from Application Default Credentials: the function's service
    account on Google Cloud, GOOGLE_APPLICATION_CREDENTIALS elsewhere."""
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        if not credentials.valid:
            transport = google.auth.transport.requests.Request()
            refresh: Callable[[Any], None] = credentials.refresh  # google-auth is untyped here
            refresh(_TimedRequest(transport, TOKEN_TIMEOUT))
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise ToolError(
            "Cannot read the search API key from Secret Manager: no Google credentials here "
            "(on Google Cloud the function's service account is used; elsewhere set "
            "GOOGLE_APPLICATION_CREDENTIALS, or give the key in BUDDY_SEARCH_API_KEY)"
        ) from e
    except google.auth.exceptions.GoogleAuthError as e:
        retryable = isinstance(e, google.auth.exceptions.TransportError) or bool(
            getattr(e, "retryable", False)
        )
        raise ToolError(
            f"Cannot get Google credentials to read the search API key: {str(e)[:200]}",
            transient=retryable,
        ) from e
    return str(credentials.token)
