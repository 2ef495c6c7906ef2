"""web_extract against a real HTTP server on 127.0.0.1: extraction, crawling, fetch guards."""

from __future__ import annotations

import gzip
import socket
import time
import tracemalloc
import zlib
from dataclasses import replace

import pytest
from markdown_it import MarkdownIt
from pydantic import ValidationError

from buddy.domain.sizes import DOCUMENT_BUDGET, document_size
from buddy.tools import ToolCancelled, ToolContext, ToolError, ToolOverBudget, ToolPaused
from buddy.tools import web as web_module
from buddy.tools.web import (
    MAX_URL_LENGTH,
    FetchedPage,
    PageContent,
    WebExtractInputs,
    WebExtractTool,
    WebPolicy,
    check_address,
    host_in_scope,
)

from ..localserver import LocalServer, Reply
from ..rawserver import Handler, RawServer, Trickle, answer, gzip_bomb, head
from .conftest import MakeContext, Progress

LOOPBACK = WebPolicy(allow_loopback=True)

ARTICLE = """<!doctype html>
<html><head><title>  The   Article </title><style>body { color: red }</style></head>
<body>
  <header>Site header</header>
  <nav><a href="/home">Home</a></nav>
  <main>
    <h1>Heading</h1>
    <p>First   paragraph with <b>bold</b> words.</p>
    <script>secretScript()</script>
    <p>Second paragraph.</p>
    <a href="next.html#part">Next page</a>
    <a href="https://docs.example/guide">Guide</a>
    <a href="mailto:someone@example.com">Mail</a>
    <a href="next.html">Next again</a>
  </main>
  <footer>Site footer</footer>
</body></html>"""


def page(title: str, *links: str) -> str:
    anchors = " ".join(f'<a href="{link}">{link}</a>' for link in links)
    head = f"<head><title>{title}</title></head>"
    return f"<html>{head}<body><p>{title} text</p>{anchors}</body></html>"


def tool(policy: WebPolicy = LOOPBACK, cost_per_page: float = 0.001) -> WebExtractTool:
    return WebExtractTool(policy=policy, cost_per_page=cost_per_page)


def test_extracts_title_main_text_and_absolute_links(
    server: LocalServer, make_context: MakeContext
) -> None:
    """The title, the main text without script/nav/header/footer, and absolute http(s) links."""
    server.page("/docs/article", ARTICLE)

    result = tool().run(make_context(inputs={"url": server.url("/docs/article")}))

    assert result.type == "web_page"
    assert result.title == "The Article"
    assert (
        "# Heading\n\nFirst paragraph with **bold** words.\n\nSecond paragraph." in result.content
    )
    for absent in ("secretScript", "Site header", "Site footer", "color: red"):
        assert absent not in result.content
    assert result.data["links"] == [
        {"url": server.url("/home"), "text": "Home"},
        {"url": server.url("/docs/next.html"), "text": "Next page"},
        {"url": "https://docs.example/guide", "text": "Guide"},
    ]
    assert result.data["url"] == server.url("/docs/article")
    assert result.data["truncated"] is False
    assert result.summary == "The Article: 13 words from 1 page(s)"
    assert result.preview.startswith("# Heading\nFirst paragraph")
    assert f"Top links:\n- Home — {server.url('/home')}" in result.preview


RICH = """<!doctype html>
<html lang="en-GB"><head><title>Listener limits | Example Docs</title>
<meta name="author" content="Ada Lovelace">
<meta property="og:site_name" content="Example Docs">
<meta property="article:published_time" content="2025-03-14T09:00:00Z">
</head><body>
<nav><a href="/">Home</a> <a href="/pricing">Pricing</a> <a href="/blog">Blog</a></nav>
<article>
  <h1>Realtime listener limits</h1>
  <p>Every client may keep many listeners open, and each one is billed for the documents it
  reads. This page lists the limits that matter when a dashboard watches missions live.</p>
  <h2>What counts</h2>
  <ul><li>One initial snapshot per listener</li><li>Every changed document after it</li></ul>
  <ol><li>Open the listener</li><li>Read the snapshot</li></ol>
  <table>
    <tr><th>Limit</th><th>Value</th></tr>
    <tr><td>Listeners per client</td><td>100</td></tr>
    <tr><td>Writes per document per second</td><td>1</td></tr>
  </table>
  <p>See <a href="/docs/quotas">the quotas page</a> for more, but never
  <a href="javascript:alert(1)">this link</a>, and read the rest of this long paragraph which
  is here so that the article has enough words to be an article.</p>
</article>
<section class="comments"><h3>Comments</h3><p>First!!! Great post, thanks so much</p></section>
<footer>Copyright 2025 Example Inc. All rights reserved.</footer>
</body></html>"""


def test_main_content_comes_as_markdown_with_its_metadata(
    server: LocalServer, make_context: MakeContext
) -> None:
    """Headings, lists, a table and links survive as Markdown; navigation, comments and the
    footer do not; title, author, date, site name and language come with the page, and a
    javascript: link keeps only its text."""
    server.page("/docs/limits", RICH)

    result = tool().run(make_context(inputs={"url": server.url("/docs/limits")}))

    assert result.format == "markdown"
    content = result.content
    assert "# Realtime listener limits" in content and "## What counts" in content
    assert "- One initial snapshot per listener" in content
    assert "1. Open the listener" in content
    assert "| Listeners per client | 100 |" in content
    assert f"[the quotas page]({server.url('/docs/quotas')})" in content
    assert "javascript:" not in content and "this link" in content
    for boilerplate in ("Pricing", "First!!!", "All rights reserved"):
        assert boilerplate not in content
    assert result.data["metadata"] == {
        "title": "Listener limits | Example Docs",
        "author": "Ada Lovelace",
        "date": "2025-03-14",
        "site_name": "Example Docs",
        "language": "en-GB",
    }
    assert result.data["pages"][0]["author"] == "Ada Lovelace"


