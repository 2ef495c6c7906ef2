"""web_search: ask a search provider (SearXNG's JSON API) and keep the best in-scope results."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from buddy.domain.intent import SEARCH
from buddy.tools.base import INTEGRAL_FLOATS, ToolContext, ToolError, ToolInputs, ToolResult
from buddy.tools.web import USER_AGENT, host_in_scope

MAX_QUERY_LENGTH = 500
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

    def search(self, query: str, limit: int) -> list[SearchHit]: ...


class SearxngProvider:
    """A SearXNG instance with the JSON output format enabled (search.formats: [json])."""

    name = "searxng"

    def __init__(
        self, base_url: str, timeout: float = 10, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport

    def search(self, query: str, limit: int) -> list[SearchHit]:
        try:
            with httpx.Client(
                timeout=self.timeout, transport=self._transport, headers={"User-Agent": USER_AGENT}
            ) as client:
                response = client.get(
                    f"{self.base_url}/search", params={"q": query, "format": "json"}
                )
        except httpx.TimeoutException as e:
            raise ToolError("Search provider timed out", transient=True) from e
        except httpx.HTTPError as e:
            raise ToolError("Cannot connect to the search provider", transient=True) from e
        if response.status_code != 200:
            status = response.status_code
            raise ToolError(
                f"Search provider answered HTTP {status}", transient=status >= 500 or status == 429
            )
        try:
            results = response.json()["results"]
            hits = [hit for item in results if (hit := _hit(item)) is not None]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ToolError("Search provider returned an unreadable answer") from e
        return hits[:limit]


def _hit(item: dict[str, Any]) -> SearchHit | None:
    """One SearXNG result, or None for results that are not web pages."""
    url = str(item.get("url") or "")
    if urlsplit(url).scheme not in ("http", "https"):
        return None
    return SearchHit(
        url=url,
        title=str(item.get("title") or url),
        snippet=str(item.get("content") or ""),
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
    input_model = WebSearchInputs

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
        hits = self.provider.search(query, inputs.max_results * OVERFETCH)
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
