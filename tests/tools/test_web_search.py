"""web_search against a SearXNG-shaped JSON endpoint on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from buddy.tools import ToolError
from buddy.tools.search import (
    SearxngProvider,
    WebSearchInputs,
    WebSearchTool,
    provider_from_env,
)

from ..localserver import LocalServer, Reply
from .conftest import MakeContext, Progress


def hit(url: str, score: float | None = None, title: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"url": url, "title": title or url, "content": f"About {url}"}
    if score is not None:
        item["score"] = score
    return item


def searxng(server: LocalServer, *results: dict[str, Any], delay: float = 0.0) -> WebSearchTool:
    """Serves `results` at /search and returns a tool that asks that server."""
    server.json("/search", {"query": "ignored", "results": list(results)}, delay=delay)
    return WebSearchTool(SearxngProvider(server.base_url, timeout=0.5), cost_per_query=0.002)


def test_results_are_ranked_by_score(
    server: LocalServer, make_context: MakeContext, progress: Progress
) -> None:
    """Higher scores come first, ties keep the provider's order, and the query is reported."""
    tool = searxng(
        server,
        hit("https://a.example/", 0.5, "A"),
        hit("https://b.example/", 2.0, "B"),
        hit("https://c.example/", 1.0, "C"),
        hit("https://d.example/", 2.0, "D"),
        hit("https://e.example/", None, "E"),
    )

    result = tool.run(make_context(inputs={"query": "letters"}, allowed_domains=()))

    assert [r["title"] for r in result.data["results"]] == ["B", "D", "C", "A", "E"]
    assert server.requests[0].query == {"q": "letters", "format": "json"}
    assert result.type == "search_results"
    assert result.title == "Search: letters"
    assert result.summary == "5 results for 'letters'"
    assert result.content.startswith(
        "1. B — https://b.example/\n   About https://b.example/\n2. D — https://d.example/"
    )
    assert result.preview.splitlines()[0] == "B — https://b.example/"
    assert result.cost_usd == pytest.approx(0.002)
    assert progress.calls == [(1, 1, "queries", "5 results for 'letters'")]


def test_results_are_limited_to_allowed_domains(
    server: LocalServer, make_context: MakeContext
) -> None:
    """With allowed_domains, only those hosts and their subdomains are kept."""
    tool = searxng(
        server,
        hit("https://evil.example/python", 9.0),
        hit("https://docs.python.org/3/tutorial/", 3.0),
        hit("https://notpython.org/", 5.0),
        hit("https://python.org/about", 1.0),
    )

    result = tool.run(make_context(inputs={"query": "python"}, allowed_domains=("python.org",)))

    assert [r["url"] for r in result.data["results"]] == [
        "https://docs.python.org/3/tutorial/",
        "https://python.org/about",
    ]


def test_max_results_and_duplicates(server: LocalServer, make_context: MakeContext) -> None:
    """At most max_results are kept, each URL once, and non-web URLs are dropped."""
    tool = searxng(
        server,
        hit("https://same.example/", 5.0),
        hit("https://same.example/", 4.0),
        hit("magnet:?xt=urn:btih:abc", 9.0),
        *(hit(f"https://site{i}.example/", float(i)) for i in reversed(range(10))),
    )

    result = tool.run(make_context(inputs={"query": "x", "max_results": 3}, allowed_domains=()))

    assert [r["url"] for r in result.data["results"]] == [
        "https://site9.example/",
        "https://site8.example/",
        "https://site7.example/",
    ]
    result = tool.run(make_context(inputs={"query": "x", "max_results": 20}, allowed_domains=()))
    urls = [r["url"] for r in result.data["results"]]
    assert urls.count("https://same.example/") == 1
    assert len(urls) == 11