def test_a_page_of_too_many_elements_gets_the_basic_extractor(
    server: LocalServer, make_context: MakeContext
) -> None:
    """40,000 one-word paragraphs (trafilatura takes about 0.15 ms an element: 6 s here, a
    minute for a 2 MiB page of them): the basic extractor's text, without metadata."""
    html = (
        '<html><head><title>Many</title><meta name="author" content="A. Uthor"></head><body>'
        + "<p>w" * 40_000
        + "</body></html>"
    )
    server.page("/many", html)

    result = tool().run(make_context(inputs={"url": server.url("/many")}))

    assert result.data["pages"][0]["words"] == 40_000
    assert result.data["metadata"]["author"] is None  # trafilatura would have found it


@pytest.mark.parametrize(
    ("body", "content_type", "title", "text"),
    [
        ("<html><body><h1>Only  heading</h1><p>Body</p></body></html>", "text/html",
         "Only heading", "# Only heading\n\nBody"),
        ("<html><body><article><p>In article</p></article><p>Outside</p></body></html>",
         "application/xhtml+xml", None, "In article"),
        ("plain   text\n\n  as is", "text/plain; charset=utf-8", None,
         "```text\nplain   text\n\n  as is\n```"),
    ],
    ids=["title-from-h1", "article-preferred-over-body", "plain-text-kept-as-is"],
)  # fmt: skip
def test_extraction_variants(
    server: LocalServer,
    make_context: MakeContext,
    body: str,
    content_type: str,
    title: str | None,
    text: str,
) -> None:
    """Title falls back to <h1> then the URL; <article> beats <body>; plain text is kept;
    HTML comes as Markdown, its spaces collapsed as a browser shows them."""
    server.route("/p", Reply(body=body, content_type=content_type))

    result = tool().run(make_context(inputs={"url": server.url("/p")}))

    assert result.title == (title or server.url("/p"))
    assert result.content.endswith(f"]({server.url('/p')})\n\n{text}")


def test_url_is_taken_from_the_objective(server: LocalServer, make_context: MakeContext) -> None:
    """Without inputs.url the first URL in the objective is fetched."""
    server.page("/from-objective", page("Objective"))

    result = tool().run(make_context(f"Summarise {server.url('/from-objective')}, please"))

    assert result.title == "Objective"
    assert server.paths == ["/from-objective"]


def test_no_url_anywhere_is_an_error(make_context: MakeContext) -> None:
    """An objective without a URL and no inputs.url is refused with a clear message."""
    with pytest.raises(ToolError, match="No URL to extract"):
        tool().run(make_context("summarise the news"))


def test_follows_same_host_links_breadth_first(
    server: LocalServer, make_context: MakeContext, progress: Progress
) -> None:
    """Linked same-host pages are read breadth-first and each one is reported as "pages k/n"."""
    server.page("/", page("Start", "/a", "http://other.example/x", "/b"))
    server.page("/a", page("A", "/c", "/"))
    server.page("/b", page("B"))
    server.page("/c", page("C"))

    result = tool().run(make_context(inputs={"url": server.url("/"), "max_pages": 3}))

    assert server.paths == ["/", "/a", "/b"]
    assert [p["title"] for p in result.data["pages"]] == ["Start", "A", "B"]
    assert progress.calls == [
        (1, 3, "pages", "pages 1/3"),
        (2, 3, "pages", "pages 2/3"),
        (3, 3, "pages", "pages 3/3"),
    ]
    assert f"## A\n[{server.url('/a')}]({server.url('/a')})" in result.content
    # The words of the pages' main text as trafilatura reads it: "Start text" and its three
    # links, "A text", "B text".
    assert result.summary == "Start: 9 words from 3 page(s)"


def test_a_paused_crawl_saves_its_pages_and_a_resumed_one_fetches_only_the_rest(
    server: LocalServer, progress: Progress
) -> None:
    """Paused after two pages, the crawl saves them (as data Firestore can store: no list in
    a list); run again from that state, it fetches only the remaining pages, and the result
    holds all of them."""
    server.page("/", page("Start", "/a", "/b"))
    server.page("/a", page("A"))
    server.page("/b", page("B"))
    saved: list[dict] = []
    inputs = {"url": server.url("/"), "max_pages": 3}

    def first_run() -> ToolContext:
        return ToolContext(
            objective="",
            inputs=inputs,
            allowed_domains=("127.0.0.1",),
            report=progress,
            paused=lambda: len(progress.calls) >= 2,
            save=saved.append,
        )

    with pytest.raises(ToolPaused):
        tool().run(first_run())
    assert server.paths == ["/", "/a"]
    state = saved[-1]
    assert not _lists_in_lists(state)
    resumed = ToolContext(
        objective="", inputs=inputs, allowed_domains=("127.0.0.1",), checkpoint=state
    )
    result = tool().run(resumed)
    assert server.paths == ["/", "/a", "/b"]
    assert [p["title"] for p in result.data["pages"]] == ["Start", "A", "B"]


def _lists_in_lists(value: object, inside: bool = False) -> bool:
    if isinstance(value, list):
        return inside or any(_lists_in_lists(item, True) for item in value)
    if isinstance(value, dict):
        return any(_lists_in_lists(item) for item in value.values())
    return False


def test_an_ask_mission_pauses_for_an_out_of_scope_redirect_instead_of_failing(
    server: LocalServer, make_context: MakeContext
) -> None:
    """With on_limit ask, a redirect to a host outside the scope pauses (naming the host)
    instead of failing; without it, the same fetch fails as before."""
    server.redirect("/away", server.url("/x").replace("127.0.0.1", "localhost"))
    asking = make_context(inputs={"url": server.url("/away")})
    with pytest.raises(ToolPaused) as paused:
        tool().run(ToolContext(**{**asking.__dict__, "on_limit": "ask"}))
    assert paused.value.host == "localhost"
    with pytest.raises(ToolError, match="localhost is outside the mission's allowed domains"):
        tool().run(make_context(inputs={"url": server.url("/away")}))


