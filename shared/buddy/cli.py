"""`buddy`: the command line of Buddy Missions, built on `buddy.client.BuddyClient`.

    buddy run "calculate 2*(3+4)"          # create, approve, execute and watch it live
    buddy run --ask "calculate 2+2" --budget 0.00005   # pauses and asks to raise the budget
    buddy list --status running
    buddy events m_123 --follow
    buddy artifact m_123                   # the artifact, rendered; piped or --raw: its text
    buddy recipe run calculate --param expression=6*7   # a recipe, by id or name
    buddy rate m_123 5 --comment "spot on"
    buddy stats                            # per tool: outcomes, ratings, what selection learned
    buddy login                            # sign in in the dashboard; the CLI acts as that account
    buddy whoami                           # who the commands act as, on which project
    buddy open m_123                       # that mission in the dashboard, as the same account

Exit status: 0 done (mission completed), 1 mission failed or an API error, 2 mission cancelled
(or a usage error), 3 API unreachable, 4 mission paused (waiting for you: edit and resume it),
130 Ctrl-C while watching (the mission keeps running).
Output is for people on a terminal (colour, a live progress bar) and plain elsewhere; `--json`
prints the API's answers, or JSON lines while watching or following. An artifact (at the end
of a watch, in `show`, `artifact`) is rendered by its format on a terminal and printed as its
text elsewhere; its control characters (terminal escape sequences) are never printed.

A watched mission that pauses stops the watch. When it paused for a limit (its budget, a host
outside its allowed domains), stdin is a terminal and the output is not --json, `buddy` asks
whether to lift it, and on yes edits the mission, resumes it and keeps watching; otherwise it
prints the commands that would, and exits 4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import re
import sys
import time
import webbrowser
from collections.abc import Callable, Generator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.console import Console, RenderableType
from rich.highlighter import JSONHighlighter
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.segment import SegmentLines
from rich.table import Column, Table
from rich.text import Text
from typer.exceptions import TyperException

from buddy import accounts
from buddy import login as browser_login
from buddy.client import (
    PAUSED,
    TERMINAL,
    ApiUnreachable,
    BuddyClient,
    BuddyError,
    MissionNotFound,
    OnLimit,
    Snapshot,
    percent_of,
)

EXIT_PAUSED = 4
EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 2, PAUSED: EXIT_PAUSED}
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
WAITING = {
    "proposed": "waiting to be approved and executed",
    "approved": "waiting to be executed",
    "queued": "waiting for a worker",
}

# soft_wrap: long lines stay whole when output goes to a file or a pipe (rich would cut at 80).
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    # Plain tracebacks with --debug: rich's would show local variables, tokens among them.
    pretty_exceptions_enable=False,
)


@dataclass
class Options:
    api_url: str | None = None
    project: str | None = None
    debug: bool = False
    json: bool = False


OPTIONS = Options()

Json = Annotated[bool, typer.Option("--json", help="Print JSON (JSON lines while watching).")]
Domains = Annotated[
    list[str] | None, typer.Option("--domain", help="A hostname the mission may use (repeat).")
]
Budget = Annotated[float, typer.Option("--budget", help="Budget in USD (0 < x ≤ 100).")]
Tool = Annotated[str | None, typer.Option("--tool", help="Pre-select a tool, e.g. calculate.")]
Inputs = Annotated[
    list[str] | None,
    typer.Option("--input", help="A tool input key=value; values are JSON when they parse."),
]
Ask = Annotated[
    bool,
    typer.Option(
        "--ask", help="At a limit you can lift (budget, domains), pause and ask; don't fail."
    ),
]
Watch = Annotated[bool, typer.Option("--watch", help="Then watch it to the end.")]


class OnLimitChoice(StrEnum):
    FAIL = "fail"
    ASK = "ask"


# Edits and clones: each option left out keeps what the mission has.
Objective = Annotated[str | None, typer.Option("--objective", help="A new objective.")]
NewBudget = Annotated[
    float | None, typer.Option("--budget", help="A new budget in USD (0 < x ≤ 100).")
]
NewDomains = Annotated[
    list[str] | None,
    typer.Option("--domain", help="An allowed hostname (repeat); replaces the list."),
]
NewInputs = Annotated[
    list[str] | None,
    typer.Option("--input", help="A tool input key=value (repeat); replaces the inputs."),
]
NewOnLimit = Annotated[
    OnLimitChoice | None,
    typer.Option("--on-limit", help="At a limit you can lift: fail, or pause and ask."),
]


# Pure helpers (unit-tested)


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs; `max_pages=3` gives an int, `url=http://x` stays a string."""
    return {key: _json_or_text(raw) for key, raw in _pairs(pairs, "--input")}


def parse_params(pairs: list[str] | None, recipe: dict[str, Any]) -> dict[str, Any]:
    """--param `key=value` pairs, typed as --input's are, except that a string or url param
    of the recipe keeps its text as given: `expression=42` is "42" (the API would refuse the
    number 42 for a string)."""
    text = {param["name"] for param in recipe["params"] if param["type"] in ("string", "url")}
    return {
        key: raw if key in text else _json_or_text(raw) for key, raw in _pairs(pairs, "--param")
    }


def _pairs(pairs: list[str] | None, option: str) -> list[tuple[str, str]]:
    split = []
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint=option)
        split.append((key.strip(), raw))
    return split


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def exit_code(status: str) -> int:
    """The exit status for a mission's final status."""
    return EXIT_CODES.get(status, EXIT_ERROR)


def step_line(step: dict[str, Any], attempt: int | None = None) -> str:
    """`[ 55%] Step 5/7 tool_execution — Running calculate · pages 3/5 · attempt 2`."""
    text = (
        f"[{step['progress_percent']:>3}%] Step {step['step_index']}/{step['total_steps']} "
        f"{step['step_name']} — {step['message']}"
    )
    detail = step.get("detail")
    if detail and step["status"] == "started":
        text += f" · {detail['unit']} {detail['done']}/{detail['total']}"
    if attempt and attempt > 1:
        text += f" · attempt {attempt}"
    return text


def progress_line(snapshot: dict[str, Any]) -> str:
    """One line for a snapshot (or a GET /progress answer): its step, or its status."""
    step = snapshot.get("current_step") or (snapshot.get("completed_steps") or [None])[-1]
    if step is None:
        waiting = WAITING.get(snapshot["status"], "")
        return f"[{snapshot['progress_percent']:>3}%] {snapshot['status']}" + (
            f" — {waiting}" if waiting else ""
        )
    # The step's own percent is the one of its last write; the snapshot's may be newer.
    step = {**step, "progress_percent": snapshot.get("progress_percent", step["progress_percent"])}
    return step_line(step, snapshot.get("attempt"))


