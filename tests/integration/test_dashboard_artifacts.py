"""Artifacts in the dashboard, in a real Chromium, rendered by their format: Markdown, tables
and their charts, search results, research reports, JSON and text, and hostile content that
must neither run nor make the dashboard reach the hosts it names.

Most artifacts are written straight into the Firestore emulator for a completed mission of
the signed-in person (as the worker would write them); two come from real missions run
through the pipeline."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from google.cloud import firestore
from playwright.sync_api import Locator, Page, expect

from buddy.adapters.firestore_store import mission_document
from buddy.domain import lifecycle
from buddy.domain.mission import ArtifactReference, ExecutionRecord, Status
from buddy.domain.progress import utc_now

from ..localserver import LocalServer
from .conftest import ARTIFACTS
from .test_dashboard import card, launch, propose

LINK_REL = "noopener noreferrer nofollow"
# Pixels of the canvas inside `figure` drawn in the first chart colour (the bars of the first
# series): a chart with bars drawn, not just an empty canvas.
BAR_PIXELS = """figure => {
  const canvas = figure.querySelector("canvas");
  if (!canvas || !canvas.width) return 0;
  const probe = document.createElement("span");
  probe.style.color = getComputedStyle(figure).getPropertyValue("--chart-1");
  document.body.append(probe);
  const [r, g, b] = getComputedStyle(probe).color.match(/\\d+/g).map(Number);
  probe.remove();
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 255 && data[i] === r && data[i + 1] === g && data[i + 2] === b) count++;
  }
  return count;
}"""
# The longest the page went without drawing a frame until `done` resolved, in ms.
LONGEST_FRAME_GAP = """async (done) => {
  let longest = 0;
  let last = performance.now();
  let running = true;
  const tick = () => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    if (running) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  await done;
  // The frame after the last part: a long last step shows as the gap before it.
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  running = false;
  return longest;
}"""


def uid_of(page: Page) -> str:
    title = page.locator("#auth-status").get_attribute("title") or ""
    assert title.startswith("uid "), title
    return title.removeprefix("uid ")


def store_artifact(
    db: firestore.Client,
    page: Page,
    *,
    type: str,
    content: str,
    format: str | None,
    data: dict[str, Any] | None = None,
    tool: str = "web_extract",
    title: str = "An artifact",
    summary: str = "What it holds.",
    preview: str = "",
) -> str:
    """A completed mission of the page's user and its artifact (`format` None: written before
    artifacts had one); returns the mission's id."""
    uid = uid_of(page)
    mission_id = f"art-{uuid.uuid4().hex[:12]}"
    artifact_id = f"a_{mission_id}"
    now = utc_now()
    proposed = lifecycle.proposed(mission_id, uid, f"show {title}", (), 1.0, tool, {}, now)
    mission = replace(
        proposed,
        status=Status.COMPLETED,
        counted=False,  # written here, not by the store: no aggregate holds it
        approved_at=now,
        queued_at=now,
        started_at=now,
        finished_at=now,
        execution_record=ExecutionRecord(
            status=Status.COMPLETED,
            tool_used=tool,
            artifact_reference=ArtifactReference(artifact_id, title, type),
            result_summary=summary,
        ),
    )
    artifact: dict[str, Any] = {
        "artifact_id": artifact_id,
        "mission_id": mission_id,
        "owner_uid": uid,
        "tool": tool,
        "type": type,
        "title": title,
        "summary": summary,
        "content": content,
        "preview": preview or content[:200],
        "data": data or {},
        "created_at": now.isoformat(),
        "truncated": False,
    }
    if format is not None:
        artifact["format"] = format
    db.collection("artifacts").document(artifact_id).set(artifact)
    db.collection("missions").document(mission_id).set(mission_document(mission))
    return mission_id


