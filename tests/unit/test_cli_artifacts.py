"""How the `buddy` CLI prints an artifact (`show`, the end of a watch, `artifact`): rendered by
its format on a terminal, its text when piped, the document with --json; and never a control
character from its content. The API is an httpx.MockTransport, the terminal a recording
rich Console put in place of the CLI's."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import httpx
import pytest
from rich.console import Console
from rich.markdown import Markdown
from typer.testing import CliRunner

from buddy import cli

from .test_client import FakeListener, client_with, mission_doc, step

WIDTH = 100
# What rich itself writes on a terminal: colours and styles (SGR), nothing else.
SGR = re.compile(r"\x1b\[[0-9;]*m")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

PAGE = """## Example Domain
https://example.com/

# Results

Read [the docs](https://docs.example.com/a) or run `buddy show`.

- first point
- second point

| name | value |
|---|---|
| alpha | 1 |
| beta | 22 |

```python
print("hi")
```
"""
SERIES = {
    "columns": ["expression", "result"],
    "rows": [{"expression": "2+2", "result": 4}, {"expression": "10*100", "result": "1,000"}],
}
SERIES_CONTENT = "| expression | result |\n|---|---|\n| 2+2 | 4 |\n| 10*100 | 1,000 |"
HITS = [
    {
        "rank": 1,
        "url": "https://a.example/guide",
        "title": "The guide",
        "snippet": "Everything about it",
        "score": 0.9,
    },
    {"rank": 2, "url": "https://b.example/", "title": "Another page", "snippet": "", "score": 0.5},
]
SEARCH_CONTENT = (
    "1. [The guide](https://a.example/guide)\n   Everything about it\n"
    "2. [Another page](https://b.example/)"
)


def artifact(fmt: str | None, content: str, **fields: Any) -> dict[str, Any]:
    """An artifact document as GET /missions/{id}/artifact answers it (`fmt` None: one made
    before formats, which has no `format`)."""
    document: dict[str, Any] = {
        "artifact_id": "a_m_1",
        "mission_id": "m_1",
        "owner_uid": "u_1",
        "tool": "web_extract",
        "type": "web_page",
        "title": "Example Domain",
        "summary": "1 page",
        "content": content,
        "preview": content[:100],
        "data": {},
        "created_at": "2025-01-01T00:00:00Z",
        "truncated": False,
        **fields,
    }
    if fmt is not None:
        document["format"] = fmt
    return document


MISSION = {
    "mission_id": "m_1",
    "owner_uid": "u_1",
    "objective": "extract https://example.com/",
    "scope": {"allowed_domains": ["example.com"]},
    "budget_usd": 0.5,
    "tool": "web_extract",
    "inputs": {},
    "status": "completed",
    "created_at": "2025-01-01T00:00:00Z",
    "execution_record": {
        "attempt": 1,
        "result_summary": "Extracted 1 page",
        "artifact_reference": {"artifact_id": "a_m_1", "title": "Example Domain", "type": "page"},
        "progress_tracker": {"progress_percent": 100},
    },
}
PROGRESS = {
    "mission_id": "m_1",
    "status": "completed",
    "progress_percent": 100,
    "current_step": None,
    "completed_steps": [],
    "elapsed_seconds": 2.0,
    "estimated_time_remaining": 0.0,
    "stalled": False,
}


class ArtifactApi:
    """GET /missions/m_1 (completed), its /progress and its /artifact (404 when None)."""

    def __init__(self, document: dict[str, Any] | None) -> None:
        self.document = document

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/artifact"):
            if self.document is None:
                body = {"error": {"code": "not_found", "message": "Mission m_1 not found"}}
                return httpx.Response(404, json=body)
            return httpx.Response(200, json=self.document)
        if path.endswith("/progress"):
            return httpx.Response(200, json=PROGRESS)
        return httpx.Response(200, json=MISSION)


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Console:
    """A colour terminal 100 columns wide in place of the CLI's stdout console; it records
    what it shows (export_text) and keeps the bytes written (file)."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = Console(
        file=io.StringIO(),
        force_terminal=True,
        color_system="standard",
        width=WIDTH,
        record=True,
        highlight=False,
        soft_wrap=True,
    )
    monkeypatch.setattr(cli, "console", terminal)
    return terminal


def buddy(monkeypatch: pytest.MonkeyPatch, document: dict[str, Any] | None, *args: str) -> Any:
    """Runs `buddy ARGS` against an API holding `document` as m_1's artifact."""
    client = client_with(ArtifactApi(document))
    monkeypatch.setattr(cli, "_client", lambda: client)
    return CliRunner().invoke(cli.app, list(args))