@pytest.mark.parametrize(
    ("objective", "inputs", "query"),
    [
        ("find python tutorials", {}, "python tutorials"),
        ("Search for cheap flights to Oslo", {}, "cheap flights to Oslo"),
        ("look up the weather", {}, "the weather"),
        ("research rust async runtimes", {}, "rust async runtimes"),
        ("list open source CRMs", {}, "open source CRMs"),
        ("best pizza in Naples", {}, "best pizza in Naples"),
        ("find anything", {"query": "  exact query  "}, "exact query"),
    ],
    ids=["find", "search-for", "look-up", "research", "list", "no-verb", "inputs-win"],
)
def test_query_comes_from_inputs_or_objective(
    server: LocalServer,
    make_context: MakeContext,
    objective: str,
    inputs: dict[str, Any],
    query: str,
) -> None:
    """The objective minus a leading search verb is the query, unless inputs.query is given."""
    tool = searxng(server, hit("https://a.example/", 1.0))

    result = tool.run(make_context(objective, inputs, allowed_domains=()))

    assert server.requests[0].query["q"] == query
    assert result.data["query"] == query


def test_unavailable_without_a_provider(make_context: MakeContext) -> None:
    """Without a provider the tool says why and refuses to run."""
    tool = WebSearchTool(provider_from_env(None))
    reason = "web_search is not available: no search provider is configured (set BUDDY_SEARCH_URL)"

    assert tool.unavailable_reason == reason
    with pytest.raises(ToolError) as error:
        tool.run(make_context("find python tutorials"))
    assert str(error.value) == reason


@pytest.mark.parametrize(("url", "configured"), [(None, False), ("", False), ("http://s", True)])
def test_provider_from_env(url: str | None, configured: bool) -> None:
    """A SearXNG provider exists only when BUDDY_SEARCH_URL is set."""
    provider = provider_from_env(url)
    assert isinstance(provider, SearxngProvider) is configured
    assert (WebSearchTool(provider).unavailable_reason is None) is configured


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(status=500, body="boom", content_type="text/plain"), "answered HTTP 500"),
        (Reply(body="<html>not json</html>"), "returned an unreadable answer"),
        (Reply(body='{"results": 3}', content_type="application/json"), "unreadable answer"),
        (Reply(body="{}", content_type="application/json", delay=2), "^Search provider timed out$"),
    ],
    ids=["http-500", "not-json", "results-not-a-list", "timeout"],
)
def test_provider_failures_are_tool_errors(
    server: LocalServer, make_context: MakeContext, reply: Reply, message: str
) -> None:
    """HTTP errors, unreadable answers and timeouts become clear ToolErrors."""
    server.route("/search", reply)
    tool = WebSearchTool(SearxngProvider(server.base_url, timeout=0.5))

    with pytest.raises(ToolError, match=message):
        tool.run(make_context("find anything", allowed_domains=()))


@pytest.mark.parametrize(
    ("allowed", "summary"),
    [((), "No results for 'nothing'"),
     (("python.org",), "No results for 'nothing' within the mission's allowed domains")],
    ids=["provider-empty", "all-out-of-scope"],
)  # fmt: skip
def test_zero_results_is_a_result_not_an_error(
    server: LocalServer, make_context: MakeContext, allowed: tuple[str, ...], summary: str
) -> None:
    """No results (or none in scope) is an ordinary result that says so."""
    tool = searxng(server, *([hit("https://evil.example/")] if allowed else []))

    result = tool.run(make_context(inputs={"query": "nothing"}, allowed_domains=allowed))

    assert result.summary == summary
    assert result.content == summary
    assert result.data == {"query": "nothing", "results": []}


def test_estimate_cost_is_per_query() -> None:
    """A search costs one query, whatever max_results is."""
    tool = WebSearchTool(None, cost_per_query=0.003)
    assert tool.estimate_cost(WebSearchInputs(max_results=20)) == pytest.approx(0.003)


@pytest.mark.parametrize(
    "inputs",
    [{"query": ""}, {"query": "q" * 501}, {"max_results": 0}, {"max_results": 21}, {"n": 1}],
    ids=["empty-query", "long-query", "zero-results", "too-many-results", "unknown-field"],
)
def test_input_model_rejects_bad_inputs(inputs: dict[str, Any]) -> None:
    """Queries outside 1..500 chars, max_results outside 1..20 and unknown fields are refused."""
    with pytest.raises(ValidationError):
        WebSearchInputs.model_validate(inputs)