def open_artifact(page: Page, mission_id: str, title: str, timeout: float = 10_000) -> Locator:
    """Opens the mission from its card, as a person would, and waits for its artifact to be
    rendered; returns the rendered content."""
    link = card(page, "pipeline", mission_id).locator("a.artifact-link")
    expect(link).to_be_visible(timeout=10_000)
    link.click()
    expect(page.locator("#artifact .title")).to_have_text(title, timeout=10_000)
    body = page.locator("#artifact .artifact-body")
    expect(body).to_have_attribute("aria-busy", "false", timeout=timeout)
    expect(body).to_be_visible()
    expect(page.locator("#artifact .preview")).to_be_hidden()
    return body


def bars_drawn(page: Page, figure: Locator) -> None:
    figure.scroll_into_view_if_needed()
    page.wait_for_function(f"f => ({BAR_PIXELS})(f) > 50", arg=figure.element_handle())


@pytest.fixture
def tracker() -> Iterator[LocalServer]:
    """A server standing for the hosts a hostile artifact names: it records who calls."""
    server = LocalServer()
    server.start()
    yield server
    server.stop()


def test_real_calculations_show_a_result_and_a_charted_table(
    open_dashboard: Callable[[], Page],
) -> None:
    """Missions run through the pipeline: one calculation shows its result as text, a series
    of them a table of expressions and results with a chart of the results."""
    page = open_dashboard()
    single = propose(page, "calculate 6*7")
    launch(page, single)
    series = propose(
        page, "calculate a series", inputs='{"expressions": ["6*7", "1000+234", "10/4"]}'
    )
    launch(page, series)
    for mission_id in (single, series):
        expect(card(page, "pipeline", mission_id)).to_have_attribute(
            "data-status", "completed", timeout=20_000
        )

    body = open_artifact(page, single, "6*7 = 42")
    expect(body.locator("pre")).to_have_text("42")
    expect(page.locator("#artifact .summary")).to_have_text("6*7 = 42")

    body = open_artifact(page, series, "3 calculations")
    expect(body.locator("table th")).to_have_text(["expression", "result"])
    expect(body.locator("table tbody tr").nth(1).locator("td")).to_have_text(["1000+234", "1234"])
    chart = body.locator("figure.artifact-chart")
    expect(chart.locator("figcaption")).to_have_text("Chart: result by expression")
    bars_drawn(page, chart)


PAGE_WITH_A_TABLE = """<html lang="en"><head><title>Listener limits</title></head><body>
<nav><a href="/">Home</a> <a href="/pricing">Pricing</a></nav>
<article><h1>Listener limits</h1>
<p>How many listeners a client keeps open, measured over three releases of the dashboard,
with enough words around the figures that the page reads as an article to the extractor.</p>
<h2>By release</h2>
<table><tr><th>Release</th><th>Listeners</th></tr>
<tr><td>1.0</td><td>12</td></tr><tr><td>1.1</td><td>40</td></tr><tr><td>2.0</td><td>95</td></tr>
</table>
<p>The last release keeps one listener per visible mission, and drops them when hidden.</p>
</article><footer>Footer text</footer></body></html>"""


def test_an_extracted_page_shows_as_markdown_with_its_table_charted(
    open_dashboard: Callable[[], Page], site: LocalServer
) -> None:
    """web_extract through the pipeline: the page's headings and table come out of its
    Markdown rendered, navigation and footer left out, and the numeric table charted."""
    path = f"/limits-{uuid.uuid4().hex[:8]}"
    site.page(path, PAGE_WITH_A_TABLE)
    page = open_dashboard()
    mission_id = propose(page, f"extract {site.url(path)}", domains="127.0.0.1")
    launch(page, mission_id)
    expect(card(page, "pipeline", mission_id)).to_have_attribute(
        "data-status", "completed", timeout=20_000
    )

    body = open_artifact(page, mission_id, "Listener limits")
    expect(body.locator("h2", has_text="By release")).to_be_visible()
    expect(body.locator("table tbody tr")).to_have_count(3)
    expect(body).not_to_contain_text("Footer text")
    expect(body).not_to_contain_text("Pricing")
    chart = body.locator("figure.artifact-chart")
    expect(chart).to_have_count(1)
    bars_drawn(page, chart)