def step_lines(snapshot: Snapshot, seen: set[Any]) -> list[str]:
    """Lines for what `seen` has not shown yet: each step once, again when it retries or fails.

    Completed steps come first: a listener may skip states, so a step that started and ended
    between two snapshots is still shown (with its completion message). A pause is shown once
    with its reason, and the step it interrupted again when it runs again.
    """
    lines = []
    for step in snapshot["completed_steps"]:
        if step["step_index"] not in seen:
            seen.add(step["step_index"])
            lines.append(step_line(step))
    current = snapshot["current_step"]
    if not snapshot.get("pause_requested"):
        seen.discard("pause_requested")  # a later request is shown too
    if snapshot["status"] == PAUSED:
        if current and current["status"] != "completed":
            # It did not finish: resumed, it runs again, and is shown again.
            _forget_step(seen, current["step_index"])
        if "paused" not in seen:
            seen.add("paused")
            lines.append(pause_line(snapshot))
        return lines
    seen.discard("paused")  # a later pause is shown too
    if current:
        attempt = snapshot.get("attempt") or 1
        key = (current["step_index"], current["status"], attempt)
        again = current["status"] == "failed" or attempt > 1
        if current["step_index"] not in seen or (again and key not in seen):
            seen.update({current["step_index"], key})
            lines.append(progress_line(snapshot))
    elif not snapshot["completed_steps"] and snapshot["status"] not in seen:
        seen.add(snapshot["status"])
        if snapshot["status"] in WAITING:
            lines.append(progress_line(snapshot))
    asked = snapshot.get("cancel_requested") and snapshot["status"] not in TERMINAL
    if asked and "cancel_requested" not in seen:
        seen.add("cancel_requested")
        lines.append("Cancel requested: it stops at the next step boundary")
    requested = snapshot.get("pause_requested") and snapshot["status"] not in TERMINAL
    if requested and "pause_requested" not in seen:
        seen.add("pause_requested")
        lines.append("Pause requested: it pauses at the next step boundary")
    return lines


def _forget_step(seen: set[Any], index: int) -> None:
    seen.difference_update(
        [key for key in seen if key == index or (isinstance(key, tuple) and key[0] == index)]
    )


def outcome_lines(snapshot: Snapshot) -> list[str]:
    """How a finished mission ended: the result and artifact, or where it failed."""
    status, mission_id = snapshot["status"], snapshot["mission_id"]
    if status == "completed":
        lines = [
            f"Completed in {snapshot['elapsed_seconds']:.1f}s: {snapshot['result_summary'] or ''}"
        ]
        if snapshot.get("artifact_reference"):
            title = snapshot["artifact_reference"]["title"]
            lines.append(f"Artifact: {title} (buddy show {mission_id})")
        return lines
    if status == "failed":
        error = snapshot.get("error") or {}
        return [f"Failed at {error.get('step_name', '?')}: {error.get('message', 'no reason')}"]
    if status == "cancelled":
        return [f"Cancelled at {snapshot['progress_percent']}%"]
    return [f"Mission {mission_id} is {status}"]


