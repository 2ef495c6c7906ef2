"""The research tool on pages served from 127.0.0.1, with a search provider that answers
from a list (the providers themselves are tested against servers shaped like their APIs)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import Any

import pytest
from markdown_it import MarkdownIt

from buddy.domain.sizes import DOCUMENT_BUDGET, document_size
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
    assert f"[\\[1\\]]({sites['listeners']})" in summary
    assert f"[\\[2\\]]({sites['limits']})" in summary
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
    assert "clone the mission with their hosts allowed" in result.data["summary"]
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


def big_page(title: str, char: str = "界") -> str:
    """A page of about 300 KB of three-byte characters in sentences."""
    sentence = f"{char * 40} limits {char * 40}. "
    paragraphs = "".join(f"<p>{sentence * 25}</p>" for _ in range(40))
    head = f"<html><head><title>{title}</title></head>"
    return f"{head}<body><article>{paragraphs}</article></body></html>"


def test_ten_large_sources_fit_one_document_saved_and_reported_with_their_references(
    server: LocalServer, make_context: MakeContext
) -> None:
    """Ten pages of multi-byte text: what is saved fits a Firestore document, and the report
    fits one too, References and all (each source's text gets its share)."""
    for n in range(10):
        server.page(f"/big{n}", big_page(f"Big {n}"))
    provider = ListProvider([hit(server.url(f"/big{n}"), f"Big {n}", n + 1) for n in range(10)])
    context, saved = saving(make_context(objective="research limits", inputs={"max_sources": 10}))

    result = ResearchTool(provider, LOOPBACK).run(context)

    assert document_size("missions/m/private/checkpoint", saved[-1]) < DOCUMENT_BUDGET
    assert len(result.content.encode()) < DOCUMENT_BUDGET - 64 * 1024
    assert result.content.rstrip().endswith(f"10. [Big 9]({server.url('/big9')})")
    assert [s["status"] for s in result.data["sources"]] == ["read"] * 10


def test_a_source_cut_inside_a_code_block_leaves_the_report_whole(
    server: LocalServer, make_context: MakeContext
) -> None:
    """A page that is one long code block, cut to its share, is closed again: the sections
    after it are still sections, and its comment lines were not made headings."""
    code = "\n".join(f"# step {i}\nrun --thing {'x' * 60}" for i in range(2000))
    server.page(
        "/code",
        "<html><head><title>Code</title></head><body><article><h1>Code</h1>"
        "<p>A long listing follows, explained in one sentence here.</p>"
        f"<pre><code>{code}</code></pre>"
        "</article></body></html>",
    )
    server.page("/after", article("After", LIMITS))
    provider = ListProvider(
        [hit(server.url("/code"), "Code", 1), hit(server.url("/after"), "After", 2)]
    )

    result = ResearchTool(provider, LOOPBACK).run(make_context(objective="research limits"))

    html = MarkdownIt("commonmark").render(result.content)
    headings = re.findall(r"<h[1-6]>(.*?)</h[1-6]>", html)
    assert "[2] After" in headings and "References" in headings
    assert "#### step" not in result.content


def test_result_hosts_are_what_a_fetch_checks_and_show_as_text(
    server: LocalServer, make_context: MakeContext
) -> None:
    """An IDN host is compared in its ASCII form, a result with no host is left out, and a
    host cannot put markup into the list of other results."""
    server.page("/in", article("In", LIMITS))
    provider = ListProvider(
        [
            hit("http://müller.example/page", "IDN", 1),
            hit("http:///no-host", "No host", 2),
            hit("http://a*b*c.example/x", "Starred", 3),
            hit(server.url("/in"), "In", 4),
        ]
    )
    context = make_context(
        objective="research limits", allowed_domains=("127.0.0.1", "xn--mller-kva.example")
    )
    context, saved = saving(replace(context, on_limit="ask"))

    with pytest.raises(ToolPaused) as paused:
        ResearchTool(provider, LOOPBACK).run(context)

    assert paused.value.hosts == ("a*b*c.example",)  # the IDN is in scope; no-host is gone
    result = ResearchTool(provider, LOOPBACK).run(replace(context, checkpoint=saved[-1]))
    assert [s["title"] for s in result.data["sources"]][-1] == "In"
    assert "(a\\*b\\*c.example)" in result.content
    assert "No host" not in result.content


def test_a_failed_source_is_tried_again_and_an_off_scope_redirect_asks(
    server: LocalServer, sites: dict[str, str], make_context: MakeContext
) -> None:
    """A source that failed (a 503) is fetched again by the resumed mission; a redirect to
    another host, for a mission that asks, pauses for that host."""
    busy = iter([Reply(status=503, body="busy"), Reply(body=article("Busy", LIMITS))])
    server.route("/busy", lambda _: next(busy))
    server.redirect("/moved", sites["elsewhere"])
    provider = ListProvider(
        [hit(server.url("/busy"), "Busy", 1), hit(server.url("/moved"), "Moved", 2)]
    )
    context, saved = saving(replace(make_context(objective="research limits"), on_limit="ask"))

    with pytest.raises(ToolPaused) as paused:
        ResearchTool(provider, LOOPBACK).run(context)

    assert paused.value.hosts == ("localhost",)
    allowed = replace(context, allowed_domains=("127.0.0.1", "localhost"), checkpoint=saved[-1])
    result = ResearchTool(provider, LOOPBACK).run(allowed)
    assert [s["status"] for s in result.data["sources"]] == ["read", "read"]
    assert server.paths.count("/busy") == 2


def test_allowing_some_hosts_asks_only_about_hosts_not_asked_before(
    sites: dict[str, str], make_context: MakeContext
) -> None:
    provider = ListProvider(
        [hit(f"http://o{n}.example/", f"O{n}", n) for n in range(1, 5)]
        + [hit(sites["limits"], "In", 5)]
    )
    tool = ResearchTool(provider, LOOPBACK)
    context, saved = saving(
        replace(
            make_context(objective="research limits", inputs={"max_sources": 3}), on_limit="ask"
        )
    )
    with pytest.raises(ToolPaused) as first:
        tool.run(context)
    assert first.value.hosts == ("o1.example", "o2.example", "o3.example")

    allowed = ("127.0.0.1", "o1.example")
    with pytest.raises(ToolPaused) as second:
        tool.run(replace(context, allowed_domains=allowed, checkpoint=saved[-1]))

    assert second.value.hosts == ("o4.example",)


def test_results_of_one_page_are_one_source(
    server: LocalServer, sites: dict[str, str], make_context: MakeContext
) -> None:
    """Two results differing by a fragment are one source (the first, best ranked, kept);
    a result redirecting to a page already read is not read as another source."""
    server.redirect("/again", "/limits")
    provider = ListProvider(
        [
            hit(sites["limits"] + "#top", "First", 1),
            hit(sites["limits"] + "#bottom", "A worse duplicate", 2),
            hit(server.url("/again"), "Redirects to it", 3),
        ]
    )

    result = ResearchTool(provider, LOOPBACK).run(make_context(objective="research limits"))

    sources = result.data["sources"]
    assert [(s["title"], s["status"]) for s in sources] == [
        ("Limits", "read"),
        ("Redirects to it", "failed"),
    ]
    assert "the same page as another source" in sources[1]["error"]
    assert server.paths.count("/limits") == 2  # the first read, and the redirect's end


def test_many_results_outside_the_scope_keep_the_data_small(
    sites: dict[str, str], make_context: MakeContext
) -> None:
    provider = ListProvider(
        [hit(f"https://o{n}.example/", f"O{n}", n, snippet="s" * 1000) for n in range(60)]
    )

    result = ResearchTool(provider, LOOPBACK).run(
        make_context(objective="research limits", inputs={"max_sources": 10})
    )

    assert len(result.data["out_of_scope"]) == 20
    assert all(len(o["snippet"]) <= 300 for o in result.data["out_of_scope"])
    assert len(json.dumps(result.data)) < 64 * 1024


def test_offline_a_research_fails_at_once_saying_what_to_configure(
    monkeypatch: pytest.MonkeyPatch, make_context: MakeContext
) -> None:
    """No network (every name lookup fails): the default provider's search fails the tool,
    not retried, with the providers to configure; nothing was saved to resume from."""
    import socket

    from buddy.config import Settings
    from buddy.tools.search import provider_from_settings

    def no_network(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    context, saved = saving(make_context(objective="research the listener limits"))

    with pytest.raises(ToolError) as error:
        ResearchTool(provider_from_settings(Settings()), LOOPBACK).run(context)

    assert "Cannot reach the search provider DuckDuckGo" in str(error.value)
    assert "BUDDY_SEARCH_PROVIDER" in str(error.value)
    assert error.value.transient is False and saved == []


def test_a_resumed_research_finds_a_redirected_source_it_read(
    server: LocalServer, sites: dict[str, str], make_context: MakeContext
) -> None:
    """A result that redirected (or had a fragment) is remembered by the result's URL: the
    resumed run neither reads it again nor loses it."""
    server.redirect("/moved", "/limits")
    provider = ListProvider(
        [hit(server.url("/moved"), "Moved", 1), hit(sites["listeners"] + "#part", "Frag", 2)]
    )
    tool = ResearchTool(provider, LOOPBACK)
    context, saved = saving(make_context(objective="research limits"))
    with pytest.raises(ToolPaused):
        tool.run(replace(context, paused=lambda: "/limits" in server.paths))

    result = tool.run(replace(context, checkpoint=saved[-1]))

    assert server.paths.count("/limits") == 1 and server.paths.count("/moved") == 1
    assert [s["url"] for s in result.data["sources"]] == [
        sites["limits"],
        sites["listeners"] + "#part",
    ]