def test_a_research_asking_for_two_hosts_is_allowed_from_its_card_and_reports(
    open_dashboard: Callable[[], Page], site: LocalServer
) -> None:
    """A research whose results sit on two other hosts pauses asking for both; "Allow … and
    resume" adds both and the report comes back with its citations linked."""
    tag = uuid.uuid4().hex[:8]
    path = f"/research-{tag}"
    site.page(path, PAGE_WITH_A_TABLE)
    # Two other names of this machine's loopback: the same local site on two more hosts.
    hosts = ["localhost", "127.1"]
    site.json(
        "/search",
        {
            "results": [
                {"url": f"http://{host}:{site.port}{path}?{n}", "title": f"Source {n}"}
                for n, host in enumerate(hosts, 1)
            ]
        },
    )
    page = open_dashboard()
    page.get_by_label("Ask me").check()
    mission_id = propose(page, f"research listener limits {tag}", domains="127.0.0.1")
    launch(page, mission_id)
    paused = card(page, "paused", mission_id)
    expect(paused).to_have_attribute("data-status", "paused", timeout=20_000)
    paused.get_by_role("button", name="Allow localhost, 127.1 and resume").click()
    expect(card(page, "pipeline", mission_id)).to_have_attribute(
        "data-status", "completed", timeout=20_000
    )

    body = open_artifact(page, mission_id, f"Research: listener limits {tag}")
    citations = body.locator("a", has_text="[2]")
    expect(citations.first).to_have_attribute("href", f"http://127.1:{site.port}{path}?2")
    expect(body.locator("h3")).to_have_count(2)


def test_markdown_shows_headings_lists_links_and_tables_with_a_chart_for_numbers(
    open_dashboard: Callable[[], Page], db: firestore.Client
) -> None:
    """A page's Markdown is rendered: headings, lists, links that open apart, and tables; the
    table of numbers gets a bar chart, the table of words none; a "#" link stays in the page."""
    page = open_dashboard()
    markdown = "\n".join(
        [
            "## Cities of the north",
            "",
            "Read the [census](https://stats.example/census) or [skip to the end](#the-end).",
            "",
            "- Oslo",
            "- Helsinki",
            "- Stockholm",
            "",
            "| City | Population | Growth |",
            "|---|---:|---:|",
            "| Oslo | 709,000 | 1.2% |",
            "| Helsinki | 658,000 | 0.8% |",
            "| Stockholm | 984,000 | -0.5% |",
            "",
            "| Word | Meaning |",
            "|---|---|",
            "| fjord | an inlet |",
            "| skerry | a rocky islet |",
            "",
            "### The end",
        ]
    )
    mission_id = store_artifact(
        db, page, type="web_page", content=markdown, format="markdown", title="Cities"
    )
    body = open_artifact(page, mission_id, "Cities")
    expect(body.get_by_role("heading", name="Cities of the north", level=2)).to_be_visible()
    expect(body.locator("ul > li")).to_have_text(["Oslo", "Helsinki", "Stockholm"])
    census = body.get_by_role("link", name="census")
    expect(census).to_have_attribute("href", "https://stats.example/census")
    expect(census).to_have_attribute("target", "_blank")
    expect(census).to_have_attribute("rel", LINK_REL)
    tables = body.locator("table")
    expect(tables).to_have_count(2)
    expect(tables.first.locator("tbody tr")).to_have_count(3)
    expect(tables.first.locator("th")).to_have_text(["City", "Population", "Growth"])

    charts = body.locator("figure.artifact-chart")
    expect(charts).to_have_count(1)
    expect(charts.locator("figcaption")).to_have_text("Chart: Population, Growth by City")
    # The chart follows the table of numbers, and nothing follows the table of words.
    assert tables.first.evaluate(
        "t => t.closest('.table-wrap').nextElementSibling.matches('figure.artifact-chart')"
    )
    assert tables.last.evaluate(
        "t => !t.closest('.table-wrap').nextElementSibling?.matches('figure')"
    )
    bars_drawn(page, charts.first)

    hash_before = page.evaluate("location.hash")
    body.get_by_role("link", name="skip to the end").click()
    assert page.evaluate("location.hash") == hash_before  # the mission stays open
    expect(page.locator("#artifact .title")).to_have_text("Cities")
    page.screenshot(path=str(ARTIFACTS / "dashboard-artifact-markdown.png"), full_page=True)