def dollars(amount: float) -> str:
    """An amount as typed back on a command line: `0.00005`, never `5e-05`; not rounded, so
    that a budget of it passes the check that asked for it."""
    text = format(Decimal(repr(float(amount))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def pause_line(snapshot: Snapshot) -> str:
    """`Paused at budget_check: Budget exceeded: $0.0001 > $0.00005 limit — raise …`."""
    reason = snapshot.get("pause_reason") or {}
    step = reason.get("step_name")
    return f"Paused{f' at {step}' if step else ''}: {reason.get('message') or 'no reason given'}"


def wanted_hosts(reason: dict[str, Any]) -> list[str]:
    """The hosts an out-of-scope pause asks to allow (a research may want several)."""
    return [str(h) for h in reason.get("hosts") or ([reason["host"]] if reason.get("host") else [])]


def continue_hint(
    mission_id: str, reason: dict[str, Any] | None, allowed_domains: list[str] | None = None
) -> str:
    """The commands that lift a pause and carry on."""
    reason = reason or {}
    resume = f"buddy resume {mission_id} --watch"
    if reason.get("code") == "budget_exceeded":
        needed = reason.get("needed_usd")
        budget = dollars(needed) if needed is not None else "N"
        return f"To continue: buddy edit {mission_id} --budget {budget} && {resume}"
    if reason.get("code") == "out_of_scope" and wanted_hosts(reason):
        domains = [*(allowed_domains or []), *wanted_hosts(reason)]
        flags = " ".join(f"--domain {domain}" for domain in dict.fromkeys(domains))
        return f"To continue: buddy edit {mission_id} {flags} && {resume}"
    return f"To continue: {resume} (or buddy cancel {mission_id})"


def _clock(seconds: float) -> str:
    whole = max(round(seconds), 0)
    return f"{whole // 60}:{whole % 60:02d}"


# Artifacts

# Lines of an artifact that `buddy show` and the end of a watch print on a terminal; `buddy
# artifact` prints all of it.
SHOWN_LINES = 40
# The part of the source rendered to fill them: rendering 1 MiB of Markdown takes seconds.
_SHOWN_CHARS = 20_000
# C0 and C1 control characters and DEL: ESC starts terminal sequences (colours, cursor moves,
# OSC 8 links, OSC 52 clipboard writes), CR overwrites a line, BS erases. Newline and tab stay.
# And the bidirectional overrides and isolates, which show "invoice_\u202efdp.exe" as
# "invoice_exe.pdf".
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A number as tables write one: 1,234 · -12.5% · $3 · 4.2e3.
_NUMBER = re.compile(r"[-+]?[$€£]?\d[\d,]*(\.\d+)?([eE][-+]?\d+)?%?")


def printable(text: str) -> str:
    """Text safe to print on a terminal: no control characters but newline and tab (a CR
    becomes a newline, so that nothing is overwritten and nothing hidden)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def artifact_text(artifact: dict[str, Any]) -> str:
    """An artifact's content as text for a pipe or a file: as stored (Markdown source for
    Markdown, the pipe table for a table), control characters taken out."""
    return printable(str(artifact.get("content") or ""))


def _head(text: str, chars: int | None) -> tuple[str, bool]:
    """The start of text up to about `chars` characters, cut at a line end; and whether cut."""
    if chars is None or len(text) <= chars:
        return text, False
    end = text.rfind("\n", 0, chars)
    return text[: end if end > 0 else chars], True


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or bool(_NUMBER.fullmatch(str(value).strip()))


def data_table(table: Any, rows: int | None = None) -> Table | None:
    """data.table ({columns, rows: [{column: value}]}) as a rich Table, numeric columns on the
    right; None when it is not that shape. At most `rows` rows."""
    if not isinstance(table, dict):
        return None
    columns, records = table.get("columns"), table.get("rows")
    if not isinstance(columns, list) or not columns or not isinstance(records, list):
        return None
    if not all(isinstance(record, dict) for record in records):
        return None
    shown = records[:rows] if rows is not None else records
    names = [str(column) for column in columns]
    grid = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column, name in zip(columns, names, strict=True):
        filled = [record.get(column) for record in records if _cell(record.get(column)).strip()]
        numeric = bool(filled) and all(_is_number(value) for value in filled)
        grid.add_column(Text(printable(name)), justify="right" if numeric else "left")
    for record in shown:
        grid.add_row(*(Text(printable(_cell(record.get(column)))) for column in columns))
    return grid


def search_results(results: Any, limit: int | None = None) -> Table | None:
    """data.results as a ranked list: rank, then title, URL and snippet; None when it is not
    a list of results. At most `limit` of them."""
    if not isinstance(results, list) or not results:
        return None
    if not all(isinstance(hit, dict) for hit in results):
        return None
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(overflow="fold")
    for index, hit in enumerate(results[:limit] if limit is not None else results, 1):
        if index > 1:
            grid.add_row()
        entry = Text()
        entry.append(printable(_cell(hit.get("title")) or _cell(hit.get("url"))), style="bold")
        entry.append("\n" + printable(_cell(hit.get("url"))), style="cyan")
        if hit.get("snippet"):
            entry.append("\n" + printable(_cell(hit["snippet"])))
        grid.add_row(Text(f"{hit.get('rank') or index}."), entry)
    return grid


def _pretty_json(content: str) -> str | None:
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        return None
    try:
        return json.dumps(document, indent=2, ensure_ascii=False)
    except RecursionError:
        return None


def artifact_body(
    artifact: dict[str, Any], limit: int | None = None
) -> tuple[RenderableType, bool]:
    """An artifact's content for a terminal, by its format: Markdown rendered (headings,
    lists, tables, code; links as `text (url)`, so that where a link goes is seen), a table
    as a table, JSON pretty and highlighted, text as is; search results as a ranked list.

    With `limit` (lines to fill), only the start: about 20,000 characters of the source, or
    `limit` rows or results; and whether some was left out.
    """
    content = artifact_text(artifact)
    data = artifact.get("data")
    if not isinstance(data, dict):
        data = {}
    chars = None if limit is None else _SHOWN_CHARS
    results = data.get("results")
    if artifact.get("type") == "search_results" and isinstance(results, list):
        ranked = search_results(results, limit)
        if ranked is not None:
            return ranked, limit is not None and len(results) > limit
    kind = artifact.get("format") or "text"  # documents made before formats have none
    if kind == "table":
        table = data_table(data.get("table"), limit)
        if table is not None:
            return table, limit is not None and len(data["table"]["rows"]) > limit
        kind = "markdown"  # its content is the same table as a Markdown pipe table
    if kind == "json":
        pretty = _pretty_json(content)
        if pretty is not None:
            head, cut = _head(printable(pretty), chars)
            return JSONHighlighter()(Text(head)), cut
    head, cut = _head(content, chars)
    if kind == "markdown":
        return Markdown(head, hyperlinks=False), cut
    return Text(head), cut


# Output


def _say(text: str, style: str | None = None, to: Console | None = None) -> None:
    # Text, not markup: messages from the API may contain [brackets]. Resolved here, not as a
    # default argument, so that a console swapped in (a test's) is the one printed on.
    (console if to is None else to).print(Text(printable(text), style=style or ""))


def _json(document: Any, line: bool = False) -> None:
    sys.stdout.write(json.dumps(document, indent=None if line else 2, default=str) + "\n")
    sys.stdout.flush()


def _write_plain(artifact: dict[str, Any]) -> None:
    # Written as is: rich would expand tabs and read nothing else differently.
    text = artifact_text(artifact)
    if text:
        console.file.write(text if text.endswith("\n") else text + "\n")
        console.file.flush()


def _print_artifact(artifact: dict[str, Any], mission_id: str, limit: int | None) -> None:
    """An artifact under its title: on a terminal rendered by its format (with `limit`, its
    first lines and how to see all of it), elsewhere its content as text, all of it."""
    _say(f"\n{artifact.get('title') or 'Artifact'}", "bold")
    if not console.is_terminal:
        _write_plain(artifact)
        return
    _render_artifact(artifact, mission_id, limit)
    if artifact.get("truncated"):
        _say("(cut to its size limit when it was made: the source was longer)", "dim")


def _render_artifact(artifact: dict[str, Any], mission_id: str, limit: int | None) -> None:
    body, cut = artifact_body(artifact, limit)
    try:
        lines = console.render_lines(body, console.options, pad=False)
    except Exception:
        # The content is a web page's: should it trip up the renderer, show it as text.
        if OPTIONS.debug:
            raise
        _write_plain(artifact)
        return
    # Without the renderer's margins: the title is right above.
    blank = [not "".join(segment.text for segment in line).strip() for line in lines]
    start = blank.index(False) if False in blank else len(lines)
    end = len(lines) - (blank[::-1].index(False) if False in blank else 0)
    lines = lines[start:end]
    if limit is not None and len(lines) > limit:
        lines, cut = lines[:limit], True
    console.print(SegmentLines(lines, new_lines=True))
    if cut:
        _say(f"… cut here: buddy artifact {mission_id} shows all of it", "dim")


def _mission_lines(mission: dict[str, Any]) -> list[str]:
    lines = [
        f"Mission {mission['mission_id']}: {mission['status']} ({percent_of(mission)}%)",
        f"  objective  {mission['objective']}",
        f"  budget     ${mission['budget_usd']:g}",
    ]
    if mission.get("tool"):
        lines.append(f"  tool       {mission['tool']}")
    if mission["scope"]["allowed_domains"]:
        lines.append(f"  domains    {', '.join(mission['scope']['allowed_domains'])}")
    if mission.get("inputs"):
        lines.append(f"  inputs     {json.dumps(mission['inputs'])}")
    if mission.get("on_limit") == "ask":
        lines.append("  on limit   ask (pause instead of failing)")
    if mission.get("cloned_from"):
        lines.append(f"  cloned     from {mission['cloned_from']}")
    if mission.get("recipe"):
        recipe = mission["recipe"]
        lines.append(f"  recipe     {recipe['recipe_id']} v{recipe['version']}")
    if mission.get("feedback"):
        feedback = mission["feedback"]
        comment = f" — {feedback['comment']}" if feedback.get("comment") else ""
        lines.append(f"  rating     {feedback['rating']}/5{comment}")
    lines.append(f"  created    {mission['created_at']}")
    return lines


class _ClockColumn(ProgressColumn):
    """Elapsed time and ETA, counted on between snapshots (the worker writes only on change)."""

    def render(self, task: Task) -> Text:
        fields = task.fields
        since = time.monotonic() - fields.get("received", time.monotonic())
        ticking = since if fields.get("running") else 0.0
        elapsed = fields.get("elapsed", 0.0) + ticking
        eta = max(fields.get("eta", 0.0) - ticking, 0.0)
        return Text(f"{_clock(elapsed)} · ETA {_clock(eta)}", style="dim")


class _Display:
    """A live progress bar on a terminal, plus one printed line per step change everywhere."""

    def __init__(self, live: bool, seen: set[Any] | None = None) -> None:
        # Shared by the displays of one command: a watch resumed after a pause goes on.
        self._seen = set() if seen is None else seen
        self._progress = (
            Progress(
                TextColumn("{task.percentage:>3.0f}%"),
                BarColumn(bar_width=24),
                _ClockColumn(table_column=Column(no_wrap=True)),
                # One line however narrow the terminal: the step message is cut, not wrapped.
                TextColumn(
                    "{task.description}",
                    markup=False,
                    table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
                ),
                console=console,
                expand=True,
                transient=True,
            )
            if live
            else None
        )
        self._task = self._progress.add_task("", total=100) if self._progress else None

    def __enter__(self) -> _Display:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress:
            self._progress.stop()

    def show(self, snapshot: Snapshot) -> None:
        for line in step_lines(snapshot, self._seen):
            _say(line)
        if self._progress and self._task is not None:
            self._progress.update(
                self._task,
                completed=snapshot["progress_percent"],
                description=progress_line(snapshot).split("] ", 1)[1],
                elapsed=snapshot["elapsed_seconds"],
                eta=snapshot["estimated_time_remaining"],
                running=snapshot["status"] == "running",
                received=time.monotonic(),
            )


def _follow(
    client: BuddyClient,
    snapshots: Generator[Snapshot, None, None],
    as_json: bool,
    first: Snapshot | None = None,
) -> int:
    """Shows snapshots until the mission ends, or pauses and is not resumed from here;
    returns the exit status for how it stopped."""
    seen: set[Any] = set()
    while True:
        last = _show(snapshots, as_json, seen, first)
        if last is None:
            return EXIT_INTERRUPTED
        if last["status"] != PAUSED or not _lift(client, last, as_json):
            break
        # Subscribed once it is queued again: the paused document would end the watch.
        snapshots, first = client.watch(last["mission_id"]), None
    if last["status"] == PAUSED:
        mission = None
        if (last.get("pause_reason") or {}).get("code") == "out_of_scope":
            mission = client.get(last["mission_id"])
        domains = mission["scope"]["allowed_domains"] if mission else None
        hint = continue_hint(last["mission_id"], last.get("pause_reason"), domains)
        _say(hint, "yellow", to=errors if as_json else console)
    elif not as_json:
        artifact = _finished_artifact(client, last)
        style = {"completed": "green", "failed": "red"}.get(last["status"], "yellow")
        # The artifact follows: no line pointing to it.
        for line in outcome_lines({**last, "artifact_reference": None} if artifact else last):
            _say(line, style)
        if artifact:
            _print_artifact(artifact, last["mission_id"], SHOWN_LINES)
    return exit_code(last["status"])


def _finished_artifact(client: BuddyClient, last: Snapshot) -> dict[str, Any] | None:
    """The artifact of a mission that completed with one, unless its result line says all it
    holds (a calculation's `2*(3+4) = 14`); None too when it cannot be read now (the outcome
    then points to `buddy show`)."""
    if last["status"] != "completed" or not last.get("artifact_reference"):
        return None
    try:
        artifact = client.artifact(last["mission_id"])
    except BuddyError:
        return None
    content = artifact_text(artifact).strip()
    said = not content or (last.get("result_summary") or "").endswith(content)
    return None if said else artifact


def _show(
    snapshots: Generator[Snapshot, None, None],
    as_json: bool,
    seen: set[Any],
    first: Snapshot | None,
) -> Snapshot | None:
    """Shows one watch to its end; its last snapshot, or None after Ctrl-C."""
    last = first
    live = console.is_terminal and not as_json
    try:
        with contextlib.closing(snapshots), _Display(live, seen) as display:
            for snapshot in itertools.chain([first] if first else [], snapshots):
                last = snapshot
                if as_json:
                    _json(snapshot, line=True)
                else:
                    display.show(snapshot)
    except KeyboardInterrupt:
        # Detach only: cancelling is an explicit `buddy cancel`.
        mission = f" {last['mission_id']}" if last else ""
        _say(
            f"Detached; the mission keeps running (buddy watch{mission} to follow it again).",
            to=errors,
        )
        return None
    assert last is not None  # watch yields until a terminal or paused snapshot, or raises
    return last


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _lift(client: BuddyClient, paused: Snapshot, as_json: bool) -> bool:
    """Offers to lift the limit a mission paused at, and on yes edits and resumes it."""
    reason = paused.get("pause_reason") or {}
    mission_id = paused["mission_id"]
    if as_json or not _stdin_is_terminal():
        return False
    if reason.get("code") == "budget_exceeded" and reason.get("needed_usd") is not None:
        budget = float(reason["needed_usd"])
        if not _confirm(f"Raise the budget to ${dollars(budget)} and resume?"):
            return False
        client.modify(mission_id, budget_usd=budget)
        done = f"Budget raised to ${dollars(budget)}"
    elif reason.get("code") == "out_of_scope" and (hosts := wanted_hosts(reason)):
        named = ", ".join(hosts)
        if not _confirm(f"Allow {named} and resume?"):
            return False
        domains = client.get(mission_id)["scope"]["allowed_domains"]
        client.modify(mission_id, allowed_domains=list(dict.fromkeys([*domains, *hosts])))
        done = f"Allowed {named}"
    else:
        return False  # its owner paused it: resuming is theirs to say
    client.resume(mission_id)
    _say(f"{done}; mission {mission_id} resumed", "bold")
    return True


def _confirm(question: str) -> bool:
    try:
        return bool(typer.confirm(question, default=True))
    except typer.Abort:  # Ctrl-C or end of input: as no
        _say("")
        return False


# Commands


def _client() -> BuddyClient:
    return BuddyClient.from_env(api_url=OPTIONS.api_url, project=OPTIONS.project)


F = TypeVar("F", bound=Callable[..., Any])


def _handled(command: F) -> F:
    """One clear line on stderr for a BuddyError (a traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = command(*args, **kwargs)
        except BuddyError as e:
            if OPTIONS.debug:
                raise
            _say(f"error: {e}", "red", to=errors)
            code = EXIT_UNREACHABLE if isinstance(e, ApiUnreachable) else EXIT_ERROR
        except KeyboardInterrupt:
            _say("Interrupted.", to=errors)
            code = EXIT_INTERRUPTED
        except (TyperException, typer.Exit, typer.Abort):
            raise  # usage errors: Typer prints them with the usage line
        except Exception as e:
            if OPTIONS.debug:
                raise
            _say(f"error: unexpected {type(e).__name__}: {e} (--debug shows more)", "red", errors)
            code = EXIT_ERROR
        if code:
            raise typer.Exit(code)

    return wrapper  # type: ignore[return-value]


@app.callback()
def _options(
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", envvar="BUDDY_API_URL", help="The API's base URL."),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            help="The Firebase project (default: BUDDY_PROJECT_ID, GOOGLE_CLOUD_PROJECT or "
            "GCLOUD_PROJECT, else the one signed in to last, else demo-buddy).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    as_json: Json = False,
) -> None:
    """Run Buddy Missions and watch their progress live.

    Acts as the account `buddy login` signed in to the project (stored in ~/.config/buddy);
    locally (a demo- project), until someone signs in, as the local user the dashboard uses
    too. BUDDY_ID_TOKEN, when set, wins over both.

    Exit status: 0 completed, 1 failed or error, 2 cancelled, 3 API unreachable,
    4 paused (waiting for you), 130 Ctrl-C.
    """
    OPTIONS.api_url, OPTIONS.project = api_url, project
    OPTIONS.debug, OPTIONS.json = debug, as_json


def _create(
    client: BuddyClient,
    objective: str,
    domain: list[str] | None,
    budget: float,
    tool: str | None,
    inputs: list[str] | None,
    ask: bool,
) -> dict[str, Any]:
    on_limit: OnLimit = "ask" if ask else "fail"
    return client.create(objective, domain or (), budget, tool, parse_inputs(inputs), on_limit)


@app.command()
@_handled
def run(
    objective: str,
    domain: Domains = None,
    budget: Budget = 1.0,
    tool: Tool = None,
    inputs: Inputs = None,
    ask: Ask = False,
    as_json: Json = False,
) -> int:
    """Create, approve and execute a mission, then watch it to the end.

    With --ask, a limit you can lift pauses it and asks you (on a terminal) instead of failing.
    """
    as_json = as_json or OPTIONS.json
    client = _client()
    mission_id = _create(client, objective, domain, budget, tool, inputs, ask)["mission_id"]
    if not as_json:
        _say(f"Mission {mission_id} created", "bold")
    return _launch(client, mission_id, as_json)


def _launch(client: BuddyClient, mission_id: str, as_json: bool) -> int:
    """Approves and executes a proposed mission, and watches it to its end."""
    client.approve(mission_id)
    snapshots = client.watch(mission_id)
    # Listening before it runs, so that even a fast mission shows every step.
    first = next(snapshots)
    try:
        client.execute(mission_id)
    except BaseException:
        snapshots.close()
        raise
    return _follow(client, snapshots, as_json, first)


@app.command()
@_handled
def create(
    objective: str,
    domain: Domains = None,
    budget: Budget = 1.0,
    tool: Tool = None,
    inputs: Inputs = None,
    ask: Ask = False,
    as_json: Json = False,
) -> int:
    """Propose a mission (then: buddy approve ID; buddy execute ID)."""
    mission = _create(_client(), objective, domain, budget, tool, inputs, ask)
    if as_json or OPTIONS.json:
        _json(mission)
    else:
        for line in _mission_lines(mission):
            _say(line)
    return 0


def _print_mission(mission: dict[str, Any], as_json: bool) -> None:
    _print(mission, _mission_lines, as_json)


def _print(
    document: dict[str, Any], lines: Callable[[dict[str, Any]], list[str]], as_json: bool
) -> None:
    """The API's answer as JSON with --json, else as lines for a person."""
    if as_json or OPTIONS.json:
        _json(document)
        return
    for line in lines(document):
        _say(line)


@app.command()
@_handled
def approve(mission_id: str, as_json: Json = False) -> int:
    """Approve a proposed mission."""
    _print_mission(_client().approve(mission_id), as_json)
    return 0


@app.command()
@_handled
def execute(mission_id: str, watch: Watch = False, as_json: Json = False) -> int:
    """Queue an approved mission for execution."""
    as_json = as_json or OPTIONS.json
    client = _client()
    accepted = client.execute(mission_id)
    if not watch:
        _json(accepted) if as_json else _say(f"Mission {mission_id} queued")
        return 0
    return _follow(client, client.watch(mission_id), as_json)


@app.command()
@_handled
def cancel(mission_id: str, as_json: Json = False) -> int:
    """Cancel a mission; a running one stops at its next step boundary."""
    mission = _client().cancel(mission_id)
    if as_json or OPTIONS.json:
        _json(mission)
    elif mission["status"] == "cancelled":
        _say(f"Mission {mission_id}: cancelled", "yellow")
    else:
        _say(f"Mission {mission_id}: {mission['status']}, cancel requested", "yellow")
        _say("It stops at the next step boundary (buddy watch to see it end).")
    return 0


@app.command()
@_handled
def pause(mission_id: str, as_json: Json = False) -> int:
    """Pause a mission: a queued one at once, a running one at its next step boundary."""
    mission = _client().pause(mission_id)
    if as_json or OPTIONS.json:
        _json(mission)
    elif mission["status"] == PAUSED:
        _say(f"Mission {mission_id}: paused", "yellow")
        _say(f"buddy resume {mission_id} --watch carries on where it stopped.")
    else:
        _say(f"Mission {mission_id}: {mission['status']}, pause requested", "yellow")
        _say("It pauses at the next step boundary (buddy watch to see it stop).")
    return 0


@app.command()
@_handled
def resume(mission_id: str, watch: Watch = False, as_json: Json = False) -> int:
    """Resume a paused mission where it stopped (edit its limits first if it asked)."""
    return _queued_again(_client(), mission_id, watch, as_json, lambda c: c.resume(mission_id))


@app.command()
@_handled
def retry(
    mission_id: str,
    budget: NewBudget = None,
    domain: NewDomains = None,
    watch: Watch = False,
    as_json: Json = False,
) -> int:
    """Run a failed mission again from the step that failed, its completed steps kept."""
    return _queued_again(
        _client(), mission_id, watch, as_json, lambda c: c.retry(mission_id, budget, domain)
    )


def _queued_again(
    client: BuddyClient,
    mission_id: str,
    watch: bool,
    as_json: bool,
    action: Callable[[BuddyClient], dict[str, Any]],
) -> int:
    as_json = as_json or OPTIONS.json
    accepted = action(client)
    if as_json and not watch:
        _json(accepted)
    elif not as_json:
        _say(f"Mission {mission_id} queued")
    # Subscribed after it is queued: the paused or failed document would end the watch.
    return _follow(client, client.watch(mission_id), as_json) if watch else 0


@app.command()
@_handled
def edit(
    mission_id: str,
    objective: Objective = None,
    budget: NewBudget = None,
    domain: NewDomains = None,
    tool: Tool = None,
    inputs: NewInputs = None,
    on_limit: NewOnLimit = None,
    as_json: Json = False,
) -> int:
    """Change a mission's fields; options left out stay as they are.

    Before it runs, any of them (an approved mission goes back to proposed: approve it
    again). While it is paused or failed, only --budget and --domain.
    """
    fields = _edits(objective, budget, domain, tool, inputs, on_limit)
    if not fields:
        _say(
            "error: nothing to change: give --objective, --budget, --domain, --tool, "
            "--input or --on-limit",
            "red",
            to=errors,
        )
        return EXIT_USAGE
    _print_mission(_client().modify(mission_id, **fields), as_json)
    return 0


@app.command()
@_handled
def clone(
    mission_id: str,
    objective: Objective = None,
    budget: NewBudget = None,
    domain: NewDomains = None,
    tool: Tool = None,
    inputs: NewInputs = None,
    on_limit: NewOnLimit = None,
    as_json: Json = False,
) -> int:
    """A new proposed mission with this one's fields, any of them changed."""
    fields = _edits(objective, budget, domain, tool, inputs, on_limit)
    _print_mission(_client().clone(mission_id, **fields), as_json)
    return 0


def _edits(
    objective: str | None,
    budget: float | None,
    domain: list[str] | None,
    tool: str | None,
    inputs: list[str] | None,
    on_limit: OnLimitChoice | None,
) -> dict[str, Any]:
    """The options given, as BuddyClient.modify's and clone's keywords."""
    fields: dict[str, Any] = {
        "objective": objective,
        "budget_usd": budget,
        "allowed_domains": domain,
        "tool": tool,
        "inputs": parse_inputs(inputs) if inputs is not None else None,
        "on_limit": on_limit.value if on_limit else None,
    }
    return {name: value for name, value in fields.items() if value is not None}


@app.command()
@_handled
def watch(mission_id: str, as_json: Json = False) -> int:
    """Watch a mission live until it ends or pauses.

    Exit 0 completed, 1 failed, 2 cancelled, 4 paused (unless you lift its limit when asked).
    """
    client = _client()
    return _follow(client, client.watch(mission_id), as_json or OPTIONS.json)


@app.command("list")
@_handled
def list_missions(
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="Only the missions this schedule made.")
    ] = None,
    as_json: Json = False,
) -> int:
    """Your missions, newest first."""
    missions = _client().list(status, limit, schedule)
    if as_json or OPTIONS.json:
        _json({"missions": missions})
        return 0
    if not missions:
        _say("No missions.")
        return 0
    table = Table("mission", "status", "%", "objective", "created", box=None)
    for m in missions:
        table.add_row(
            m["mission_id"],
            m["status"],
            str(percent_of(m)),
            Text(m["objective"]),
            m["created_at"][:19],
        )
    console.print(table)
    return 0