@pytest.mark.parametrize(
    ("routes", "expected_calls", "fetched"),
    [
        ({"/": page("Start", "/a"), "/a": page("A")}, [(1, 5), (2, 2)], ["/", "/a"]),
        ({"/": page("Start", "/missing", "/a"), "/a": page("A")}, [(1, 5), (2, 2)],
         ["/", "/missing", "/a"]),
        ({"/": page("Start", "/a", "/missing"), "/a": page("A")}, [(1, 5), (2, 5), (2, 2)],
         ["/", "/a", "/missing"]),
    ],
    ids=["links-run-out", "broken-link-skipped", "last-link-broken"],
)  # fmt: skip
def test_reported_total_shrinks_to_the_pages_available(
    server: LocalServer,
    make_context: MakeContext,
    progress: Progress,
    routes: dict[str, str],
    expected_calls: list[tuple[int, int]],
    fetched: list[str],
) -> None:
    """When links run out (or fail) the last report says how many pages were really read."""
    for path, html in routes.items():
        server.page(path, html)

    result = tool().run(make_context(inputs={"url": server.url("/"), "max_pages": 5}))

    assert [(done, total) for done, total, _, _ in progress.calls] == expected_calls
    assert progress.messages[-1] == "pages 2/2"
    assert server.paths == fetched
    assert len(result.data["pages"]) == 2


def test_in_scope_redirect_is_followed(server: LocalServer, make_context: MakeContext) -> None:
    """A redirect to an allowed host is followed and the final URL is reported."""
    server.redirect("/old", "/new", status=301)
    server.page("/new", page("New home"))

    result = tool().run(make_context(inputs={"url": server.url("/old")}))

    assert result.title == "New home"
    assert result.data["url"] == server.url("/new")
    assert server.paths == ["/old", "/new"]


def test_link_redirecting_to_a_read_page_is_not_read_twice(
    server: LocalServer, make_context: MakeContext, progress: Progress
) -> None:
    """A link that redirects back to a page already read does not count as a new page."""
    server.page("/", page("Start", "/alias", "/a"))
    server.redirect("/alias", "/")
    server.page("/a", page("A"))

    result = tool().run(make_context(inputs={"url": server.url("/"), "max_pages": 3}))

    assert [p["url"] for p in result.data["pages"]] == [server.url("/"), server.url("/a")]
    assert progress.messages == ["pages 1/3", "pages 2/2"]


@pytest.mark.parametrize(
    ("location", "host"),
    [("http://evil.example/steal", "evil.example"), ("http://localhost:{port}/", "localhost")],
    ids=["other-domain", "localhost-not-allowed"],
)
def test_redirect_out_of_scope_is_refused(
    server: LocalServer, make_context: MakeContext, location: str, host: str
) -> None:
    """A redirect to a host outside allowed_domains stops the fetch and names that host."""
    server.redirect("/go", location.format(port=server.port))

    with pytest.raises(ToolError, match=f"{host} is outside the mission's allowed domains"):
        tool().run(make_context(inputs={"url": server.url("/go")}))
    assert server.paths == ["/go"]


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/loop", "redirected more than 5 times"),
        ("file:///etc/passwd", "Only http and https"),
        ("/" + "a" * MAX_URL_LENGTH, "longer than 2048 characters"),
        ("http://[oops/", "redirected to an invalid URL"),
    ],
    ids=["redirect-loop", "non-http-scheme", "overlong-location", "unparseable-location"],
)
def test_bad_redirects_are_refused(
    server: LocalServer, make_context: MakeContext, location: str, message: str
) -> None:
    """Endless redirects and redirects to non-http(s) or overlong URLs end in a ToolError."""
    server.redirect("/loop", location)

    with pytest.raises(ToolError, match=message):
        tool().run(make_context(inputs={"url": server.url("/loop")}))


@pytest.mark.parametrize(
    ("allowed", "detail"),
    [(("example.com",), "(example.com)"), ((), "(none were given)")],
    ids=["other-domain-allowed", "no-domains-allowed"],
)
def test_host_outside_allowed_domains_is_refused(
    server: LocalServer, make_context: MakeContext, allowed: tuple[str, ...], detail: str
) -> None:
    """The start URL must be in allowed_domains; an empty list allows nothing."""
    server.page("/", page("Never"))

    with pytest.raises(ToolError) as error:
        tool().run(make_context(inputs={"url": server.url("/")}, allowed_domains=allowed))

    assert str(error.value) == f"127.0.0.1 is outside the mission's allowed domains {detail}"
    assert server.paths == []


def test_loopback_is_refused_unless_allowed(server: LocalServer, make_context: MakeContext) -> None:
    """The default policy refuses loopback addresses before any request is made."""
    server.page("/", page("Local"))

    with pytest.raises(ToolError, match=r"resolves to a private/loopback address \(127\.0\.0\.1\)"):
        WebExtractTool().run(make_context(inputs={"url": server.url("/")}))
    assert server.paths == []

    result = tool(LOOPBACK).run(make_context(inputs={"url": server.url("/")}))
    assert result.title == "Local"


