"""The research tool on pages served from 127.0.0.1, with a search provider that answers
from a list (the providers themselves are tested against servers shaped like their APIs)."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import pytest
from markdown_it import MarkdownIt

from buddy.tools import ToolContext, ToolError, ToolPaused
from buddy.tools.research import ResearchTool, research_query
from buddy.tools.search import SearchHit
from buddy.tools.web import WebPolicy

from ..localserver import LocalServer, Reply
from .conftest import MakeContext, Progress

LOOPBACK = WebPolicy(allow_loopback=True)


def article(title: str, body: str) -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n"))
    return (
        f'<html lang="en"><head><title>{title}</title>'
        f'<meta property="og:site_name" content="Site {title}"></head><body>'
        f"<nav><a href='/'>Home</a> <a href='/about'>About us</a></nav>"
        f"<article><h1>{title}</h1>{paragraphs}</article>"
        f"<footer>Copyright footer</footer></body></html>"
    )


LISTENERS = (
    "A Firestore listener receives an initial snapshot and then every change to the query.\n"
    "Each client can hold up to one hundred listeners on a single database before it slows.\n"
    "Listeners are billed per document read, including the documents of the initial snapshot."
)
LIMITS = (
    "Firestore limits writes to a single document to about one per second sustained.\n"
    "A realtime listener limit of one million concurrent connections applies per database.\n"
    "Exceeding these limits makes writes contend and listeners fall behind their queries."
)


class ListProvider:
    """A search provider that answers with the hits it was given, and counts its calls."""

    name = "list"
    unavailable_reason = None

    def __init__(self, hits: list[SearchHit]) -> None:
        self.hits = hits
        self.queries: list[str] = []

    def search(self, query: str, limit: int, deadline: float = math.inf) -> list[SearchHit]:
        self.queries.append(query)
        return self.hits[:limit]


def hit(url: str, title: str, rank: int, snippet: str = "") -> SearchHit:
    return SearchHit(url=url, title=title, snippet=snippet or f"about {title}", score=0, rank=rank)


@pytest.fixture
def sites(server: LocalServer) -> dict[str, str]:
    """Three pages on 127.0.0.1 and one on 'localhost' (the same server, another host)."""
    server.page("/listeners", article("Listeners", LISTENERS))
    server.page("/limits", article("Limits", LIMITS))
    server.page("/third", article("Third", "A third page, somewhat about other things entirely."))
    server.route("/gone", Reply(status=404, body="not here"))
    return {
        "listeners": server.url("/listeners"),
        "limits": server.url("/limits"),
        "third": server.url("/third"),
        "gone": server.url("/gone"),
        "elsewhere": f"http://localhost:{server.port}/limits",
    }


def saving(context: ToolContext) -> tuple[ToolContext, list[Any]]:
    saved: list[Any] = []
    return replace(context, save=saved.append), saved


def test_reads_the_top_sources_in_scope_and_writes_a_cited_report(
    server: LocalServer, sites: dict[str, str], make_context: MakeContext, progress: Progress
) -> None:
    """Search, then read the best max_sources results inside the allowed domains; the report
    has a summary citing them, a section per source with its extracted text, and references;
    a result on another host is listed with its snippet and never fetched."""
    provider = ListProvider(
        [
            hit(sites["elsewhere"], "Elsewhere", 1, "a snippet from elsewhere"),
            hit(sites["listeners"], "Listeners result", 2),
            hit(sites["limits"], "Limits result", 3),
            hit(sites["third"], "Third result", 4),
        ]
    )
    context = make_context(
        objective="research the Firestore realtime listener limits", inputs={"max_sources": 2}
    )

    result = ResearchTool(provider, LOOPBACK).run(context)

    assert provider.queries == ["the Firestore realtime listener limits"]
    assert result.type == "research_report" and result.format == "markdown"
    assert server.paths.count("/listeners") == 1 and server.paths.count("/limits") == 1
    assert "/third" not in server.paths  # the top 2 in scope only
    sections = re.findall(r"^## (.+)$", result.content, re.M)
    assert sections == ["Summary", "Sources", "Other results", "References"]
    assert "### [1] Listeners" in result.content and "### [2] Limits" in result.content
    assert "billed per document read" in result.content  # the source's own text
    assert "Copyright footer" not in result.content  # boilerplate is not
    summary = result.data["summary"]
    assert f"[[1]]({sites['listeners']})" in summary and f"[[2]]({sites['limits']})" in summary
    # The summary picks the sentences sharing most words with the question.
    assert "realtime listener limit of one million" in summary
    assert f"1. [Listeners]({sites['listeners']})" in result.content
    assert "a snippet from elsewhere" in result.content
    [other] = result.data["out_of_scope"]
    assert other == {
        "rank": 1,
        "url": sites["elsewhere"],
        "title": "Elsewhere",
        "snippet": "a snippet from elsewhere",
        "host": "localhost",
    }
    sources = result.data["sources"]
    assert [(s["n"], s["status"], s["site_name"]) for s in sources] == [
        (1, "read", "Site Listeners"),
        (2, "read", "Site Limits"),
    ]
    assert "text" not in sources[0]  # the text is in the content, not twice
    assert result.summary == (
        "2 of 2 sources read for 'the Firestore realtime listener limits', "
        "1 outside the allowed domains"
    )
    assert progress.calls[0][:3] == (0, 2, "sources")
    assert progress.calls[-1] == (2, 2, "sources", "sources 2/2: Limits")
    assert result.cost_usd == pytest.approx(0.002 + 2 * 0.001)


def test_a_source_that_fails_is_noted_and_the_others_are_read(
    sites: dict[str, str], make_context: MakeContext
) -> None:
    provider = ListProvider([hit(sites["gone"], "Gone", 1), hit(sites["limits"], "Limits", 2)])

    result = ResearchTool(provider, LOOPBACK).run(make_context(objective="research limits"))

    statuses = [(s["title"], s["status"]) for s in result.data["sources"]]
    assert statuses == [("Gone", "failed"), ("Limits", "read")]
    assert "404" in (result.data["sources"][0]["error"] or "")
    assert "Could not be read" in result.content
    assert result.summary.startswith("1 of 2 sources read")


def test_nothing_in_scope_says_so_and_lists_the_results(
    server: LocalServer, sites: dict[str, str], make_context: MakeContext
) -> None:
    provider = ListProvider([hit(sites["elsewhere"], "Elsewhere", 1)])

    result = ResearchTool(provider, LOOPBACK).run(make_context(objective="research limits"))

    assert server.paths == []
    assert "none of the results were inside the allowed domains" in result.data["summary"]
    assert "allow their hosts and retry" in result.data["summary"]
    assert len(result.data["out_of_scope"]) == 1


def test_asking_pauses_for_the_hosts_then_reads_them_once_allowed_fetching_nothing_twice(
    server: LocalServer, sites: dict[str, str], make_context: MakeContext
) -> None:
    """With on_limit "ask", results on other hosts pause the tool, asking for those hosts;
    allowed and resumed, it reads them, and the search and every source read before are
    taken from what it saved, not fetched again."""
    provider = ListProvider(
        [
            hit(sites["listeners"], "Listeners", 1),
            hit(sites["elsewhere"], "Elsewhere", 2),
            hit(sites["third"], "Third", 3),
        ]
    )
    tool = ResearchTool(provider, LOOPBACK)
    context, saved = saving(
        replace(make_context(objective="research listener limits"), on_limit="ask")
    )

    with pytest.raises(ToolPaused) as paused:
        tool.run(context)

    assert paused.value.hosts == ("localhost",)
    assert server.paths == []  # asked before fetching anything
    allowed = replace(context, allowed_domains=("127.0.0.1", "localhost"), checkpoint=saved[-1])
    result = tool.run(allowed)
    assert provider.queries == ["listener limits"]  # searched once
    assert [s["url"] for s in result.data["sources"]] == [
        sites["listeners"],
        sites["elsewhere"],
        sites["third"],
    ]
    assert result.data["out_of_scope"] == []
    # Resumed again from its last state (as a retry would be): nothing is fetched again.
    before = list(server.paths)
    again = tool.run(replace(allowed, checkpoint=saved[-1]))
    assert server.paths == before
    assert again.content == result.content


def test_resumed_without_allowing_the_hosts_it_goes_on_without_them(
    sites: dict[str, str], make_context: MakeContext
) -> None:
    provider = ListProvider([hit(sites["elsewhere"], "Elsewhere", 1), hit(sites["limits"], "L", 2)])
    tool = ResearchTool(provider, LOOPBACK)
    context, saved = saving(replace(make_context(objective="research limits"), on_limit="ask"))
    with pytest.raises(ToolPaused):
        tool.run(context)

    result = tool.run(replace(context, checkpoint=saved[-1]))

    assert [s["status"] for s in result.data["sources"]] == ["read"]
    assert [o["host"] for o in result.data["out_of_scope"]] == ["localhost"]


def test_a_pause_between_sources_keeps_the_ones_read(
    server: LocalServer, sites: dict[str, str], make_context: MakeContext
) -> None:
    """A pause between two sources saves the first; the resumed run reads only the second."""
    provider = ListProvider([hit(sites["listeners"], "A", 1), hit(sites["limits"], "B", 2)])
    tool = ResearchTool(provider, LOOPBACK)
    context, saved = saving(make_context(objective="research limits"))
    asked = replace(context, paused=lambda: len(server.paths) >= 1)
    with pytest.raises(ToolPaused):
        tool.run(asked)
    assert server.paths == ["/listeners"]

    result = tool.run(replace(context, checkpoint=saved[-1]))

    assert server.paths == ["/listeners", "/limits"]
    assert [s["status"] for s in result.data["sources"]] == ["read", "read"]


def test_hostile_titles_and_snippets_stay_text_in_the_report(
    sites: dict[str, str], make_context: MakeContext
) -> None:
    """A search result's title cannot add a link, an image or HTML to the report."""
    evil = "[click](javascript:alert(1)) ![x](http://tracker.example/p.png) <script>x</script>"
    provider = ListProvider(
        [hit(sites["limits"], evil, 1), hit(sites["elsewhere"], evil, 2, snippet=evil)]
    )

    result = ResearchTool(provider, LOOPBACK).run(make_context(objective="research x"))

    html = MarkdownIt("commonmark").render(result.content)
    assert "javascript:" not in " ".join(re.findall(r'href="([^"]*)"', html))
    assert "<img" not in html and "<script>" not in html
    assert "[click](javascript:alert(1))" in html  # shown as the text it is