@app.command()
@_handled
def show(mission_id: str, as_json: Json = False) -> int:
    """A mission, its progress, and its artifact when there is one.

    On a terminal the artifact is rendered by its format and cut at 40 lines (buddy artifact
    ID prints all of it); piped, its whole content is printed as text.
    """
    client = _client()
    mission = client.get(mission_id)
    progress = client.progress(mission_id)
    record = mission.get("execution_record") or {}
    artifact = None
    if record.get("artifact_reference"):
        with contextlib.suppress(MissionNotFound):
            artifact = client.artifact(mission_id)
    if as_json or OPTIONS.json:
        _json({"mission": mission, "progress": progress, "artifact": artifact})
        return 0
    for line in _mission_lines(mission):
        _say(line)
    _say(progress_line({**progress, "attempt": record.get("attempt")}))
    timing = f"  elapsed {_clock(progress['elapsed_seconds'])}"
    if progress["status"] not in TERMINAL:
        timing += f", ETA {_clock(progress['estimated_time_remaining'])}"
    _say(timing + (" — stalled, waiting for recovery" if progress.get("stalled") else ""))
    if mission["status"] == PAUSED:
        paused = {**progress, "pause_reason": mission.get("pause_reason")}
        _say(pause_line(paused), "yellow")
        _say(continue_hint(mission_id, paused["pause_reason"], mission["scope"]["allowed_domains"]))
    elif mission.get("pause_requested"):
        _say("  pause requested: it pauses at the next step boundary")
    if mission["status"] in TERMINAL:
        outcome = {
            **progress,
            "error": record.get("error"),
            "result_summary": record.get("result_summary"),
            "artifact_reference": None,  # its preview follows
        }
        for line in outcome_lines(outcome):
            _say(line)
    if artifact:
        _print_artifact(artifact, mission_id, SHOWN_LINES)
    return 0