def shown(screen: Console) -> str:
    """What the terminal shows, lines without their padding."""
    text = screen.export_text(clear=False, styles=False)
    return "\n".join(line.rstrip() for line in text.splitlines())


def written(screen: Console) -> str:
    file = screen.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def rich_renders(renderable: Any) -> str:
    """The text rich shows for `renderable` on a terminal as wide as the screen fixture."""
    reference = Console(width=WIDTH, force_terminal=True, record=True, file=io.StringIO())
    reference.print(renderable)
    text = reference.export_text(styles=False)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


# Control characters


@pytest.mark.parametrize(
    ("hostile", "safe"),
    [
        ("a\x1b[2J\x1b[31mred", "a[2J[31mred"),
        (
            "\x1b]8;;https://evil.test\x1b\\click\x1b]8;;\x1b\\",
            "]8;;https://evil.test\\click]8;;\\",
        ),
        ("copy\x1b]52;c;ZXZpbA==\x07", "copy]52;c;ZXZpbA=="),
        ("safe\rEVIL", "safe\nEVIL"),
        ("line\r\nnext", "line\nnext"),
        ("ab\x08\x08xy", "abxy"),
        ("8-bit \x9b31m csi, \x9d osc, del \x7f, nul \x00", "8-bit 31m csi,  osc, del , nul "),
        ("keeps\ttabs\nand newlines", "keeps\ttabs\nand newlines"),
        ("invoice_\u202efdp.exe and \u2066x\u2069", "invoice_fdp.exe and x"),
    ],
    ids=["csi", "osc8", "osc52", "cr-overwrite", "crlf", "backspace", "c1-del-nul", "kept", "bidi"],
)
def test_printable_drops_control_characters_but_newlines_and_tabs(hostile: str, safe: str) -> None:
    """ESC (so every CSI/OSC sequence), BEL, BS, C1 codes, DEL and NUL go; a CR becomes a
    newline, so that no text overwrites other text; tab and newline stay."""
    assert cli.printable(hostile) == safe


HOSTILE = "Title \x1b[2J\x1b]0;pwned\x07 \x1b]52;c;ZXZpbA==\x07 \x9b6n end\rOVER"


@pytest.mark.parametrize(
    "document",
    [
        artifact("markdown", f"## {HOSTILE}\n\n[{HOSTILE}](https://x.test/\x1b[8m)\n\n- {HOSTILE}"),
        artifact("text", HOSTILE),
        artifact("json", json.dumps({"k": HOSTILE, HOSTILE: [HOSTILE]}, ensure_ascii=False)),
        artifact("table", "", data={"table": {"columns": [HOSTILE], "rows": [{HOSTILE: HOSTILE}]}}),
        artifact(
            "markdown",
            HOSTILE,
            type="search_results",
            data={"results": [{"rank": 1, "url": HOSTILE, "title": HOSTILE, "snippet": HOSTILE}]},
        ),
        artifact(None, HOSTILE, title=HOSTILE),
    ],
    ids=["markdown", "text", "json", "table", "search-results", "title-and-legacy"],
)
@pytest.mark.parametrize("command", ["show", "artifact"])
def test_no_control_character_of_an_artifact_reaches_the_terminal(
    monkeypatch: pytest.MonkeyPatch, screen: Console, document: dict[str, Any], command: str
) -> None:
    """Escape sequences (screen clears, window titles, OSC 52 clipboard writes, 8-bit CSI)
    and CR overwrites in an artifact's title, content or data are printed without their
    control characters, whatever the format: all that reaches the terminal is rich's own
    styling."""
    result = buddy(monkeypatch, document, command, "m_1")
    assert result.exit_code == 0, result.output
    out = written(screen)
    assert "Title" in out and "end" in out  # the content is there
    assert CONTROL.findall(SGR.sub("", out).replace("\n", "")) == []