@pytest.mark.parametrize(
    ("host", "policy", "message"),
    [
        ("10.1.2.3", LOOPBACK, "private/loopback"),
        ("192.168.0.10", LOOPBACK, "private/loopback"),
        ("169.254.169.254", LOOPBACK, "private/loopback"),
        ("metadata.google.internal", LOOPBACK, "metadata server"),
        ("0.0.0.0", LOOPBACK, "private/loopback"),
        ("224.0.0.1", LOOPBACK, "private/loopback"),
        ("::1", WebPolicy(), "private/loopback"),
        ("127.0.0.2", WebPolicy(), "private/loopback"),
        ("nonexistent.invalid", WebPolicy(), "Cannot resolve nonexistent.invalid"),
    ],
    ids=[
        "private-10", "private-192", "metadata-ip", "metadata-host", "unspecified", "multicast",
        "ipv6-loopback", "loopback-range", "unresolvable",
    ],
)  # fmt: skip
def test_check_address_refuses_non_public_hosts(host: str, policy: WebPolicy, message: str) -> None:
    """Private, link-local, metadata, unspecified, multicast and unresolvable hosts are refused."""
    with pytest.raises(ToolError, match=message):
        check_address(host, 80, policy)


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("example.com", ("example.com",), True),
        ("Docs.Example.COM", ("example.com",), True),
        ("badexample.com", ("example.com",), False),
        ("example.com", ("docs.example.com",), False),
        ("127.0.0.1", ("0.0.1",), False),
        ("example.com", (), False),
    ],
    ids=["exact", "subdomain-any-case", "suffix-not-subdomain", "parent", "ip-suffix", "empty"],
)
def test_host_in_scope(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    """Exact hosts and their subdomains are in scope, nothing else."""
    assert host_in_scope(host, allowed) is expected


def test_slow_server_times_out(server: LocalServer, make_context: MakeContext) -> None:
    """A server slower than read_timeout ends in ToolError("Connection timeout")."""
    server.route("/slow", Reply(body=page("Slow"), delay=3))
    impatient = WebPolicy(allow_loopback=True, read_timeout=0.5)

    with pytest.raises(ToolError) as error:
        tool(impatient).run(make_context(inputs={"url": server.url("/slow")}))
    assert str(error.value) == "Connection timeout"


def test_closed_port_cannot_connect(make_context: MakeContext) -> None:
    """A refused connection names the host."""
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/"

    with pytest.raises(ToolError) as error:
        tool().run(make_context(inputs={"url": url}))
    assert str(error.value) == "Cannot connect to 127.0.0.1"


def test_size_cap_truncates_the_page(server: LocalServer, make_context: MakeContext) -> None:
    """A page bigger than max_bytes is cut at max_bytes and marked truncated."""
    server.route("/huge", Reply(body="word " * 200_000, content_type="text/plain"))
    small = WebPolicy(allow_loopback=True, max_bytes=10_000)

    result = tool(small).run(make_context(inputs={"url": server.url("/huge")}))

    assert result.data["truncated"] is True
    assert result.data["pages"][0]["words"] == 2_000
    assert len(result.content) < 11_000


@pytest.mark.parametrize("status", [404, 500], ids=["not-found", "server-error"])
def test_http_error_status_is_an_error(
    server: LocalServer, make_context: MakeContext, status: int
) -> None:
    """A non-2xx answer is a ToolError that quotes the status."""
    server.route("/broken", Reply(status=status, body="nope"))

    with pytest.raises(ToolError, match=f"answered HTTP {status}"):
        tool().run(make_context(inputs={"url": server.url("/broken")}))


def test_non_html_content_is_refused(server: LocalServer, make_context: MakeContext) -> None:
    """Images and other non-text content types are refused."""
    server.route("/logo.png", Reply(body=b"\x89PNG\r\n\x1a\n", content_type="image/png"))

    with pytest.raises(ToolError, match="image/png, not a web page"):
        tool().run(make_context(inputs={"url": server.url("/logo.png")}))


@pytest.mark.parametrize("pages_before_cancel", [0, 1, 2], ids=["at-once", "after-1", "after-2"])
def test_cancellation_between_pages_stops_fetching(
    server: LocalServer,
    make_context: MakeContext,
    progress: Progress,
    pages_before_cancel: int,
) -> None:
    """Cancelling raises ToolCancelled before the next page and no further request is made."""
    server.page("/", page("Start", "/a", "/b"))
    server.page("/a", page("A"))
    server.page("/b", page("B"))
    context = make_context(
        inputs={"url": server.url("/"), "max_pages": 3},
        cancelled=lambda: len(progress.calls) >= pages_before_cancel,
    )

    with pytest.raises(ToolCancelled):
        tool().run(context)

    assert len(server.paths) == pages_before_cancel


def test_cost_is_per_page_fetched(server: LocalServer, make_context: MakeContext) -> None:
    """cost_usd counts the pages actually read, not the pages asked for."""
    server.page("/", page("Start", "/a"))
    server.page("/a", page("A"))

    result = tool(cost_per_page=0.01).run(
        make_context(inputs={"url": server.url("/"), "max_pages": 4})
    )

    assert result.cost_usd == pytest.approx(0.02)


def test_estimate_cost_is_per_page_asked_for() -> None:
    """The estimate assumes every page asked for will be read."""
    web = tool(cost_per_page=0.01)
    assert web.estimate_cost(WebExtractInputs(max_pages=4)) == pytest.approx(0.04)
    assert web.estimate_cost(WebExtractInputs()) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "inputs",
    [
        {"url": "ftp://example.com/file"},
        {"url": "javascript:alert(1)"},
        {"url": "https://example.com/" + "a" * 2048},
        {"max_pages": 11},
        {"max_pages": 0},
        {"url": "https://example.com", "depth": 2},
    ],
    ids=["ftp", "javascript", "too-long", "too-many-pages", "zero-pages", "unknown-field"],
)
def test_input_model_rejects_bad_inputs(inputs: dict[str, object]) -> None:
    """Non-http(s) URLs, overlong URLs, max_pages outside 1..10 and unknown fields are refused."""
    with pytest.raises(ValidationError):
        WebExtractInputs.model_validate(inputs)


# --- Content encodings: decoded by hand, within the size cap -------------------------------

