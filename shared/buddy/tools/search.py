"""web_search: ask a search provider (SearXNG's JSON API) and keep the best in-scope results."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from buddy.domain.intent import SEARCH
from buddy.tools.base import INTEGRAL_FLOATS, ToolContext, ToolError, ToolInputs, ToolResult
from buddy.tools.bounded_http import BoundedClient, ContentEncodingError, read_body
from buddy.tools.web import MAX_TITLE_CHARS, MAX_URL_LENGTH, USER_AGENT, clip, host_in_scope

MAX_QUERY_LENGTH = 500
# A page of results is tens of kilobytes; an answer past this is not one.
MAX_ANSWER_BYTES = 2 * 1024 * 1024
MAX_SNIPPET_CHARS = 1000
# Providers return whole pages of results; scope filtering then discards some of them.
OVERFETCH = 3

_SEARCH_VERB = re.compile(
    r"^\s*(search\s+for|search|find|look\s+up|lookup|research|discover|list)\b\s*", re.I
)


@dataclass(frozen=True)
class SearchHit:
    url: str
    title: str
    snippet: str
    score: float


class SearchProvider(Protocol):
    name: str

    def search(self, query: str, limit: int, deadline: float = math.inf) -> list[SearchHit]:
        """At most limit hits, asked for by deadline (a time.monotonic() value)."""
        ...


class SearxngProvider:
    """A SearXNG instance with the JSON output format enabled (search.formats: [json])."""

    name = "searxng"

    def __init__(self, base_url: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        # Bounds the whole search (name lookup, connect, answer), not each socket operation.
        self.timeout = timeout

    def search(self, query: str, limit: int, deadline: float = math.inf) -> list[SearchHit]:
        deadline = min(time.monotonic() + self.timeout, deadline)
        timeout = httpx.Timeout(self.timeout)
        try:
            with BoundedClient(timeout, headers={"User-Agent": USER_AGENT}) as client:
                request = client.build_request(
                    "GET", f"{self.base_url}/search", params={"q": query, "format": "json"}
                )
                response = client.send(request, deadline=deadline)
                try:
                    status = response.status_code
                    body = read_body(response, MAX_ANSWER_BYTES) if status == 200 else None
                finally:
                    response.close()
        except httpx.TimeoutException as e:
            raise ToolError("Search provider timed out", transient=True) from e
        except httpx.HTTPError as e:
            raise ToolError("Cannot connect to the search provider", transient=True) from e
        except ContentEncodingError as e:
            raise ToolError("Search provider returned an unreadable answer") from e
        if body is None:
            raise ToolError(
                f"Search provider answered HTTP {status}", transient=status >= 500 or status == 429
            )
        if body.truncated:
            raise ToolError(
                f"Search provider's answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
            )
        try:
            results = json.loads(body.data)["results"]
            hits = [hit for item in results if (hit := _hit(item)) is not None]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ToolError("Search provider returned an unreadable answer") from e
        return hits[:limit]


def _hit(item: dict[str, Any]) -> SearchHit | None:
    """One SearXNG result, its strings clipped; None for results that are not web pages."""
    url = str(item.get("url") or "")
    if len(url) > MAX_URL_LENGTH or urlsplit(url).scheme not in ("http", "https"):
        return None
    return SearchHit(
        url=url,
        title=clip(str(item.get("title") or url), MAX_TITLE_CHARS),
        snippet=clip(str(item.get("content") or ""), MAX_SNIPPET_CHARS),
        score=float(item.get("score") or 0.0),
    )


def provider_from_env(url: str | None) -> SearchProvider | None:
    """The provider configured by BUDDY_SEARCH_URL, or None when it is unset or empty."""
    return SearxngProvider(url) if url else None


class WebSearchInputs(ToolInputs):
    query: Annotated[str | None, Field(min_length=1, max_length=MAX_QUERY_LENGTH)] = None
    max_results: Annotated[int, Field(ge=1, le=20), INTEGRAL_FLOATS] = 5


def query_from_objective(objective: str) -> str:
    """'Find python tutorials' → 'python tutorials'."""
    return _SEARCH_VERB.sub("", objective, count=1).strip()[:MAX_QUERY_LENGTH].strip()


def rank(hits: list[SearchHit], allowed_domains: tuple[str, ...], limit: int) -> list[SearchHit]:
    """In-scope hits (all, when no domains are given), best score first, one per URL."""
    if allowed_domains:
        hits = [h for h in hits if host_in_scope(urlsplit(h.url).hostname or "", allowed_domains)]
    ranked: dict[str, SearchHit] = {}
    # sorted() is stable: equal scores keep the provider's order.
    for hit in sorted(hits, key=lambda h: -h.score):
        ranked.setdefault(hit.url, hit)
    return list(ranked.values())[:limit]


class WebSearchTool:
    name = "web_search"
    description = "Searches the web and lists the best results, within the allowed domains if any."
    intents = frozenset({SEARCH})
    input_model: ClassVar[type[ToolInputs]] = WebSearchInputs
    time_budget_seconds: ClassVar[float] = 30.0
    isolated: ClassVar[bool] = False

    def __init__(self, provider: SearchProvider | None, cost_per_query: float = 0.002) -> None:
        self.provider = provider
        self.cost_per_query = cost_per_query

    @property
    def unavailable_reason(self) -> str | None:
        if self.provider is not None:
            return None
        return (
            "web_search is not available: no search provider is configured (set BUDDY_SEARCH_URL)"
        )

    def estimate_cost(self, inputs: ToolInputs) -> float:
        return self.cost_per_query

    def run(self, context: ToolContext) -> ToolResult:
        inputs = WebSearchInputs.model_validate(context.inputs)
        if self.provider is None:
            raise ToolError(self.unavailable_reason or "web_search is not available")
        query = (inputs.query or "").strip() or query_from_objective(context.objective)
        if not query:
            raise ToolError("Nothing to search for: give inputs.query or say what to find")
        context.check_cancelled()
        try:
            hits = self.provider.search(
                query, inputs.max_results * OVERFETCH, deadline=context.deadline
            )
        except ToolError:
            context.check_stopped()  # a spent budget says so, rather than "timed out"
            raise
        results = rank(hits, context.allowed_domains, inputs.max_results)
        context.report(1, 1, "queries", f"{len(results)} results for '{query}'")
        data: dict[str, Any] = {
            "query": query,
            "results": [
                {"url": h.url, "title": h.title, "snippet": h.snippet, "score": h.score}
                for h in results
            ],
        }
        if not results:
            where = " within the mission's allowed domains" if context.allowed_domains else ""
            message = f"No results for '{query}'{where}"
            return ToolResult(
                title=f"Search: {query}",
                summary=message,
                content=message,
                type="search_results",
                preview=message,
                data=data,
                cost_usd=self.cost_per_query,
            )
        content = "\n".join(
            f"{i}. {h.title} — {h.url}" + (f"\n   {h.snippet}" if h.snippet else "")
            for i, h in enumerate(results, 1)
        )
        return ToolResult(
            title=f"Search: {query}",
            summary=f"{len(results)} results for '{query}'",
            content=content,
            type="search_results",
            preview="\n".join(f"{h.title} — {h.url}" for h in results[:5]),
            data=data,
            cost_usd=self.cost_per_query,
        )
