"""web_search against a SearXNG-shaped JSON endpoint on 127.0.0.1, and its artifact.

The other providers (DuckDuckGo, Brave, Tavily) are in test_search_providers.py; which one
the settings build, in test_search_config.py.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import replace
from typing import Any

import pytest
from markdown_it import MarkdownIt
from pydantic import ValidationError
from selectolax.lexbor import LexborHTMLParser

from buddy.tools import ToolError, ToolOverBudget
from buddy.tools.search import (
    SearchHit,
    SearxngProvider,
    UnconfiguredProvider,
    WebSearchInputs,
    WebSearchTool,
    markdown_list,
)

from ..localserver import LocalServer, Reply
from ..rawserver import Handler, RawServer, Trickle, answer, gzip_bomb, head
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
    assert result.preview.splitlines()[0] == "B — https://b.example/"
    assert result.cost_usd == pytest.approx(0.002)
    assert progress.calls == [(1, 1, "queries", "5 results for 'letters'")]


def test_artifact_is_a_numbered_markdown_list_with_the_results_data(
    server: LocalServer, make_context: MakeContext
) -> None:
    """Content is `1. [Title](url)` with the snippet indented under it; data names the query,
    the provider, and each result with the rank the provider gave it."""
    tool = searxng(
        server, hit("https://a.example/", 0.5, "A"), hit("https://b.example/x", 2.0, "B")
    )

    result = tool.run(make_context(inputs={"query": "letters"}, allowed_domains=()))

    assert result.format == "markdown"
    assert result.content == (
        "1. [B](https://b.example/x)\n"
        "   About https://b.example/x\n"
        "2. [A](https://a.example/)\n"
        "   About https://a.example/"
    )
    assert result.data == {
        "query": "letters",
        "provider": "searxng",
        "results": [
            {
                "rank": 2,
                "url": "https://b.example/x",
                "title": "B",
                "snippet": "About https://b.example/x",
                "score": 2.0,
            },
            {
                "rank": 1,
                "url": "https://a.example/",
                "title": "A",
                "snippet": "About https://a.example/",
                "score": 0.5,
            },
        ],
    }
    html = MarkdownIt("commonmark").render(result.content)
    assert [a.attributes["href"] for a in LexborHTMLParser(html).css("ol > li > a")] == [
        "https://b.example/x",
        "https://a.example/",
    ]


HOSTILE = [
    "](javascript:alert(1)) [click](https://evil.example/)",
    "![tracker](https://evil.example/pixel.png)",
    "<img src=x onerror=alert(1)> <script>alert(1)</script> <https://evil.example/>",
    "# Heading **bold** _em_ `code` ~~gone~~ &lt;b&gt; \\[x\\]",
]


@pytest.mark.parametrize("text", HOSTILE, ids=["link", "image", "html", "markup"])
def test_hostile_titles_and_snippets_stay_text(text: str) -> None:
    """A title or snippet that is Markdown or HTML is shown as the text it is: each result is
    exactly one link, to its own URL, with no image, no HTML, and the text intact."""
    hits = [
        SearchHit("https://a.example/(x)", text, text, 0.0, 1),
        SearchHit("https://b.example/", text, "plain", 0.0, 2),
    ]

    html = MarkdownIt("commonmark").enable("strikethrough").render(markdown_list(hits))

    page = LexborHTMLParser(html)
    items = page.css("ol > li")
    assert len(items) == 2
    assert [a.attributes["href"] for a in page.css("a")] == [
        "https://a.example/%28x%29",
        "https://b.example/",
    ]
    assert not page.css("img, script, h1, em, strong, code, s, del, ul, blockquote, hr")
    first = items[0].text(deep=True, separator="")
    assert first.count(text) == 2  # the title and the snippet, each as written


@pytest.mark.parametrize(
    "snippet",
    ["- item", "+ item", "* item", "1. item", "7) item", "> quote", "# heading", "=====",
     "---", "___", "    indented code"],
)  # fmt: skip
def test_a_snippet_cannot_start_a_block(snippet: str) -> None:
    """A snippet that starts like a list, a quote, a heading, a rule or a setext underline
    stays a line of text under its link."""
    html = MarkdownIt("commonmark").render(
        markdown_list([SearchHit("https://a.example/", "Title", snippet, 0.0, 1)])
    )

    page = LexborHTMLParser(html)
    assert not page.css("ul, li ol, blockquote, h1, h2, hr, pre, em")
    [item] = page.css("ol > li")
    assert [a.attributes["href"] for a in item.css("a")] == ["https://a.example/"]
    assert item.text(deep=True, separator="") == f"Title\n{snippet.strip()}"


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
    tool = WebSearchTool(None)
    reason = "web_search is not available: no search provider is configured"

    assert tool.unavailable_reason == reason
    with pytest.raises(ToolError) as error:
        tool.run(make_context("find python tutorials"))
    assert str(error.value) == reason


def test_unavailable_with_a_provider_that_cannot_work(make_context: MakeContext) -> None:
    """A provider configured wrongly makes the tool unavailable with what to configure."""
    tool = WebSearchTool(UnconfiguredProvider("brave", "set BUDDY_SEARCH_API_KEY"))

    assert tool.unavailable_reason == "web_search is not available: set BUDDY_SEARCH_API_KEY"
    with pytest.raises(ToolError, match=r"set BUDDY_SEARCH_API_KEY$"):
        tool.run(make_context("find python tutorials"))


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(status=500, body="boom", content_type="text/plain"), "answered HTTP 500"),
        (Reply(body="<html>not json</html>"), "returned an unreadable answer"),
        (Reply(body='{"results": 3}', content_type="application/json"), "unreadable answer"),
        (
            Reply(body="{}", content_type="application/json", delay=2),
            "^The search provider SearXNG timed out$",
        ),
        (
            Reply(status=403, body="Forbidden", content_type="text/plain"),
            "refused the JSON format \\(HTTP 403\\): add json to search.formats",
        ),
    ],
    ids=["http-500", "not-json", "results-not-a-list", "timeout", "json-not-enabled"],
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
    assert result.format == "markdown"
    assert result.data == {"query": "nothing", "provider": "searxng", "results": []}


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


def test_proxy_settings_in_the_environment_are_ignored(
    server: LocalServer, make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxy variables pointing at a dead port change nothing: the environment is not read."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
        monkeypatch.setenv(name.lower(), "http://127.0.0.1:9")
    tool = searxng(server, hit("https://a.example/", 1.0))

    result = tool.run(make_context(inputs={"query": "direct"}, allowed_domains=()))

    assert [r["url"] for r in result.data["results"]] == ["https://a.example/"]


def test_provider_host_name_is_resolved(server: LocalServer) -> None:
    """A provider named by host name (not an address) is looked up and reached."""
    server.json("/search", {"results": [hit("https://a.example/", 1.0)]})

    hits = SearxngProvider(f"http://localhost:{server.port}").search("q", 5)

    assert [h.url for h in hits] == ["https://a.example/"]


def test_compressed_answer_is_read(server: LocalServer) -> None:
    """A gzip-encoded JSON answer is decoded."""
    body = gzip.compress(json.dumps({"results": [hit("https://a.example/", 1.0)]}).encode())
    server.route(
        "/search",
        Reply(body=body, content_type="application/json", headers={"Content-Encoding": "gzip"}),
    )

    hits = SearxngProvider(server.base_url).search("q", 5)

    assert [h.url for h in hits] == ["https://a.example/"]
    assert server.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


JSON_HEAD = head(200, content_type="application/json", content_length=100)


@pytest.mark.parametrize(
    "handler",
    [answer(Trickle(JSON_HEAD, 0.3)), answer(JSON_HEAD, Trickle(b" " * 100, 0.3))],
    ids=["trickled-headers", "trickled-body"],
)
def test_trickling_provider_times_out_within_its_timeout(handler: Handler) -> None:
    """A provider sending a byte at a time is cut off at the provider's timeout, as a whole."""
    with RawServer(handler) as raw:
        provider = SearxngProvider(f"http://127.0.0.1:{raw.port}", timeout=1)
        started = time.monotonic()
        with pytest.raises(ToolError) as error:
            provider.search("q", 5)

    assert str(error.value) == "The search provider SearXNG timed out"
    assert error.value.transient is True
    assert time.monotonic() - started < 4