PACKED = b"<html><head><title>Packed</title></head><body><p>hello encoded world</p></body></html>"


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(PACKED)),
        ("x-gzip", gzip.compress(PACKED)),
        ("GZip", gzip.compress(PACKED)),
        ("deflate", zlib.compress(PACKED)),
        ("deflate", raw_deflate(PACKED)),
        ("deflate, gzip", gzip.compress(zlib.compress(PACKED))),
        ("gzip, gzip", gzip.compress(gzip.compress(PACKED))),
        ("gzip,deflate,gzip", gzip.compress(zlib.compress(gzip.compress(PACKED)))),
        ("identity", PACKED),
        ("identity, gzip", gzip.compress(PACKED)),
        ("gzip", gzip.compress(PACKED[:40]) + gzip.compress(PACKED[40:])),
        ("gzip", gzip.compress(PACKED) + b"\0\0\0\0"),
    ],
    ids=[
        "gzip", "x-gzip", "any-case", "deflate-zlib", "deflate-raw", "deflate-then-gzip",
        "gzip-twice", "three-layers", "identity", "identity-listed", "multi-member-gzip",
        "gzip-with-padding",
    ],
)  # fmt: skip
def test_content_encodings_are_decoded(
    server: LocalServer, make_context: MakeContext, encoding: str, body: bytes
) -> None:
    """gzip, x-gzip and deflate (zlib or raw), stacked or not, decode to the page's text."""
    server.route("/p", Reply(body=body, headers={"Content-Encoding": encoding}))

    result = tool().run(make_context(inputs={"url": server.url("/p")}))

    assert result.title == "Packed"
    assert result.content.endswith("hello encoded world")
    assert result.data["truncated"] is False
    assert server.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", gzip.compress(PACKED)), ("deflate", raw_deflate(PACKED)),
     ("deflate", zlib.compress(PACKED))],
    ids=["gzip", "deflate-raw", "deflate-zlib"],
)  # fmt: skip
def test_compressed_body_arriving_a_byte_at_a_time_decodes(
    make_context: MakeContext, encoding: str, body: bytes
) -> None:
    """Decoding does not depend on how the network cuts the body, down to single bytes."""
    reply = head(200, content_type="text/html", content_encoding=encoding, content_length=len(body))
    with RawServer(answer(reply, Trickle(body, 0.002))) as raw:
        result = tool().run(make_context(inputs={"url": raw.url("/p")}))

    assert result.content.endswith("hello encoded world")


@pytest.mark.parametrize(
    ("encoding", "named"),
    [("br", "br"), ("zstd", "zstd"), ("compress", "compress"), ("x-bogus", "x-bogus"),
     ("gzip, br", "br"), ("br, gzip", "br")],
    ids=["brotli", "zstd", "compress", "unknown", "br-outermost", "br-innermost"],
)  # fmt: skip
def test_unsupported_content_encodings_are_refused(
    server: LocalServer, make_context: MakeContext, encoding: str, named: str
) -> None:
    """An encoding other than gzip, deflate and identity is a clear, permanent error."""
    server.route("/p", Reply(body=b"\x8b\x01\x80", headers={"Content-Encoding": encoding}))

    with pytest.raises(ToolError) as error:
        tool().run(make_context(inputs={"url": server.url("/p")}))

    assert str(error.value) == (
        f"{server.url('/p')} uses the content encoding '{named}', which web_extract cannot read"
    )
    assert error.value.transient is False


def test_more_than_three_stacked_encodings_are_refused(
    server: LocalServer, make_context: MakeContext
) -> None:
    """Five gzip layers are refused before anything is inflated."""
    body = PACKED
    for _ in range(5):
        body = gzip.compress(body)
    server.route("/p", Reply(body=body, headers={"Content-Encoding": ", ".join(["gzip"] * 5)}))

    with pytest.raises(ToolError, match="stacks more content encodings than web_extract reads"):
        tool().run(make_context(inputs={"url": server.url("/p")}))


@pytest.mark.parametrize(
    ("encoding", "body", "named"),
    [
        ("gzip", b"\x1f\x8b" + b"garbage" * 10, "gzip"),
        ("gzip", gzip.compress(PACKED)[:-12], "gzip"),
        ("deflate", b"this is not deflate at all", "deflate"),
        ("deflate, gzip", gzip.compress(b"plain, not deflate"), "deflate"),
        ("gzip", b"PK\x03\x04 a zip file", "gzip"),
    ],
    ids=["gzip-garbage", "gzip-cut-short", "deflate-garbage", "inner-layer-corrupt", "not-gzip"],
)
def test_corrupt_compressed_data_is_a_clear_error(
    server: LocalServer, make_context: MakeContext, encoding: str, body: bytes, named: str
) -> None:
    """Compressed data that does not decompress (or stops early) is a permanent ToolError."""
    server.route("/p", Reply(body=body, headers={"Content-Encoding": encoding}))

    with pytest.raises(ToolError) as error:
        tool().run(make_context(inputs={"url": server.url("/p")}))

    assert str(error.value) == f"{server.url('/p')} sent {named} data that does not decompress"
    assert error.value.transient is False