def test_a_table_artifact_is_a_table_and_charts_only_numbers(
    open_dashboard: Callable[[], Page], db: firestore.Client
) -> None:
    """Format "table" shows data.table with its columns in order; numbers get a chart labelled
    by the first column of words, a table without numbers gets none."""
    page = open_dashboard()
    numbers = {
        "columns": ["expression", "result"],
        "rows": [
            {"expression": "6*7", "result": "42"},
            {"expression": "1000+234", "result": "1,234"},
            {"expression": "10/4", "result": "2.5"},
        ],
    }
    numeric_id = store_artifact(
        db,
        page,
        type="calculations",
        tool="calculate",
        format="table",
        data={"table": numbers},
        content="| expression | result |\n|---|---|\n| 6*7 | 42 |",
        title="Three sums",
    )
    words = {
        "columns": ["name", "colour"],
        "rows": [{"name": "sky", "colour": "blue"}, {"name": "grass", "colour": "green"}],
    }
    words_id = store_artifact(
        db, page, type="facts", format="table", data={"table": words}, content="", title="Words"
    )

    body = open_artifact(page, numeric_id, "Three sums")
    table = body.locator("table")
    expect(table.locator("th")).to_have_text(["expression", "result"])
    expect(table.locator("tbody tr").nth(1).locator("td")).to_have_text(["1000+234", "1,234"])
    chart = body.locator("figure.artifact-chart")
    expect(chart.locator("figcaption")).to_have_text("Chart: result by expression")
    bars_drawn(page, chart)

    body = open_artifact(page, words_id, "Words")
    expect(body.locator("tbody tr")).to_have_count(2)
    expect(body.locator("tbody tr").first.locator("td")).to_have_text(["sky", "blue"])
    expect(body.locator("figure, canvas")).to_have_count(0)


def test_search_results_are_ranked_links_with_their_snippets(
    open_dashboard: Callable[[], Page], db: firestore.Client
) -> None:
    """A search's results show in rank order, each title a link to its page with its host and
    snippet; a result whose URL is not a web address is no link."""
    page = open_dashboard()
    results = [
        {"rank": 2, "url": "https://b.example/two", "title": "Second", "snippet": "The runner-up."},
        {"rank": 1, "url": "https://a.example/one", "title": "First", "snippet": "The best one."},
        {"rank": 3, "url": "javascript:alert(1)", "title": "Third", "snippet": "A trap."},
    ]
    mission_id = store_artifact(
        db,
        page,
        type="search_results",
        tool="web_search",
        format="markdown",
        data={"query": "best", "provider": "test", "results": results},
        content="1. [First](https://a.example/one)\n   The best one.",
        title="Search: best",
    )
    body = open_artifact(page, mission_id, "Search: best")
    items = body.locator("ol.search-results > li")
    expect(items).to_have_count(3)
    expect(items.locator(".result-title")).to_have_text(["First", "Second", "Third"])
    expect(items.locator(".snippet")).to_have_text(["The best one.", "The runner-up.", "A trap."])
    first = items.first.get_by_role("link", name="First")
    expect(first).to_have_attribute("href", "https://a.example/one")
    expect(first).to_have_attribute("target", "_blank")
    expect(first).to_have_attribute("rel", LINK_REL)
    expect(items.first.locator(".result-host")).to_have_text("a.example")
    expect(items.nth(2).locator("a")).to_have_count(0)