Raw = Annotated[
    bool,
    typer.Option("--raw", help="The content as stored (Markdown source), even on a terminal."),
]


@app.command("artifact")
@_handled
def artifact_command(mission_id: str, raw: Raw = False, as_json: Json = False) -> int:
    """A mission's artifact, all of it.

    On a terminal: rendered by its format (Markdown, a table, pretty JSON, text; search
    results as a ranked list). Piped, or with --raw: its content as text (Markdown source).
    --json: the artifact document as the API returns it. Control characters in the content
    (terminal escape sequences) are never printed, except as JSON escapes with --json.
    """
    found = _client().artifact(mission_id)
    if as_json or OPTIONS.json:
        _json(found)
    elif raw or not console.is_terminal:
        _write_plain(found)
    else:
        _print_artifact(found, mission_id, None)
    return 0


def _event_line(event: dict[str, Any]) -> str:
    step = f" {event['step_name']}" if event.get("step_name") else ""
    return (
        f"{event['seq']:>4} {event['timestamp'][11:19]} {event['type']}{step} — {event['message']}"
    )


@app.command()
@_handled
def events(
    mission_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until it ends.")
    ] = False,
    as_json: Json = False,
) -> int:
    """A mission's event log; --follow prints new events as they happen."""
    as_json = as_json or OPTIONS.json
    client = _client()
    if not follow:
        log = client.events(mission_id)
        if as_json:
            _json({"events": log})
        else:
            for event in log:
                _say(_event_line(event))
        return 0
    try:
        for event in client.follow_events(mission_id):
            _json(event, line=True) if as_json else _say(_event_line(event))
    except KeyboardInterrupt:
        _say("Detached; the mission keeps running.", to=errors)
        return EXIT_INTERRUPTED
    return exit_code(client.get(mission_id)["status"])