@pytest.mark.parametrize(
    ("encoding", "layers"), [("gzip, gzip", 2), ("gzip", 1)], ids=["double-gzip", "single-gzip"]
)
def test_compression_bomb_is_cut_at_the_cap_without_inflating_it(
    server: LocalServer, make_context: MakeContext, encoding: str, layers: int
) -> None:
    """1 GiB of zeros, gzipped once or twice, gives a page cut at the cap and flagged so.

    tracemalloc sees every Python allocation, bytes included, for the whole call (the test's
    server thread too). The decoded body exists at most twice at once (the buffer it grows
    in, then the bytes or text made from it) plus a few 64 KiB decoder buffers: about twice
    the cap. Three times the cap leaves room for the rest of the call and is still 170 times
    less than inflating the gibibyte.
    """
    server.route(
        "/bomb",
        Reply(
            body=gzip_bomb(layers),
            content_type="text/plain",
            headers={"Content-Encoding": encoding},
        ),
    )

    tracemalloc.start()
    try:
        result = tool().run(make_context(inputs={"url": server.url("/bomb")}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 3 * LOOPBACK.max_bytes
    assert result.data["truncated"] is True
    assert result.summary.endswith(
        "words from 1 page(s) (truncated at 2 MiB) (truncated at 500,000 characters)"
    )


def test_cap_cuts_a_compressed_page_at_exactly_max_bytes(
    server: LocalServer, make_context: MakeContext
) -> None:
    """The decoded text kept is max_bytes long, no more, and the content says it was cut."""
    server.route(
        "/bomb",
        Reply(
            body=gzip_bomb(2),
            content_type="text/plain",
            headers={"Content-Encoding": "gzip, gzip"},
        ),
    )
    small = WebPolicy(allow_loopback=True, max_bytes=10_000)

    result = tool(small).run(make_context(inputs={"url": server.url("/bomb")}))

    assert result.content.count("\0") == 10_000
    assert result.content.endswith("\n\n(truncated at 9.77 KiB)")
    assert "(truncated at 9.77 KiB)" in result.summary


# --- One deadline per fetch: headers, body, redirects, name lookup --------------------------

IMPATIENT = WebPolicy(allow_loopback=True, total_timeout=2)
HTML_HEAD = head(200, content_type="text/html", content_length=1000)


def trickled_tls_handshake(conn: socket.socket) -> None:
    """Answers a ClientHello with the start of a 16 KiB TLS record, then a byte at a time."""
    conn.sendall(b"\x16\x03\x03\x40\x00")
    for byte in Trickle(bytes(16384), 0.5):
        conn.sendall(byte)


@pytest.mark.parametrize(
    ("handler", "scheme"),
    [
        (answer(Trickle(HTML_HEAD, 0.5)), "http"),
        (answer(HTML_HEAD, Trickle(b"x" * 1000, 0.5)), "http"),
        (trickled_tls_handshake, "https"),
    ],
    ids=["trickled-headers", "trickled-body", "trickled-tls-handshake"],
)
def test_total_timeout_bounds_a_trickling_server(
    make_context: MakeContext, handler: Handler, scheme: str
) -> None:
    """A byte every 0.5 s never trips a per-read timeout; total_timeout still ends the fetch."""
    with RawServer(handler) as raw:
        url = raw.url("/slow").replace("http", scheme, 1)
        started = time.monotonic()
        with pytest.raises(ToolError) as error:
            tool(IMPATIENT).run(make_context(inputs={"url": url}))
        elapsed = time.monotonic() - started

    assert str(error.value) == "Connection timeout"
    assert error.value.transient is True
    assert elapsed < 6


def test_total_timeout_covers_every_redirect_hop(
    server: LocalServer, make_context: MakeContext
) -> None:
    """Six hops of 0.8 s each, every one under read_timeout, are cut off at total_timeout."""
    for hop in range(5):
        server.route(f"/hop{hop}", Reply(302, headers={"Location": f"/hop{hop + 1}"}, delay=0.8))
    server.page("/hop5", page("Arrived"))
    policy = WebPolicy(allow_loopback=True, read_timeout=1.5, total_timeout=2)

    started = time.monotonic()
    with pytest.raises(ToolError, match=r"^Connection timeout$"):
        tool(policy).run(make_context(inputs={"url": server.url("/hop0")}))

    assert time.monotonic() - started < 4  # the chain alone takes 4.8 s
    assert "/hop5" not in server.paths


@pytest.mark.usefixtures("hanging_resolver")
def test_name_lookup_is_bounded_by_the_deadline(make_context: MakeContext) -> None:
    """A name lookup that never answers ends with the fetch's deadline."""
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"^Connection timeout$"):
        tool(IMPATIENT).run(
            make_context(inputs={"url": "http://dns.example/"}, allowed_domains=("dns.example",))
        )

    assert time.monotonic() - started < 6


TRICKLING = answer(Trickle(HTML_HEAD, 0.3))


@pytest.mark.parametrize("linked", [False, True], ids=["first-page", "linked-page"])
def test_tool_budget_running_out_is_over_budget_not_a_timeout(
    server: LocalServer, make_context: MakeContext, linked: bool
) -> None:
    """When the tool's own deadline passes mid-fetch, the tool stops with ToolOverBudget."""
    with RawServer(TRICKLING) as raw:
        server.page("/", page("Start", raw.url("/slow")))
        url = server.url("/") if linked else raw.url("/slow")
        context = replace(
            make_context(inputs={"url": url, "max_pages": 2}), deadline=time.monotonic() + 1
        )
        started = time.monotonic()
        with pytest.raises(ToolOverBudget) as error:
            tool().run(context)  # total_timeout is 30 s: the budget is what ends it

    assert error.value.transient is False
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("linked", [False, True], ids=["first-page", "linked-page"])
def test_cancel_during_a_slow_body_stops_promptly(
    server: LocalServer, make_context: MakeContext, linked: bool
) -> None:
    """A cancel is noticed between reads of a slow body, not after it; it is never "skipped"."""
    body = head(200, content_type="text/html", content_length=1000)
    with RawServer(answer(body, Trickle(b"x" * 1000, 0.05))) as raw:
        server.page("/", page("Start", raw.url("/slow")))
        started = time.monotonic()
        context = make_context(
            inputs={"url": server.url("/") if linked else raw.url("/slow"), "max_pages": 2},
            cancelled=lambda: time.monotonic() > started + 0.5,
        )
        with pytest.raises(ToolCancelled):
            tool().run(context)

    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    "handler",
    [
        answer(b"SSH-2.0-OpenSSH_9.6\r\n"),
        answer(head(200, content_type="text/html", content_length=1000), b"<p>cut short"),
        answer(),
    ],
    ids=["not-http", "content-length-lies", "silent-hang-up"],
)
def test_broken_http_answers_are_transient_errors(
    make_context: MakeContext, handler: Handler
) -> None:
    """Garbage, a body shorter than its Content-Length, or no answer at all name the host."""
    with RawServer(handler) as raw, pytest.raises(ToolError) as error:
        tool().run(make_context(inputs={"url": raw.url("/")}))

    assert str(error.value) == "Cannot read the answer from 127.0.0.1"
    assert error.value.transient is True


def test_bytes_past_content_length_are_ignored(make_context: MakeContext) -> None:
    """A body longer than its Content-Length is read up to Content-Length."""
    reply = head(200, content_type="text/plain", content_length=5)
    with RawServer(answer(reply, b"hello and more")) as raw:
        result = tool().run(make_context(inputs={"url": raw.url("/")}))

    assert result.content.endswith("\n\n```text\nhello\n```")


