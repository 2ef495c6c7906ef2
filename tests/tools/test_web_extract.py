"""web_extract against a real HTTP server on 127.0.0.1: extraction, crawling, fetch guards."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from buddy.tools import ToolCancelled, ToolError
from buddy.tools.web import (
    WebExtractInputs,
    WebExtractTool,
    WebPolicy,
    check_address,
    host_in_scope,
)

from ..localserver import LocalServer, Reply
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
    assert "Heading\nFirst paragraph with bold words.\nSecond paragraph." in result.content
    for absent in ("secretScript", "Site header", "Site footer", "color: red"):
        assert absent not in result.content
    assert result.data["links"] == [
        {"url": server.url("/home"), "text": "Home"},
        {"url": server.url("/docs/next.html"), "text": "Next page"},
        {"url": "https://docs.example/guide", "text": "Guide"},
    ]
    assert result.data["url"] == server.url("/docs/article")
    assert result.data["truncated"] is False
    assert result.summary == "The Article: 14 words from 1 page(s)"
    assert result.preview.startswith("Heading\nFirst paragraph")
    assert f"Top links:\n- Home — {server.url('/home')}" in result.preview


@pytest.mark.parametrize(
    ("body", "content_type", "title", "text"),
    [
        ("<html><body><h1>Only  heading</h1><p>Body</p></body></html>", "text/html",
         "Only heading", "Only heading\nBody"),
        ("<html><body><article><p>In article</p></article><p>Outside</p></body></html>",
         "application/xhtml+xml", None, "In article"),
        ("plain   text\n\n  as is", "text/plain; charset=utf-8", None, "plain   text\n\n  as is"),
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
    """Title falls back to <h1> then the URL; <article> beats <body>; plain text is kept."""
    server.route("/p", Reply(body=body, content_type=content_type))

    result = tool().run(make_context(inputs={"url": server.url("/p")}))

    assert result.title == (title or server.url("/p"))
    assert result.content.endswith(f"{server.url('/p')}\n\n{text}")


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
    assert "## A\n" + server.url("/a") in result.content
    assert result.summary == "Start: 11 words from 3 page(s)"


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
    [("/loop", "redirected more than 5 times"), ("file:///etc/passwd", "Only http and https")],
    ids=["redirect-loop", "non-http-scheme"],
)
def test_bad_redirects_are_refused(
    server: LocalServer, make_context: MakeContext, location: str, message: str
) -> None:
    """Endless redirects and redirects to non-http(s) URLs end in a ToolError."""
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