def test_tool_budget_running_out_is_over_budget(make_context: MakeContext) -> None:
    """When the tool's deadline passes mid-search, the tool stops with ToolOverBudget."""
    with RawServer(answer(Trickle(JSON_HEAD, 0.3))) as raw:
        tool = WebSearchTool(SearxngProvider(f"http://127.0.0.1:{raw.port}", timeout=30))
        context = make_context("find anything", allowed_domains=())
        started = time.monotonic()
        with pytest.raises(ToolOverBudget):
            tool.run(replace(context, deadline=time.monotonic() + 1))

    assert time.monotonic() - started < 4


@pytest.mark.usefixtures("hanging_resolver")
def test_provider_name_lookup_is_bounded() -> None:
    """A lookup of the provider's name that never answers ends with the provider's timeout,
    as a failure to reach it that may go away."""
    started = time.monotonic()
    with pytest.raises(ToolError) as error:
        SearxngProvider("http://searxng.example", timeout=1).search("q", 5)

    assert str(error.value) == (
        "Cannot reach the search provider SearXNG (searxng.example): connecting timed out. "
        "Check BUDDY_SEARCH_URL"
    )
    assert error.value.transient is True
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("compressed", [False, True], ids=["three-megabytes", "gzip-bomb"])
def test_oversized_answer_is_refused(server: LocalServer, compressed: bool) -> None:
    """An answer over 2 MiB, as sent or once decoded, is refused without being read whole."""
    if compressed:
        headers = {"Content-Encoding": "gzip, gzip"}
        server.route(
            "/search", Reply(body=gzip_bomb(2), content_type="application/json", headers=headers)
        )
    else:
        server.json("/search", {"results": [], "padding": "x" * 3_000_000})

    with pytest.raises(ToolError) as error:
        SearxngProvider(server.base_url).search("q", 5)

    assert str(error.value) == (
        "The search provider SearXNG answered with more than 2 MiB, which is not a page of results"
    )
    assert error.value.transient is False