def test_proxy_settings_in_the_environment_are_ignored(
    server: LocalServer, make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxy variables pointing at a dead port change nothing: the environment is not read."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
        monkeypatch.setenv(name.lower(), "http://127.0.0.1:9")
    server.page("/", page("Direct"))

    result = tool().run(make_context(inputs={"url": server.url("/")}))

    assert result.title == "Direct"


# --- Charsets: whatever a page declares, it decodes --------------------------------------

WORDS = (
    "<html><head>{meta}<title>Plain words</title></head>"
    "<body><p>Hello charset world café</p></body></html>"
)
LATIN_META = WORDS.format(meta='<meta charset="ISO-8859-1">').encode("latin-1")
HTTP_EQUIV = '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        *[(f"text/html; charset={label}", WORDS.format(meta="").encode())
          for label in ("rot13", "base64", "hex", "zlib_codec", "undefined", "punycode", "idna",
                        "unicode_escape", "no-such-charset", "", '"utf-8"', "'UTF-8'", " utf8 ")],
        ("text/html", WORDS.format(meta="").encode("utf-16")),
        ("text/html; charset=utf-8", WORDS.format(meta="").encode("utf-16")),
        ("text/html", LATIN_META),
        ("text/html; charset=rot13", LATIN_META),
        ("text/html", WORDS.format(meta=HTTP_EQUIV).encode("cp1252")),
        ("text/html", WORDS.format(meta='<meta charset="rot13">').encode()),
        ("text/html", WORDS.format(meta='<meta charset="utf-16">').encode()),
        ("text/html; charset=utf-8", WORDS.format(meta='<meta charset="latin-1">').encode()),
        ("text/html; charset=latin1", WORDS.format(meta="").encode("cp1252")),
        ("text/plain; charset=base64", b"Plain words\nHello charset world caf\xc3\xa9"),
    ],
    ids=[
        "rot13", "base64", "hex", "zlib", "undefined", "punycode", "idna", "unicode-escape",
        "unknown-name", "empty-label", "double-quoted", "single-quoted", "padded",
        "utf-16-bom", "bom-beats-header", "latin-1-meta", "meta-after-bogus-header",
        "http-equiv", "bogus-meta", "utf-16-meta-means-utf-8", "header-beats-meta",
        "latin1-header", "plain-text",
    ],
)  # fmt: skip
def test_any_declared_charset_decodes_sensibly(
    server: LocalServer, make_context: MakeContext, content_type: str, body: bytes
) -> None:
    """Non-text codecs, unknown or odd labels fall back (meta, BOM, UTF-8); none raises."""
    server.route("/p", Reply(body=body, content_type=content_type))

    result = tool().run(make_context(inputs={"url": server.url("/p")}))

    assert "Plain words" in result.content
    assert "Hello charset world café" in result.content


# --- Crawling: a failing linked page is skipped and noted ----------------------------------


def test_failing_linked_pages_are_skipped_and_noted(
    server: LocalServer, make_context: MakeContext
) -> None:
    """Linked pages that fail (500, a trickle, br) are listed in data and content; others stay."""
    bomb = Reply(body=gzip_bomb(2), headers={"Content-Encoding": "gzip, gzip"})
    server.route(
        "/rot13", Reply(body=page("Rot13").encode(), content_type="text/html; charset=rot13")
    )
    server.route("/bomb", bomb)
    server.route("/broken", Reply(500, "boom"))
    server.route("/brotli", Reply(body=b"\x8b\x01", headers={"Content-Encoding": "br"}))
    server.page("/good", page("Good"))
    with RawServer(TRICKLING) as raw:
        links = ["/rot13", "/bomb", "/broken", raw.url("/slow"), "/brotli", "/good"]
        server.page("/", page("Start", *links))

        result = tool(IMPATIENT).run(make_context(inputs={"url": server.url("/"), "max_pages": 10}))

    read = [server.url(path) for path in ("/", "/rot13", "/bomb", "/good")]
    assert [p["url"] for p in result.data["pages"]] == read
    brotli = (
        f"{server.url('/brotli')} uses the content encoding 'br', which web_extract cannot read"
    )
    assert result.data["skipped"] == [
        {"url": server.url("/broken"), "reason": f"{server.url('/broken')} answered HTTP 500"},
        {"url": raw.url("/slow"), "reason": "Connection timeout"},
        {"url": server.url("/brotli"), "reason": brotli},
    ]
    assert result.data["truncated"] is True
    assert result.summary.endswith(", 3 skipped")
    assert result.content.endswith(
        "\n\nSkipped pages:"
        f"\n- {server.url('/broken')}: {server.url('/broken')} answered HTTP 500"
        f"\n- {raw.url('/slow')}: Connection timeout"
        f"\n- {server.url('/brotli')}: {brotli}"
    )