def test_a_research_report_links_its_citations_and_references(
    open_dashboard: Callable[[], Page], db: firestore.Client
) -> None:
    """A research report's [1], [2] link to their sources, and its References are links."""
    page = open_dashboard()
    sources = [
        {"n": 1, "url": "https://one.example/tides", "title": "Tides", "status": "read"},
        {"n": 2, "url": "https://two.example/moon", "title": "The Moon", "status": "read"},
    ]
    report = "\n".join(
        [
            "# Research: why are there tides",
            "## Summary",
            "The Moon pulls the sea [1], and the Sun does a little too [2].",
            "## Sources",
            "### [1] Tides",
            "https://one.example/tides · One · 2024-05-01",
            "",
            "Tides are the rise and fall of the sea.",
            "### [2] The Moon",
            "https://two.example/moon · Two · 2023-01-01",
            "",
            "The Moon is Earth's satellite.",
            "## References",
            "1. [Tides](https://one.example/tides)",
            "2. [The Moon](https://two.example/moon)",
        ]
    )
    mission_id = store_artifact(
        db,
        page,
        type="research_report",
        tool="research",
        format="markdown",
        data={"query": "why are there tides", "summary": "…", "sources": sources},
        content=report,
        title="Research: why are there tides",
    )
    body = open_artifact(page, mission_id, "Research: why are there tides")
    summary = body.locator("p").filter(has_text="The Moon pulls the sea")
    citations = summary.locator("a.citation")
    expect(citations).to_have_text(["[1]", "[2]"])
    expect(citations.first).to_have_attribute("href", "https://one.example/tides")
    expect(citations.last).to_have_attribute("href", "https://two.example/moon")
    expect(citations.first).to_have_attribute("rel", LINK_REL)
    references = body.locator("ol").last.get_by_role("link")
    expect(references).to_have_text(["Tides", "The Moon"])
    expect(references.last).to_have_attribute("href", "https://two.example/moon")
    expect(body.get_by_role("heading", name="Sources", level=2)).to_be_visible()


def test_json_is_pretty_printed_and_text_and_old_artifacts_are_shown_as_written(
    open_dashboard: Callable[[], Page], db: firestore.Client
) -> None:
    """JSON content is shown indented; text, and an artifact written before formats existed,
    are shown in a <pre> exactly as written, tags and all."""
    page = open_dashboard()
    value = {"name": "tide", "levels": [1.5, 2.25], "note": None}
    json_id = store_artifact(
        db, page, type="data", format="json", content=json.dumps(value), title="JSON"
    )
    text = "line one\n  <b>not bold</b>\nline three"
    old_id = store_artifact(db, page, type="text", format=None, content=text, title="Old")

    body = open_artifact(page, json_id, "JSON")
    expect(body.locator("pre")).to_have_text(json.dumps(value, indent=2))
    body = open_artifact(page, old_id, "Old")
    expect(body.locator("pre")).to_have_text(text)
    expect(body.locator("b")).to_have_count(0)


