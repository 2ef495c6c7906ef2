"""One bounded HTTP exchange with a search service, its failures put in words for the owner.

Every search (and the Secret Manager read behind an API key) is one request under one
deadline (bounded_http), so an offline machine or a provider that never answers ends the step
in seconds, and each kind of failure says what to do: a name that does not resolve is not
worth retrying (this machine is offline or the provider is blocked), a timeout or a 5xx is.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from buddy.tools.base import ToolError
from buddy.tools.bounded_http import BoundedClient, ContentEncodingError, read_body

# A page of results is tens of kilobytes; an answer past this is not one.
MAX_ANSWER_BYTES = 2 * 1024 * 1024
# Connecting is quick or not happening: a firewall that drops packets shows within seconds.
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True)
class Service:
    """Who is asked, for messages: "the search provider DuckDuckGo", its host, and what to
    do when it cannot be reached."""

    label: str
    host: str
    hint: str = ""
    role: str = "the search provider"

    @classmethod
    def at(cls, label: str, url: str, hint: str = "", role: str = "the search provider") -> Service:
        return cls(label, urlsplit(url).hostname or url, hint, role)

    @property
    def named(self) -> str:
        """The service as the object of a sentence: the search provider DuckDuckGo."""
        return f"{self.role} {self.label}" if self.role else self.label

    @property
    def subject(self) -> str:
        """The service to start a sentence: The search provider DuckDuckGo."""
        return self.named[:1].upper() + self.named[1:]

    def unreachable(self, why: str, *, transient: bool) -> ToolError:
        hint = f". {self.hint}" if self.hint else ""
        return ToolError(
            f"Cannot reach {self.named} ({self.host}): {why}{hint}", transient=transient
        )

    def error(self, what: str, *, transient: bool = False) -> ToolError:
        """An error that starts with the service's name and says what it did."""
        return ToolError(f"{self.subject} {what}", transient=transient)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def exchange(
    service: Service,
    method: str,
    url: str,
    *,
    deadline: float,
    timeout: float,
    headers: dict[str, str],
    **request: Any,
) -> Answer:
    """The service's answer (any status), its body read within MAX_ANSWER_BYTES, by deadline.

    request holds httpx's params, data or json. Raises ToolError when there is no answer, or
    it cannot be read, or it is too large.
    """
    bounds = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
    try:
        with BoundedClient(bounds, headers=headers) as client:
            response = client.send(client.build_request(method, url, **request), deadline=deadline)
            try:
                body = read_body(response, MAX_ANSWER_BYTES)
            finally:
                response.close()
    except httpx.ConnectTimeout as e:
        raise service.unreachable("connecting timed out", transient=True) from e
    except httpx.ConnectError as e:
        if _name_not_found(e):
            blocked = "the provider" if service.role else "the service"
            raise service.unreachable(
                f"this machine looks offline, or {blocked} is blocked", transient=False
            ) from e
        raise service.unreachable(_reason(e), transient=True) from e
    except httpx.TimeoutException as e:
        raise service.error("timed out", transient=True) from e
    except httpx.HTTPError as e:
        raise service.error("broke off its answer", transient=True) from e
    except ContentEncodingError as e:
        raise service.error("returned an unreadable answer") from e
    if body.truncated:
        raise service.error(
            f"answered with more than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB, which is not a "
            "page of results"
        )
    return Answer(response.status_code, body.data)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _name_not_found(error: BaseException) -> bool:
    """True when the host name did not resolve (offline, no DNS, or a name that does not exist).

    A lookup that hangs is a ConnectTimeout instead, and a refused connection an OSError
    that is not a gaierror.
    """
    return any(isinstance(cause, socket.gaierror) for cause in _causes(error))


def _reason(error: BaseException) -> str:
    """The innermost system error in words (connection refused, say)."""
    for cause in reversed(_causes(error)):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
    return "the connection failed"