def test_unsupported_encoding_is_an_unreadable_answer(server: LocalServer) -> None:
    """An answer in an encoding we cannot decode is reported as unreadable."""
    server.route(
        "/search",
        Reply(
            body=b"\x8b\x01", content_type="application/json", headers={"Content-Encoding": "br"}
        ),
    )

    with pytest.raises(ToolError, match="returned an unreadable answer"):
        SearxngProvider(server.base_url).search("q", 5)


def test_hostile_result_strings_are_clipped(server: LocalServer, make_context: MakeContext) -> None:
    """Huge titles and snippets are clipped, invisible and control characters dropped;
    results with overlong URLs are dropped, and the ranks count only the results kept."""
    tool = searxng(
        server,
        {"url": "https://a.example/", "title": "T" * 100_000, "content": "s" * 100_000},
        hit("https://b.example/" + "x" * 3000, 9.0),
        {"url": "https://c.example/", "title": "\u202eexe.tsil\x00\x1b[31m", "content": "a\n\tb"},
    )

    result = tool.run(make_context(inputs={"query": "big"}, allowed_domains=()))

    big, controls = result.data["results"]
    assert big["url"] == "https://a.example/"
    assert len(big["title"]) == 300
    assert len(big["snippet"]) == 1000
    assert (big["rank"], controls["rank"]) == (1, 2)
    # Direction overrides and control characters go; whitespace becomes single spaces.
    assert (controls["title"], controls["snippet"]) == ("exe.tsil [31m", "a b")