# ---- schedules ---------------------------------------------------------------------------------

schedule_app = typer.Typer(
    no_args_is_help=True, help="Recurring missions: a cron in a time zone, fired for you."
)
app.add_typer(schedule_app, name="schedule")


class OverlapChoice(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW = "allow"


def _schedule_runs(mission: dict[str, Any]) -> str:
    if "recipe_id" in mission:
        given = ", ".join(f"{k}={v}" for k, v in mission["params"].items())
        return f"recipe {mission['recipe_id']} v{mission['version']} ({given})"
    return str(mission["objective"])


def schedule_lines(schedule: dict[str, Any]) -> list[str]:
    """A schedule for a person: what it runs, when, and what its fires did."""
    state = f"paused — {schedule['pause_reason']}" if schedule["paused"] else "active"
    lines = [
        f"Schedule {schedule['schedule_id']}: {schedule['name']} ({state})",
        f"  cron       {schedule['cron']} in {schedule['timezone']} ({schedule['description']})",
        f"  runs       {_schedule_runs(schedule['mission'])}",
        f"  overlap    {schedule['overlap']}; catch-up {schedule['catchup_window_seconds']} s; "
        f"pauses after {schedule['pause_after_failures']} failures in a row "
        f"({schedule['consecutive_failures']} now)",
    ]
    if schedule["upcoming"]:
        lines.append("  next fires")
        lines += [f"    {u['local']}  ({u['utc']})" for u in schedule["upcoming"]]
    if schedule["history"]:
        lines.append("  last fires")
        for fire in schedule["history"]:
            what = fire["mission_id"] or fire["reason"]
            outcome = f" → {fire['outcome']}" if fire.get("outcome") else ""
            lines.append(f"    {fire['fire_at']}  {fire['status']:<8} {what}{outcome}")
    return lines


def _print_schedule(schedule: dict[str, Any], as_json: bool) -> None:
    _print(schedule, schedule_lines, as_json)


@schedule_app.command("create")
@_handled
def schedule_create(
    name: str,
    cron: Annotated[str, typer.Argument(help="Five fields, e.g. '0 9 * * 1-5'.")],
    objective: Annotated[
        str | None, typer.Argument(help="What each fire runs (or give --recipe).")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option("--recipe", help="Run this recipe (its id or name) instead of OBJECTIVE."),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option("--param", help="A param of --recipe, key=value (repeat)."),
    ] = None,
    timezone: Annotated[
        str, typer.Option("--tz", help="An IANA time zone, e.g. Europe/Berlin.")
    ] = "UTC",
    domain: Domains = None,
    budget: Budget = 1.0,
    tool: Tool = None,
    inputs: Inputs = None,
    ask: Ask = False,
    overlap: Annotated[
        OverlapChoice, typer.Option("--overlap", help="A fire while the last one runs.")
    ] = OverlapChoice.SKIP,
    catchup: Annotated[
        int, typer.Option("--catchup", min=0, help="Seconds within which a missed fire runs.")
    ] = 0,
    pause_after: Annotated[
        int,
        typer.Option("--pause-after", min=0, help="Failures in a row that pause it (0: never)."),
    ] = 3,
    as_json: Json = False,
) -> int:
    """Create a schedule that runs OBJECTIVE (or a recipe) at every fire of CRON."""
    if (objective is None) == (recipe is None):
        raise typer.BadParameter("give an OBJECTIVE or --recipe NAME, not both")
    client = _client()
    mission: dict[str, Any]
    if recipe is not None:
        found = find_recipe(client.recipes(), recipe)
        mission = {"recipe_id": found["recipe_id"], "params": parse_params(params, found)}
    else:
        mission = {"objective": objective, "budget_usd": budget}
        mission["scope"] = {"allowed_domains": list(domain or ())}
        if tool:
            mission["tool"] = tool
        if inputs:
            mission["inputs"] = parse_inputs(inputs)
        if ask:
            mission["on_limit"] = "ask"
    schedule = client.create_schedule(
        name,
        cron,
        mission,
        timezone=timezone,
        overlap=overlap.value,
        catchup_window_seconds=catchup,
        pause_after_failures=pause_after,
    )
    _print_schedule(schedule, as_json)
    return 0


@schedule_app.command("list")
@_handled
def schedule_list(as_json: Json = False) -> int:
    """Your schedules, newest first."""
    schedules = _client().schedules()
    if as_json or OPTIONS.json:
        _json({"schedules": schedules})
        return 0
    if not schedules:
        _say("No schedules.")
        return 0
    table = Table("schedule", "name", "cron", "zone", "next fire (UTC)", "state", box=None)
    for s in schedules:
        state = "paused" if s["paused"] else "active"
        table.add_row(
            s["schedule_id"],
            Text(s["name"]),
            s["cron"],
            s["timezone"],
            s["next_fire_at"] or "-",
            state,
        )
    console.print(table)
    return 0


@schedule_app.command("show")
@_handled
def schedule_show(schedule_id: str, as_json: Json = False) -> int:
    """A schedule: its next five fires (local and UTC) and its last fires."""
    _print_schedule(_client().schedule(schedule_id), as_json)
    return 0


@schedule_app.command("pause")
@_handled
def schedule_pause(schedule_id: str, as_json: Json = False) -> int:
    """Stop firing until resumed."""
    _print_schedule(_client().pause_schedule(schedule_id), as_json)
    return 0


@schedule_app.command("resume")
@_handled
def schedule_resume(schedule_id: str, as_json: Json = False) -> int:
    """Fire again from the next cron time (missed fires are not made up)."""
    _print_schedule(_client().resume_schedule(schedule_id), as_json)
    return 0


@schedule_app.command("run")
@_handled
def schedule_run(schedule_id: str, watch: Watch = False, as_json: Json = False) -> int:
    """Fire now, outside the cron."""
    client = _client()
    answer = client.run_schedule(schedule_id)
    mission_id = answer["mission_id"]
    if not watch:
        if as_json or OPTIONS.json:
            _json(answer)
        else:
            _say(f"Mission {mission_id}: queued (buddy watch {mission_id})", "bold")
        return 0
    return _follow(client, client.watch(mission_id), as_json or OPTIONS.json)


@schedule_app.command("delete")
@_handled
def schedule_delete(schedule_id: str, as_json: Json = False) -> int:
    """Delete a schedule; the missions it made stay."""
    _client().delete_schedule(schedule_id)
    if as_json or OPTIONS.json:
        _json({"schedule_id": schedule_id, "deleted": True})
    else:
        _say(f"Schedule {schedule_id} deleted (its missions stay)")
    return 0


# ---- recipes, ratings and tool statistics -----------------------------------------------------

recipe_app = typer.Typer(
    no_args_is_help=True,
    help="Missions with parameters: the built-ins and your own. NAME is an id or a name.",
)
app.add_typer(recipe_app, name="recipe")

RecipeName = Annotated[
    str, typer.Argument(help="A recipe's id, or its name (any case).", metavar="NAME")
]
Version = Annotated[
    int | None, typer.Option("--version", min=1, help="That version (default: the latest).")
]


def find_recipe(recipes: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The recipe NAME means among those you can use: the one with that id, else the one
    with that name, whatever its case."""
    for recipe in recipes:
        if recipe["recipe_id"] == name:
            return recipe
    named = [r for r in recipes if r["name"].casefold() == name.casefold()]
    if not named:
        raise MissionNotFound(
            f"Recipe {name!r} not found: no recipe of yours or built-in has that id or name "
            "(buddy recipe list shows them)"
        )
    if len(named) > 1:
        ids = ", ".join(r["recipe_id"] for r in named)
        raise BuddyError(f"{len(named)} recipes are named {name!r} ({ids}): give its id")
    return named[0]


def _default(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def param_line(param: dict[str, Any]) -> str:
    """`max_results (integer, default 5) — How many results`."""
    need = "required" if param["required"] else f"default {_default(param['default'])}"
    about = f" — {param['description']}" if param.get("description") else ""
    return f"{param['name']} ({param['type']}, {need}){about}"


def recipe_lines(recipe: dict[str, Any]) -> list[str]:
    """A recipe for a person: its params, its templates, how its missions went, and the
    command that runs it."""
    version = f"v{recipe['version']}"
    if recipe["version"] != recipe["latest_version"]:
        version += f" of {recipe['latest_version']}"
    kind = "built-in" if recipe["builtin"] else "yours"
    lines = [f"Recipe {recipe['recipe_id']}: {recipe['name']} ({kind}, {version})"]
    if recipe.get("description"):
        lines.append(f"  {recipe['description']}")
    lines.append("  params" if recipe["params"] else "  params     none")
    lines += [f"    {param_line(param)}" for param in recipe["params"]]
    lines.append(f"  objective  {recipe['objective']}")
    budget = recipe["budget_usd"]
    lines.append(f"  budget     {budget if isinstance(budget, str) else f'${dollars(budget)}'}")
    if recipe.get("tool"):
        lines.append(f"  tool       {recipe['tool']}")
    if recipe["scope"]["allowed_domains"]:
        lines.append(f"  domains    {', '.join(recipe['scope']['allowed_domains'])}")
    if recipe.get("inputs"):
        lines.append(f"  inputs     {json.dumps(recipe['inputs'])}")
    if recipe.get("on_limit") == "ask":
        lines.append("  on limit   ask (pause instead of failing)")
    lines.append(
        f"  missions   {recipe['uses']} made: {recipe['completed']} completed, "
        f"{recipe['failed']} failed"
    )
    needed = [p for p in recipe["params"] if p["required"]]
    flags = "".join(f" --param {p['name']}=<{p['type']}>" for p in needed)
    lines.append(f"  run it     buddy recipe run {recipe['recipe_id']}{flags}")
    return lines


def _print_recipe(recipe: dict[str, Any], as_json: bool) -> None:
    _print(recipe, recipe_lines, as_json)


@recipe_app.command("list")
@_handled
def recipe_list(as_json: Json = False) -> int:
    """The built-in recipes, then yours, newest first."""
    recipes = _client().recipes()
    if as_json or OPTIONS.json:
        _json({"recipes": recipes})
        return 0
    if not recipes:
        _say("No recipes.")
        return 0
    # Ids are typed back, so they are never cut (nor the headers): on a narrow screen the
    # names wrap instead.
    ids = Column("recipe", no_wrap=True, min_width=max(len(r["recipe_id"]) for r in recipes))
    counts = ("version", "uses", "completed", "failed")
    numbers = [Column(name, justify="right", min_width=len(name)) for name in counts]
    table = Table(ids, "name", Column("built-in", min_width=8), *numbers, box=None, pad_edge=False)
    for r in recipes:
        table.add_row(
            r["recipe_id"],
            Text(r["name"]),
            "yes" if r["builtin"] else "",
            str(r["latest_version"]),
            str(r["uses"]),
            str(r["completed"]),
            str(r["failed"]),
        )
    console.print(table)
    return 0


@recipe_app.command("show")
@_handled
def recipe_show(name: RecipeName, version: Version = None, as_json: Json = False) -> int:
    """A recipe: its params (types, defaults), its templates, and how its missions went."""
    client = _client()
    recipe_id = find_recipe(client.recipes(), name)["recipe_id"]
    _print_recipe(client.recipe(recipe_id, version), as_json)
    return 0


@recipe_app.command("run")
@_handled
def recipe_run(
    name: RecipeName,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="A param key=value (repeat); values are JSON when they parse, "
            "text for string and url params.",
        ),
    ] = None,
    version: Version = None,
    as_json: Json = False,
) -> int:
    """Make a mission from a recipe, approve and execute it, then watch it to the end."""
    as_json = as_json or OPTIONS.json
    client = _client()
    recipe = find_recipe(client.recipes(), name)
    # The version asked for types the params: its params may not be the latest's.
    declared = recipe if version is None else client.recipe(recipe["recipe_id"], version)
    mission = client.mission_from_recipe(
        recipe["recipe_id"], parse_params(params, declared), version
    )
    mission_id = mission["mission_id"]
    if not as_json:
        made_from = mission.get("recipe") or {"version": declared["version"]}
        _say(f"Mission {mission_id} created from {recipe['name']} v{made_from['version']}", "bold")
    return _launch(client, mission_id, as_json)


@recipe_app.command("save")
@_handled
def recipe_save(
    mission_id: str,
    name: Annotated[
        str | None, typer.Option("--name", help="Its name (default: the API's choice).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="A field that becomes a param, e.g. inputs.url, objective, budget_usd "
            "(repeat; default: its inputs, or its objective).",
        ),
    ] = None,
    as_json: Json = False,
) -> int:
    """Save a mission as a new recipe, its values the params' defaults."""
    _print_recipe(_client().save_as_recipe(mission_id, name, description, params), as_json)
    return 0


@recipe_app.command("delete")
@_handled
def recipe_delete(name: RecipeName, as_json: Json = False) -> int:
    """Delete one of your recipes; the missions made from it stay."""
    client = _client()
    recipe = find_recipe(client.recipes(), name)
    client.delete_recipe(recipe["recipe_id"])
    if as_json or OPTIONS.json:
        _json({"recipe_id": recipe["recipe_id"], "deleted": True})
    else:
        _say(f"Recipe {recipe['recipe_id']} ({recipe['name']}) deleted (its missions stay)")
    return 0


@app.command()
@_handled
def rate(
    mission_id: str,
    rating: Annotated[int, typer.Argument(min=1, max=5, help="1 (poor) to 5 (great).")],
    comment: Annotated[str | None, typer.Option("--comment", help="What went well or not.")] = None,
    as_json: Json = False,
) -> int:
    """Rate a finished mission 1 to 5 (again: replaces it); tool selection learns from it."""
    _print_mission(_client().rate(mission_id, rating, comment), as_json)
    return 0


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _cost(usd: float | None) -> str:
    return "-" if usd is None else f"${dollars(round(usd, 6))}"


def _rating(mean: float | None) -> str:
    return "-" if mean is None else f"{mean:.1f}"


def stats_row(who: str, counts: dict[str, Any]) -> list[str]:
    """A row of the stats table: missions, success rate, median duration, mean cost, ratings."""
    return [
        who,
        str(counts["missions"]),
        _percent(counts["success_rate"]),
        _seconds(counts["median_duration_seconds"]),
        _cost(counts["mean_cost_usd"]),
        str(counts["ratings"]),
        _rating(counts["mean_rating"]),
    ]


def adjustment_line(adjustment: dict[str, Any]) -> str:
    """`calculate: +0.06 from 23 ratings (mean 4.4)`, as tool selection says it."""
    count = adjustment["ratings"]
    mean = adjustment.get("mean_rating")
    return (
        f"{adjustment['intent']}: {adjustment['adjustment']:+.2f} from {count} "
        f"rating{'' if count == 1 else 's'}" + (f" (mean {mean:.1f})" if mean is not None else "")
    )


@app.command()
@_handled
def stats(as_json: Json = False) -> int:
    """Per tool, yours and everyone's: outcomes, speed, cost, ratings, what selection learned.

    Under each tool's table, what its ratings add to the confidence of choosing it, per
    intent (as `Selected … (confidence 0.80, +0.06 from 23 ratings)` says in a mission).
    """
    tools = _client().tool_stats()
    if as_json or OPTIONS.json:
        _json({"tools": tools})
        return 0
    figures = ("missions", "success", "median time", "mean cost", "ratings", "mean rating")
    for index, entry in enumerate(tools):
        if index:
            _say("")
        columns = [Column(name, justify="right") for name in figures]
        table = Table(Column(entry["tool"], style="bold"), *columns, box=None, pad_edge=False)
        table.add_row(*stats_row("You", entry["mine"]))
        table.add_row(*stats_row("Everyone", entry["everyone"]))
        console.print(table)
        adjustments = entry["adjustments"]
        if not adjustments:
            _say("  selection: not adjusted by ratings yet")
        for adjustment in adjustments:
            _say(f"  selection for {adjustment_line(adjustment)}")
    return 0


# ---- accounts -----------------------------------------------------------------------------------

NoBrowser = Annotated[
    bool, typer.Option("--no-browser", help="Print the URL only; open no browser.")
]
NO_BROWSER = "No browser could be opened here: open the URL yourself."


def dashboard_link(dashboard: str, uid: str, mission_id: str | None = None) -> str:
    """`<dashboard>/?as=<uid>#m=<mission>`: the page signs in as (locally) or asks for (in
    production) that account, then shows the mission."""
    fragment = f"m={quote(mission_id, safe='')}" if mission_id else ""
    return browser_login.dashboard_page(dashboard, {"as": uid} if uid else {}, fragment)


def _target() -> tuple[accounts.Credentials, str]:
    """The credentials file, and the project the commands are for."""
    credentials = accounts.Credentials(accounts.credentials_path())
    return credentials, accounts.target_project(credentials, os.environ, OPTIONS.project)


@app.command()
@_handled
def login(
    no_browser: NoBrowser = False,
    dashboard: Annotated[
        str | None,
        typer.Option(
            "--dashboard-url",
            help="Where to sign in (default: BUDDY_DASHBOARD_URL, else the dashboard of the "
            "last sign-in, the local one for a demo- project, else https://PROJECT.web.app).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the browser.")
    ] = browser_login.DEFAULT_TIMEOUT_SECONDS,
) -> int:
    """Sign in in the dashboard (your browser) and let the CLI act as that account.

    The account is stored for its project, which becomes the current one; its ID token is
    refreshed as it expires, until `buddy logout`. Exit status: 0 signed in, 1 cancelled in
    the browser or timed out.
    """
    credentials, project = _target()
    url = accounts.dashboard_url(project, credentials.account(project), given=dashboard)
    signed_in = browser_login.login(credentials, url, _say, timeout, open_browser=not no_browser)
    account = signed_in.account
    _say(f"Signed in as {account.name} (uid {account.uid}) to project {signed_in.project}.")
    project = accounts.target_project(credentials, os.environ, OPTIONS.project)
    if signed_in.project != project:
        # --project or a variable names another one: commands here would not use this sign-in.
        _say(
            f"Note: commands here are for project {project} (--project or BUDDY_PROJECT_ID, "
            f"GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT); use --project {signed_in.project}.",
            "yellow",
            to=errors,
        )
    return 0


WHOSE = {
    "BUDDY_ID_TOKEN": "the ID token in BUDDY_ID_TOKEN",
    "buddy login": "buddy login",
    "local user": "the local user, shared with the dashboard (buddy login for another account)",
}


@app.command()
@_handled
def whoami(as_json: Json = False) -> int:
    """Who the commands act as: the account, its project, its API and dashboard."""
    credentials, project = _target()
    me = accounts.identity(project, credentials)
    stored = credentials.account(project)
    try:
        api: str | None = accounts.api_url(project, stored, given=OPTIONS.api_url)
    except accounts.NotConfigured:
        api = None
    dashboard = accounts.dashboard_url(project, stored)
    if as_json or OPTIONS.json:
        _json({**dataclasses.asdict(me), "api_url": api, "dashboard_url": dashboard})
        return 0
    _say(f"Signed in as {me.name} (uid {me.uid or 'unknown'}) to project {project}")
    provider = f" ({me.provider})" if me.provider and me.source == "buddy login" else ""
    _say(f"  through    {WHOSE[me.source]}{provider}")
    _say(f"  API        {api or 'none known: pass --api-url'}")
    _say(f"  dashboard  {dashboard}")
    return 0


@app.command()
@_handled
def logout() -> int:
    """Forget the sign-in to the project on this computer."""
    credentials, project = _target()
    removed = credentials.remove(project)
    if removed is None:
        _say(f"Not signed in to {project}.")
    else:
        _say(f"Signed out of {project} ({removed.name}).")
    if os.environ.get("BUDDY_ID_TOKEN"):
        _say("BUDDY_ID_TOKEN is still set: commands act as its user.", "yellow")
    elif accounts.is_local(project):
        _say("Commands on it act as the local user until you buddy login again.")
    return 0


@app.command("open")
@_handled
def open_dashboard(
    mission_id: Annotated[str | None, typer.Argument(help="A mission to show there.")] = None,
    no_browser: NoBrowser = False,
) -> int:
    """Open the dashboard as the account the commands use, showing MISSION if given."""
    credentials, project = _target()
    me = accounts.identity(project, credentials)
    if mission_id is not None:
        _client().get(mission_id)  # a mission not found (or not yours) is said here
    dashboard = accounts.dashboard_url(project, credentials.account(project))
    url = dashboard_link(dashboard, me.uid, mission_id)
    _say(url)
    if not no_browser and not webbrowser.open(url):
        _say(NO_BROWSER, to=errors)
    return 0


def main() -> None:
    app()


if __name__ == "__main__":
    main()