def test_without_a_query_or_a_provider_it_says_what_is_missing(
    make_context: MakeContext,
) -> None:
    with pytest.raises(ToolError, match="Nothing to research"):
        ResearchTool(ListProvider([]), LOOPBACK).run(make_context(objective="research"))
    assert ResearchTool(None).unavailable_reason == (
        "research is not available: no search provider is configured"
    )


@pytest.mark.parametrize(
    ("objective", "query"),
    [
        (
            "research the Firestore realtime listener limits",
            "the Firestore realtime listener limits",
        ),
        ("Find out about Cloud Run cold starts", "Cloud Run cold starts"),
        ("compare Firestore and Datastore", "compare Firestore and Datastore"),
    ],
)
def test_the_query_comes_from_the_objective(objective: str, query: str) -> None:
    assert research_query(objective) == query


def test_the_summary_quotes_whole_sentences_as_text(
    server: LocalServer, make_context: MakeContext
) -> None:
    """A sentence wrapped over lines in the page is quoted whole; one that looks like
    Markdown (a link to javascript:) stays text in the summary."""
    server.page(
        "/wrapped",
        "<html><head><title>Wrapped</title></head><body><article><h1>Wrapped</h1>"
        "<p>The listener limits are\nwritten over two lines of the page source here.</p>"
        "<p>Read [the limits](javascript:alert(1)) to see every listener limit documented.</p>"
        "<p>Unrelated words follow, to make the page long enough to count as an article.</p>"
        "</article></body></html>",
    )
    provider = ListProvider([hit(server.url("/wrapped"), "Wrapped", 1)])

    result = ResearchTool(provider, LOOPBACK).run(make_context(objective="research limits"))

    summary = result.data["summary"]
    assert "The listener limits are written over two lines of the page source here." in summary
    html = MarkdownIt("commonmark").render(summary)
    assert 'href="javascript:' not in html and "[the limits](javascript:alert(1))" in html