def test_unexpected_error_on_a_linked_page_is_skipped_but_not_on_the_first(
    server: LocalServer, make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug hit on a linked page skips that page; hit on the first page, it propagates."""
    real_extract = web_module.extract

    def extract(page: FetchedPage) -> PageContent:
        if page.url.endswith("/explode"):
            raise RuntimeError("parser bug")
        return real_extract(page)

    monkeypatch.setattr(web_module, "extract", extract)
    server.page("/", page("Start", "/explode", "/fine"))
    server.page("/explode", page("Explode"))
    server.page("/fine", page("Fine"))

    result = tool().run(make_context(inputs={"url": server.url("/"), "max_pages": 3}))

    assert [p["title"] for p in result.data["pages"]] == ["Start", "Fine"]
    assert result.data["skipped"] == [
        {"url": server.url("/explode"), "reason": "unexpected RuntimeError"}
    ]
    with pytest.raises(RuntimeError, match="parser bug"):
        tool().run(make_context(inputs={"url": server.url("/explode")}))


# --- Addresses: IPv6 forms that lead somewhere private --------------------------------------


@pytest.mark.parametrize(
    ("address", "policy", "allowed"),
    [
        ("8.8.8.8", WebPolicy(), True),
        ("2606:4700::1111", WebPolicy(), True),
        ("::ffff:8.8.8.8", WebPolicy(), True),
        ("::ffff:10.0.0.1", WebPolicy(), False),
        ("2002:808:808::1", WebPolicy(), True),
        ("2002:a00:1::1", WebPolicy(), False),
        ("2002:a9fe:a9fe::1", WebPolicy(), False),
        ("2002:7f00:1::1", LOOPBACK, False),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", WebPolicy(), True),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", WebPolicy(), False),
        ("2001:0:a00:1:8000:63bf:f7f7:f7f7", WebPolicy(), False),
        ("64:ff9b::808:808", WebPolicy(), True),
        ("64:ff9b::a00:1", WebPolicy(), False),
        ("64:ff9b::a9fe:a9fe", WebPolicy(), False),
        ("64:ff9b:1::808:808", WebPolicy(), False),
        ("::8.8.8.8", WebPolicy(), False),
        ("::10.0.0.1", WebPolicy(), False),
        ("fec0::1", WebPolicy(), False),
        ("fe80::1", WebPolicy(), False),
        ("fc00::1", WebPolicy(), False),
        ("ff02::1", WebPolicy(), False),
        ("::", WebPolicy(), False),
        ("100.64.0.1", WebPolicy(), False),
        ("::1", LOOPBACK, True),
        ("::ffff:127.0.0.1", LOOPBACK, True),
    ],
    ids=[
        "ipv4-public", "ipv6-public", "mapped-public", "mapped-private", "6to4-public",
        "6to4-private", "6to4-metadata", "6to4-loopback-never", "teredo-public",
        "teredo-private-client", "teredo-private-server", "nat64-public", "nat64-private",
        "nat64-metadata", "nat64-local-use", "ipv4-compatible-public", "ipv4-compatible-private",
        "site-local", "link-local", "unique-local", "multicast", "unspecified", "shared-cgnat",
        "loopback-allowed", "mapped-loopback-allowed",
    ],
)  # fmt: skip
def test_public_address_table(address: str, policy: WebPolicy, allowed: bool) -> None:
    """6to4, Teredo and NAT64 are judged by the IPv4 address they lead to; site-local,
    IPv4-compatible and local-use NAT64 addresses are refused outright."""
    if allowed:
        assert len(check_address(address, 80, policy)) == 1
    else:
        with pytest.raises(ToolError, match="resolves to a private/loopback address"):
            check_address(address, 80, policy)


# --- Bounded strings: what a hostile page controls is clipped -------------------------------


def test_strings_from_a_hostile_page_are_clipped(
    server: LocalServer, make_context: MakeContext
) -> None:
    """A 1 MB title, 10 KB link texts, overlong or broken links, 5,000 links: a bounded result."""
    overlong = "/" + "a" * MAX_URL_LENGTH
    anchors = "".join(f'<a href="/p{i}">{"x" * 10_000}</a>' for i in range(30))
    anchors += "".join(f'<a href="/q{i}">{i}</a>' for i in range(5000))
    html = (
        f"<html><head><title>{'T' * 1_000_000}</title></head><body>"
        f'<base href="http://[bad/"><a href="http://[oops/">unparseable</a>'
        f'<a href="{overlong}">long</a><p>{"w" * 100_000}</p>{anchors}</body></html>'
    )
    server.page("/", html)

    result = tool().run(make_context(inputs={"url": server.url("/")}))

    assert len(result.title) == 300
    assert len(result.data["pages"][0]["title"]) == 300
    assert len(result.summary) < 400
    assert len(result.preview) <= 1000
    assert len(result.data["links"]) == 20
    assert all(len(link["text"]) <= 200 for link in result.data["links"])
    assert result.data["links"][0]["url"] == server.url("/p0")  # the bad ones are dropped


def test_a_crawl_of_link_heavy_pages_saves_a_state_that_fits_one_document(
    server: LocalServer, make_context: MakeContext
) -> None:
    """Ten pages sharing a 400-link sidebar of long URLs: the saved state keeps the links a
    result shows and the queue the attempts left can reach, and fits Firestore's 1 MiB."""
    sidebar = "".join(f'<a href="/p/{i}/{"x" * 300}">link {i}</a>' for i in range(400))
    for n in range(12):
        server.page(
            f"/p/{n}/{'x' * 300}", f"<html><body><nav>{sidebar}</nav><p>page {n}</p></body></html>"
        )
    server.page("/", f"<html><body><nav>{sidebar}</nav><p>start</p></body></html>")
    saved: list[dict] = []
    context = replace(
        make_context(inputs={"url": server.url("/"), "max_pages": 10}), save=saved.append
    )

    tool().run(context)

    assert document_size("missions/m/private/checkpoint", saved[-1]) < DOCUMENT_BUDGET
    assert len(saved[-1]["queue"]) <= saved[-1]["attempts_left"]


def test_text_the_basic_extractor_keeps_cannot_be_markdown(
    server: LocalServer, make_context: MakeContext
) -> None:
    """A page for the basic extractor (too many elements) whose text reads like Markdown
    links and headings: its lines come out escaped, shown as they are."""
    filler = "<span>w</span>" * 31_000
    html = (
        "<html><body><p>[Sign in again](javascript:alert(1))</p><p># Not a heading</p>"
        f"<p>&lt;img src=x onerror=alert(1)&gt;</p>{filler}</body></html>"
    )
    server.page("/many", html)

    result = tool().run(make_context(inputs={"url": server.url("/many")}))

    rendered = MarkdownIt("commonmark").render(result.content)
    assert 'href="javascript:' not in rendered and "<img" not in rendered
    assert "<h1>Not a heading</h1>" not in rendered
    assert "[Sign in again](javascript:alert(1))" in rendered