def test_a_hostile_artifact_runs_nothing_and_reaches_no_host(
    open_dashboard: Callable[[], Page], db: firestore.Client, tracker: LocalServer
) -> None:
    """Scripts, event handlers, javascript: and data: links, frames, SVG, forms, styles and
    remote images in an artifact run nothing, open no dialog and make no request to the
    hosts they name; the tags show as the text they are, images as links."""
    page = open_dashboard()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    t = tracker.base_url
    hostile = "\n".join(
        [
            "# Hostile page",
            "",
            '<script>window.__pwned = "script"; alert("script")</script>',
            "",
            f'<img src="{t}/onerror.png" onerror="window.__pwned = \'onerror\'">',
            "",
            f"![a tracking pixel]({t}/pixel.png)",
            "",
            "[click me](javascript:window.__pwned='link') and "
            "[data link](data:text/html,<script>alert(1)</script>)",
            "",
            '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data anchor</a>',
            "",
            f'<iframe src="{t}/frame"></iframe>',
            "",
            "<svg onload=\"window.__pwned='svg'\"><script>window.__pwned='svg'</script></svg>",
            "",
            f'<object data="{t}/object"></object><embed src="{t}/embed">',
            "",
            f'<form action="{t}/form"><button>Send</button></form>',
            "",
            f"<style>body {{ background: url({t}/style.png) }}</style>",
            "",
            f'<video poster="{t}/poster.png" src="{t}/video.mp4"></video>',
            "",
            "| cell | value |",
            "|---|---|",
            "| <span onmouseover=\"window.__pwned='cell'\">hover me</span> | 1 |",
            f'| <img src="{t}/cell.png"> | 2 |',
        ]
    )
    markdown_id = store_artifact(
        db, page, type="web_page", format="markdown", content=hostile, title="Hostile"
    )
    table = {
        "columns": ["name", "value"],
        "rows": [
            {"name": f'<img src="{t}/table.png" onerror="window.__pwned=\'table\'">', "value": 1},
            {"name": "<b onclick=\"window.__pwned='click'\">bold?</b>", "value": 2},
        ],
    }
    table_id = store_artifact(
        db, page, type="facts", format="table", data={"table": table}, content="", title="Cells"
    )

    body = open_artifact(page, markdown_id, "Hostile")
    expect(body.get_by_role("heading", name="Hostile page")).to_be_visible()
    expect(body).to_contain_text('<script>window.__pwned = "script"; alert("script")</script>')
    expect(body).to_contain_text(f'<iframe src="{t}/frame"></iframe>')
    pixel = body.get_by_role("link", name="a tracking pixel")
    expect(pixel).to_have_attribute("href", f"{t}/pixel.png")
    expect(body).to_contain_text("click me")
    forbidden = "script, img, iframe, object, embed, form, button, style, svg, video, input"
    expect(body.locator(forbidden)).to_have_count(0)
    unsafe = body.evaluate(
        """b => [...b.querySelectorAll("*")].flatMap((e) =>
             [...e.attributes].map((a) => a.name + "=" + a.value)
               .filter((a) => /^on|^style=|^src=/.test(a)
                 || (/^href=/.test(a) && !/^href=(https?:|mailto:|#)/.test(a))))"""
    )
    assert unsafe == []
    body.get_by_text("hover me").hover()
    body.get_by_text("click me").click()
    expect(body.locator("figure.artifact-chart")).to_have_count(1)  # the cells' table: 1, 2

    cells = open_artifact(page, table_id, "Cells")
    expect(cells.locator("tbody td").first).to_have_text(
        f'<img src="{t}/table.png" onerror="window.__pwned=\'table\'">'
    )
    cells.get_by_text("bold?").click()
    expect(cells.locator("img, b")).to_have_count(0)

    # The tracker answers this page: what the artifacts would have fetched had time to arrive.
    page.evaluate("url => fetch(url, {mode: 'no-cors'})", f"{t}/control")
    page.wait_for_timeout(500)
    assert [r.path for r in tracker.requests] == ["/control"]
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []


def test_a_megabyte_of_markdown_renders_without_freezing_the_page(
    open_dashboard: Callable[[], Page], db: firestore.Client
) -> None:
    """Close to a MiB of Markdown renders in pieces: the page keeps drawing frames while it
    does, and the last section arrives."""
    page = open_dashboard()
    section = (
        "Lorem ipsum dolor sit amet, *consectetur* adipiscing elit, sed do "
        "[eiusmod](https://example.com/x) tempor incididunt ut labore et dolore magna. "
    ) * 4
    parts = [f"## Part {n}\n\n{section}\n\n- one\n- two\n\n" for n in range(1600)]
    content = "".join(parts)
    assert 900_000 < len(content) < 1_000_000
    mission_id = store_artifact(
        db, page, type="web_page", format="markdown", content=content, title="Long read"
    )
    # Frames are watched from before the click that opens the artifact until its last part.
    page.evaluate(
        f"""() => {{
             const rendered = new Promise((resolve) => {{
               new MutationObserver((_, observer) => {{
                 if (!document.querySelector("#artifact [data-anchor='part-1599']")) return;
                 observer.disconnect();
                 resolve();
               }}).observe(document.getElementById("artifact"), {{childList: true, subtree: true}});
             }});
             window.__longestGap = ({LONGEST_FRAME_GAP})(rendered);
           }}"""
    )
    open_artifact(page, mission_id, "Long read", timeout=60_000)
    gap = page.evaluate("window.__longestGap")
    expect(page.locator("#artifact .artifact-body h2").last).to_have_text("Part 1599")
    assert gap < 500, f"the page drew no frame for {gap:.0f} ms"
