"""web_search: ask the configured search provider and keep the best in-scope results.

The providers (DuckDuckGo by default, SearXNG, Brave, Tavily) live in search_providers; this
module is what the tools share on top of them: the query from an objective, ranking within
the mission's scope, and the search_results artifact (a numbered Markdown list).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import Field

from buddy.domain.intent import RESEARCH, SEARCH
from buddy.tools.base import INTEGRAL_FLOATS, ToolContext, ToolError, ToolInputs, ToolResult
from buddy.tools.markdown import markdown_link, markdown_text
from buddy.tools.search_providers import (
    DEFAULT_PROVIDER,
    NO_PROVIDER,
    PROVIDERS,
    BraveProvider,
    DuckDuckGoProvider,
    SearchHit,
    SearchProvider,
    SearchSettings,
    SearxngProvider,
    TavilyProvider,
    UnconfiguredProvider,
    provider_from_settings,
)
from buddy.tools.web import host_in_scope, host_of

MAX_QUERY_LENGTH = 500
# Providers return whole pages of results; scope filtering then discards some of them.
OVERFETCH = 3

_SEARCH_VERB = re.compile(
    r"^\s*(search\s+for|search|find|look\s+up|lookup|research|discover|list)\b\s*", re.I
)

__all__ = [
    "DEFAULT_PROVIDER",
    "NO_PROVIDER",
    "PROVIDERS",
    "BraveProvider",
    "DuckDuckGoProvider",
    "SearchHit",
    "SearchProvider",
    "SearchSettings",
    "SearxngProvider",
    "TavilyProvider",
    "UnconfiguredProvider",
    "WebSearchInputs",
    "WebSearchTool",
    "markdown_list",
    "provider_from_settings",
    "query_from_objective",
    "rank",
]


class WebSearchInputs(ToolInputs):
    query: Annotated[str | None, Field(min_length=1, max_length=MAX_QUERY_LENGTH)] = None
    max_results: Annotated[int, Field(ge=1, le=20), INTEGRAL_FLOATS] = 5


def query_from_objective(objective: str) -> str:
    """'Find python tutorials' → 'python tutorials'."""
    return _SEARCH_VERB.sub("", objective, count=1).strip()[:MAX_QUERY_LENGTH].strip()


def rank(hits: list[SearchHit], allowed_domains: tuple[str, ...], limit: int) -> list[SearchHit]:
    """In-scope hits (all, when no domains are given), best score first, one per URL.

    Each hit keeps the rank its provider gave it.
    """
    if allowed_domains:
        hits = [h for h in hits if host_in_scope(host_of(h.url), allowed_domains)]
    ranked: dict[str, SearchHit] = {}
    # sorted() is stable: equal scores keep the provider's order.
    for hit in sorted(hits, key=lambda h: -h.score):
        ranked.setdefault(hit.url, hit)
    return list(ranked.values())[:limit]


def markdown_list(hits: list[SearchHit]) -> str:
    """1. [Title](url) with each snippet indented under its link."""
    return "\n".join(
        f"{i}. {markdown_link(h.title, h.url)}"
        + (f"\n   {markdown_text(h.snippet)}" if h.snippet.strip() else "")
        for i, h in enumerate(hits, 1)
    )


class WebSearchTool:
    name = "web_search"
    description = "Searches the web and lists the best results, within the allowed domains if any."
    # A research objective too, when its owner picks this tool: the results, not a report.
    intents = frozenset({SEARCH, RESEARCH})
    input_model: ClassVar[type[ToolInputs]] = WebSearchInputs
    time_budget_seconds: ClassVar[float] = 30.0
    isolated: ClassVar[bool] = False

    def __init__(self, provider: SearchProvider | None, cost_per_query: float = 0.002) -> None:
        self.provider: SearchProvider = provider or NO_PROVIDER
        self.cost_per_query = cost_per_query

    @property
    def unavailable_reason(self) -> str | None:
        reason = self.provider.unavailable_reason
        return f"{self.name} is not available: {reason}" if reason else None

    def estimate_cost(self, inputs: ToolInputs) -> float:
        return self.cost_per_query

    def run(self, context: ToolContext) -> ToolResult:
        inputs = WebSearchInputs.model_validate(context.inputs)
        if (reason := self.unavailable_reason) is not None:
            raise ToolError(reason)
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
            "provider": self.provider.name,
            "results": [
                {
                    "rank": h.rank,
                    "url": h.url,
                    "title": h.title,
                    "snippet": h.snippet,
                    "score": h.score,
                }
                for h in results
            ],
        }
        title = f"Search: {query}"
        if not results:
            where = " within the mission's allowed domains" if context.allowed_domains else ""
            message = f"No results for '{query}'{where}"
            return ToolResult(
                title=title,
                summary=message,
                content=markdown_text(message),
                type="search_results",
                preview=message,
                format="markdown",
                data=data,
                cost_usd=self.cost_per_query,
            )
        return ToolResult(
            title=title,
            summary=f"{len(results)} results for '{query}'",
            content=markdown_list(results),
            type="search_results",
            preview="\n".join(f"{h.title} — {h.url}" for h in results[:5]),
            format="markdown",
            data=data,
            cost_usd=self.cost_per_query,
        )