@pytest.mark.parametrize(
    "args",
    [["show", "m_1"], ["artifact", "m_1"], ["artifact", "m_1", "--raw"]],
    ids=["show", "artifact", "artifact-raw"],
)
def test_no_control_character_reaches_a_pipe_either(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """Piped, the content is its text, control characters taken out too (a script's output
    often ends on a terminal); the exact bytes are what --json gives."""
    result = buddy(monkeypatch, artifact("markdown", f"# Report\n\n{HOSTILE}\n"), *args)
    assert result.exit_code == 0, result.output
    assert CONTROL.findall(result.output.replace("\n", "")) == []
    assert "Title [2J]0;pwned ]52;c;ZXZpbA== 6n end\nOVER" in result.output


# On a terminal, by format


def test_markdown_is_rendered_as_rich_renders_it_not_printed_as_source(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """Headings, lists, links, code and a pipe table come out rendered: no `#`, `|` or `- `
    of the source, bullets and a table rule instead, each link's URL beside its text."""
    result = buddy(monkeypatch, artifact("markdown", PAGE), "artifact", "m_1")
    assert result.exit_code == 0, result.output
    text = shown(screen)
    assert rich_renders(Markdown(PAGE, hyperlinks=False)) in text
    assert "#" not in text and "|" not in text and "- first" not in text
    assert "Example Domain" in text and "Results" in text
    assert "• first point" in text
    assert re.search(r"name\s+value", text) and re.search(r"beta\s+22", text)
    assert "─" in text  # the table's header rule
    assert "the docs (https://docs.example.com/a)" in text
    assert 'print("hi")' in text and "```" not in text


def test_a_table_artifact_is_a_rich_table_with_numbers_on_the_right(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """format "table" shows data.table's columns and rows (maps by column) as a table, not
    its Markdown source; a column of numbers is aligned on the right."""
    document = artifact(
        "table", SERIES_CONTENT, type="calculations", tool="calculate", data={"table": SERIES}
    )
    result = buddy(monkeypatch, document, "artifact", "m_1")
    assert result.exit_code == 0, result.output
    lines = shown(screen).splitlines()
    assert "|" not in "\n".join(lines)
    header = next(line for line in lines if "expression" in line)
    assert re.fullmatch(r"expression\s+result", header.strip())
    rows = [line for line in lines if line.startswith(("2+2", "10*100"))]
    assert [row.split() for row in rows] == [["2+2", "4"], ["10*100", "1,000"]]
    assert len({len(row) for row in rows}) == 1  # "4" and "1,000" end in the same column


def test_a_table_whose_data_is_missing_shows_its_markdown_table(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """A "table" artifact without a usable data.table still shows a table: its content, the
    same table as Markdown, rendered."""
    document = artifact("table", SERIES_CONTENT, data={"table": {"columns": "x"}})
    assert buddy(monkeypatch, document, "artifact", "m_1").exit_code == 0
    text = shown(screen)
    assert "|" not in text and re.search(r"10\*100\s+1,000", text)


def test_json_is_pretty_and_highlighted(monkeypatch: pytest.MonkeyPatch, screen: Console) -> None:
    """format "json" is indented and coloured (keys, strings, numbers differently)."""
    document = artifact("json", '{"pages": [{"url": "https://x.test", "words": 12}], "ok": true}')
    assert buddy(monkeypatch, document, "artifact", "m_1").exit_code == 0
    text = shown(screen)
    assert '  "pages": [\n    {\n      "url": "https://x.test",\n      "words": 12' in text
    out = written(screen)
    key = re.search(r'(\x1b\[[0-9;]*m)"pages"', out)
    number = re.search(r"(\x1b\[[0-9;]*m)12\b", out)
    assert key and number and key.group(1) != number.group(1)


@pytest.mark.parametrize(
    "content",
    ["{not json", "[" * 100_000 + "]" * 100_000],
    ids=["invalid", "nested-deeper-than-python-recurses"],
)
def test_json_that_does_not_parse_is_shown_as_text(
    monkeypatch: pytest.MonkeyPatch, screen: Console, content: str
) -> None:
    """Content that is not JSON (or too deep to parse) is shown as it is, no error."""
    result = buddy(monkeypatch, artifact("json", content), "artifact", "m_1")
    assert result.exit_code == 0, result.output
    assert content[:50] in shown(screen).replace("\n", "")


@pytest.mark.parametrize("fmt", ["text", None], ids=["text", "legacy-without-format"])
def test_text_is_printed_as_is_and_markup_is_not_read(
    monkeypatch: pytest.MonkeyPatch, screen: Console, fmt: str | None
) -> None:
    """format "text" (and a document from before formats) is its content verbatim: `#`
    stays, and rich markup like [bold] is text, not a style."""
    content = "# not a heading\n[bold]literal[/bold] and [link=https://x.test]x[/link]"
    assert buddy(monkeypatch, artifact(fmt, content), "artifact", "m_1").exit_code == 0
    assert content in shown(screen)


def test_search_results_are_a_ranked_list_of_title_url_and_snippet(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """type search_results: each result's rank, title, URL and snippet, in rank order."""
    document = artifact(
        "markdown",
        SEARCH_CONTENT,
        type="search_results",
        tool="web_search",
        data={"query": "guide", "provider": "fake", "results": HITS},
    )
    assert buddy(monkeypatch, document, "artifact", "m_1").exit_code == 0
    lines = shown(screen).splitlines()
    start = lines.index("1. The guide")
    assert lines[start : start + 6] == [
        "1. The guide",
        "   https://a.example/guide",
        "   Everything about it",
        "",
        "2. Another page",
        "   https://b.example/",
    ]


# Bounds: `show` and a watch's end cut; `artifact` prints all


def test_show_on_a_terminal_cuts_a_long_artifact_and_says_how_to_see_all(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """`buddy show` renders the first 40 lines of the artifact, then names `buddy artifact
    ID`; `buddy artifact ID` prints all of it."""
    content = "\n".join(f"- item {i}" for i in range(100))
    result = buddy(monkeypatch, artifact("markdown", content), "show", "m_1")
    assert result.exit_code == 0, result.output
    text = shown(screen)
    items = re.findall(r"• item (\d+)", text)
    assert items == [str(i) for i in range(cli.SHOWN_LINES)]
    assert text.splitlines()[-1] == "… cut here: buddy artifact m_1 shows all of it"
    assert "Mission m_1: completed (100%)" in text
    screen.export_text()  # clears what it recorded
    assert buddy(monkeypatch, artifact("markdown", content), "artifact", "m_1").exit_code == 0
    assert re.findall(r"• item (\d+)", shown(screen)) == [str(i) for i in range(100)]
    assert "cut here" not in shown(screen)


def test_show_renders_only_the_start_of_a_huge_artifact(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """A 1 MB artifact is cut before rendering: `show` shows its start at once."""
    content = "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(5000))
    assert len(content) > 1_000_000
    body, cut = cli.artifact_body(artifact("markdown", content), cli.SHOWN_LINES)
    assert cut
    assert isinstance(body, Markdown) and len(body.markup) <= 20_000
    assert buddy(monkeypatch, artifact("markdown", content), "show", "m_1").exit_code == 0
    assert "Paragraph 0 word" in shown(screen)
    assert shown(screen).endswith("buddy artifact m_1 shows all of it")


def test_a_truncated_artifact_says_it_was_cut(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """An artifact cut to its size limit when made says so under its content."""
    assert (
        buddy(monkeypatch, artifact("text", "start", truncated=True), "show", "m_1").exit_code == 0
    )
    assert shown(screen).endswith(
        "start\n(cut to its size limit when it was made: the source was longer)"
    )


# Not a terminal, --raw, --json


def test_piped_show_prints_the_whole_content_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal `show` ends with the title and the content as stored (Markdown source,
    not cut, however long), so that scripts get text."""
    content = PAGE + "\n".join(f"- item {i}" for i in range(100))
    result = buddy(monkeypatch, artifact("markdown", content), "show", "m_1")
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"\nExample Domain\n{content}\n")
    assert "\x1b" not in result.output


@pytest.mark.parametrize(
    "document",
    [
        artifact("markdown", PAGE),
        artifact("table", SERIES_CONTENT, data={"table": SERIES}),
        artifact("json", '{"a": 1}'),
        artifact("markdown", SEARCH_CONTENT, type="search_results", data={"results": HITS}),
        artifact("text", "a\tb\n"),
    ],
    ids=["markdown", "table", "json", "search-results", "text-with-tab"],
)
def test_piped_artifact_is_exactly_its_content(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, Any]
) -> None:
    """`buddy artifact ID | …` prints the content as stored and nothing else (tabs kept)."""
    result = buddy(monkeypatch, document, "artifact", "m_1")
    assert result.exit_code == 0, result.output
    assert result.output == document["content"].rstrip("\n") + "\n"


def test_raw_on_a_terminal_prints_the_markdown_source(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """`buddy artifact ID --raw` prints the Markdown source even on a terminal."""
    assert buddy(monkeypatch, artifact("markdown", PAGE), "artifact", "m_1", "--raw").exit_code == 0
    assert written(screen) == PAGE


@pytest.mark.parametrize(
    "args", [["artifact", "m_1", "--json"], ["--json", "artifact", "m_1"]], ids=["option", "global"]
)
def test_json_prints_the_artifact_document_as_the_api_returns_it(
    monkeypatch: pytest.MonkeyPatch, screen: Console, args: list[str]
) -> None:
    """--json is the API's artifact document, content and all, control characters as JSON
    escapes: even on a terminal nothing is rendered."""
    document = artifact("markdown", f"# {HOSTILE}", data={"pages": [{"url": "https://x.test"}]})
    result = buddy(monkeypatch, document, *args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == document
    assert "\x1b" not in result.output
    assert written(screen) == ""


def test_show_json_holds_the_whole_artifact(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy show --json` gives the mission, its progress and its artifact document."""
    document = artifact("markdown", PAGE)
    result = buddy(monkeypatch, document, "show", "m_1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["artifact"] == document


def test_artifact_of_a_mission_without_one_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No artifact (yet): one `error:` line and exit status 1."""
    result = buddy(monkeypatch, None, "artifact", "m_1")
    assert result.exit_code == 1
    assert result.output == "error: Mission m_1 not found\n"


# The end of a watch


def finished_run(summary: str, title: str = "Example Domain") -> list[dict[str, Any]]:
    reference = {"artifact_id": "a_m_1", "title": title, "type": "web_page"}
    return [
        mission_doc("running", 55, step(5, "tool_execution", 55, "started", "Fetching"), 4),
        mission_doc(
            "completed", 100, None, 7, result_summary=summary, artifact_reference=reference
        ),
    ]


def watch(monkeypatch: pytest.MonkeyPatch, document: dict[str, Any] | None, summary: str) -> Any:
    title = document["title"] if document else "Example Domain"
    run = finished_run(summary, title)
    client = client_with(ArtifactApi(document), listener=FakeListener(run))
    monkeypatch.setattr(cli, "_client", lambda: client)
    return CliRunner().invoke(cli.app, ["watch", "m_1"])


def test_a_watch_ends_with_the_artifact_rendered(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """A watched mission that completes prints its outcome, then its artifact rendered."""
    result = watch(monkeypatch, artifact("markdown", PAGE), "Extracted 1 page")
    assert result.exit_code == 0, result.output
    text = shown(screen)
    assert "Completed in 1.5s: Extracted 1 page\n\nExample Domain\n" in text
    assert rich_renders(Markdown(PAGE, hyperlinks=False)) in text
    assert "(buddy show m_1)" not in text


def test_a_piped_watch_ends_with_the_artifact_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped, a watch's output ends with the artifact's title and content as text."""
    result = watch(monkeypatch, artifact("markdown", PAGE), "Extracted 1 page")
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"Completed in 1.5s: Extracted 1 page\n\nExample Domain\n{PAGE}")


def test_a_watch_json_stream_stays_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy --json watch` prints snapshots only: the artifact is `buddy artifact --json`'s."""
    client = client_with(
        ArtifactApi(artifact("markdown", PAGE)), listener=FakeListener(finished_run("x"))
    )
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["--json", "watch", "m_1"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["status"] for line in result.output.splitlines()] == [
        "running",
        "completed",
    ]


def test_a_watch_does_not_repeat_what_the_result_line_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A calculation's artifact ("14") ends its result line: the watch points to it
    instead of printing it again."""
    document = artifact("text", "14", title="2*(3+4) = 14", type="calculation")
    result = watch(monkeypatch, document, "2*(3+4) = 14")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == [
        "Completed in 1.5s: 2*(3+4) = 14",
        "Artifact: 2*(3+4) = 14 (buddy show m_1)",
    ]


def test_a_watch_whose_artifact_cannot_be_read_still_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should reading the artifact fail, the watch still exits 0 and points to it."""
    result = watch(monkeypatch, None, "Extracted 1 page")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "Artifact: Example Domain (buddy show m_1)"


class Unrenderable:
    """A renderer that trips over its content, as a bug in one might."""

    def __init__(self, markup: str, **_: Any) -> None:
        self.markup = markup

    def __rich_console__(self, *_: Any) -> Any:
        raise RuntimeError("Couldn't process markdown table.")


def test_content_the_renderer_trips_over_is_shown_as_text(
    monkeypatch: pytest.MonkeyPatch, screen: Console
) -> None:
    """Should rendering fail, the artifact is printed as text and the command still
    succeeds (a watched mission that completed exits 0)."""
    monkeypatch.setattr(cli, "Markdown", Unrenderable)
    result = watch(monkeypatch, artifact("markdown", PAGE), "Extracted 1 page")
    assert result.exit_code == 0, result.output
    assert shown(screen).endswith("Completed in 1.5s: Extracted 1 page\n\nExample Domain")
    assert written(screen).endswith(PAGE)
