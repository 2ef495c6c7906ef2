"""Benchmark report: results.json, results.md and results.png from one results dict.

Every section is optional; what is missing is left out of the tables and drawn as "no data".

    python -m bench.report path/to/results.json   # re-render results.md and results.png beside it
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

DPI = 110
NONE = "\N{EN DASH}"  # an absent value
TIMES = "\N{MULTIPLICATION SIGN}"
LATENCY_ROWS = (  # key in results["latency"], label
    ("floor_listener_ms", "Firestore listener floor"),
    ("python_listener_ms", "Python listener"),
    ("python_listener_claim_ms", "↳ the claim (mission + 1 event)"),
    ("python_listener_end_ms", "↳ the end (mission + every step's events + artifact)"),
    ("dom_ms", "Dashboard DOM"),
    ("dom_snapshot_ms", "↳ the page's snapshot (JS SDK delivery)"),
    ("dom_render_ms", "↳ snapshot → DOM (the page's rendering)"),
    ("polling_staleness_ms", "Polling staleness"),
)
LATENCY_SHORT = {
    "floor_listener_ms": "floor",
    "python_listener_ms": "Python\nlistener",
    "python_listener_claim_ms": "Python:\nclaim",
    "python_listener_end_ms": "Python:\nend",
    "dom_ms": "DOM",
    "dom_snapshot_ms": "DOM:\nsnapshot",
    "dom_render_ms": "DOM:\nrender",
    "polling_staleness_ms": "polling",
}
EXECUTE_ROWS = (
    ("first_progress_ms", "Execute → first progress"),
    ("overhead_ms", "Pipeline overhead"),
)
STEERING_ROWS = (  # key in results["steering"], label, key in its "missed" counts
    ("pause_between_steps_ms", "Pause → `paused` seen, between steps", "pause_between_steps"),
    ("pause_in_crawl_ms", "Pause → `paused` seen, inside a crawl", "pause_in_crawl"),
    ("resume_first_progress_ms", "Resume → first progress", "resume"),
    ("retry_first_progress_ms", "Retry → first progress", "retry"),
)
P50_COLOR, P95_COLOR = "#4C72B0", "#DD8452"
LAZY_COLOR, EAGER_COLOR = "#55A868", "#C44E52"
WRITE_PARTS = (  # key in a writes row, label, colour
    ("mission_doc_writes", "mission doc", "#4C72B0"),
    ("event_docs", "events", "#DD8452"),
    ("other_docs", "other", "#8172B3"),
)


# ---------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table; align: one 'l', 'c' or 'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join({"l": ":---", "c": ":---:"}.get(a, "---:") for a in align) + "|",
    ]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _stat_rows(
    section: Mapping[str, Any],
    spec: Sequence[tuple[str, str]],
    notes: Mapping[str, str] | None = None,
) -> list[list[str]]:
    """label, p50, p95, n (and a note, when notes are given) for each statistic present."""
    rows = []
    for key, label in spec:
        stat = section.get(key)
        if isinstance(stat, Mapping):
            row = [label, fmt(stat.get("p50")), fmt(stat.get("p95")), fmt(stat.get("n"))]
            rows.append(row if notes is None else [*row, notes.get(key, "")])
    return rows


def _seconds(value: Any) -> str:
    return f"{fmt(value, 2)} s" if value is not None else NONE


def _steering_notes(steering: Mapping[str, Any], execute: Mapping[str, Any]) -> dict[str, str]:
    """What each steering figure was measured under, and what it is held against."""
    interval = _seconds(steering.get("interval_s"))
    step, page = _seconds(steering.get("step_delay_s")), _seconds(steering.get("page_delay_s"))
    pages = fmt((steering.get("pages_read_at_pause") or {}).get("p50"), 0)
    first = fmt((execute.get("first_progress_ms") or {}).get("p95"))
    notes = {
        "pause_between_steps_ms": f"each step held {step} (a second worker); pause sent 0 to "
        f"{interval} after the claim; bound: interval + step",
        "pause_in_crawl_ms": f"{fmt(steering.get('crawl_pages'))} linked pages, page delay "
        f"{page}; pause sent once page 1 was seen; {pages} pages read when paused (p50); "
        "bound: interval + page",
        "resume_first_progress_ms": "the missions paused between steps, resumed on the main "
        f"worker; execute → first progress p95 here: {first} ms",
        "retry_first_progress_ms": "failed on a 404 at tool_execution, retried once the page "
        f"is served; execute → first progress p95 here: {first} ms",
    }
    missed = steering.get("missed") or {}
    for key, _, missed_key in STEERING_ROWS:
        if missed.get(missed_key):
            notes[key] += f"; {fmt(missed[missed_key])} missed"
    return notes


def _met(value: Any) -> str:
    if value is True:
        return "✅"
    return "❌" if value is False else NONE


# ---------------------------------------------------------------- Markdown


def markdown(results: Mapping[str, Any]) -> str:
    meta = results.get("meta") or {}
    title = " · ".join(
        str(part) for part in (meta.get("mode"), meta.get("date"), meta.get("machine")) if part
    )
    out = [f"# Buddy Missions benchmark — {title}" if title else "# Buddy Missions benchmark"]
    facts = []
    if meta.get("python"):
        facts.append(f"Python {meta['python']}")
    if meta.get("duration_s") is not None:
        facts.append(f"run took {fmt(meta['duration_s'])} s")
    if facts:
        out += ["", ", ".join(facts) + "."]

    def section(heading: str, lines: list[str]) -> None:
        out.extend(["", f"## {heading}", "", *lines])

    latency = results.get("latency") or {}
    rows = _stat_rows(latency, LATENCY_ROWS)
    if rows:
        lines = _table(["progress update seen by", "p50 ms", "p95 ms", "n"], rows)
        if latency.get("ratio_listener_p95") is not None:
            ratio = fmt(latency["ratio_listener_p95"], 2)
            lines += ["", f"Python listener p95 / floor p95: **{ratio}{TIMES}**"]
        section("Progress latency", lines)

    rows = _stat_rows(results.get("execute") or {}, EXECUTE_ROWS)
    if rows:
        section("Execute", _table(["measure", "p50 ms", "p95 ms", "n"], rows))

    steering = results.get("steering") or {}
    notes = _steering_notes(steering, results.get("execute") or {})
    spec = [(key, label) for key, label, _ in STEERING_ROWS]
    rows = _stat_rows(steering, spec, notes)
    if rows:
        lines = _table(["measure", "p50 ms", "p95 ms", "n", "note"], rows, "lrrrl")
        lines += [
            "",
            "From the request sent to the first snapshot showing its effect at a listener on "
            "the mission document: status `paused`, or `running` (the new run's claim, its "
            "first progress write) after a resume or a retry. Progress interval "
            f"{_seconds(steering.get('interval_s'))}.",
        ]
        section("Steering", lines)

    scheduled = results.get("schedules") or {}
    if scheduled:
        tick, fire, burst = scheduled["tick"], scheduled["fire_to_queued_ms"], scheduled["burst"]
        lines = _table(
            ["measure", "value"],
            [
                [
                    f"a tick, {fmt(tick['due'])} due of {fmt(tick['schedules'])}",
                    f"{fmt(tick['tick_ms'])} ms, {fmt(tick['reads'])} reads "
                    f"({fmt(tick['reads_per_due'])} per due schedule), {fmt(tick['fired'])} fired",
                ],
                [
                    "reading every schedule instead",
                    f"{fmt(tick['scan_all_ms'])} ms, {fmt(tick['scan_all_reads'])} reads",
                ],
                [
                    f"fire time → mission queued (ticks every {fmt(fire['tick_s'], 1)} s)",
                    f"p50 {fmt(fire['p50'])} ms, p95 {fmt(fire['p95'])} ms, n {fmt(fire['n'])}"
                    + (f", {fmt(fire['missed'])} missed" if fire["missed"] else ""),
                ],
                [
                    f"{fmt(burst['schedules'])} due in one minute, {fmt(burst['tickers'])} "
                    "racing tickers",
                    f"{fmt(burst['missions'])} missions, {fmt(burst['duplicated'])} duplicated, "
                    f"{fmt(burst['missing'])} missing; {fmt(burst['wall_s'], 2)} s "
                    f"({fmt(burst['fires_per_s'], 1)} fires/s)",
                ],
            ],
            "ll",
        )
        lines += [
            "",
            "In-process scheduler on the emulator, publishing to a counter (the missions are "
            "not run). Fire → queued includes waiting for the next tick: the local stack ticks "
            "every 15 s, Cloud Scheduler every minute.",
        ]
        section("Schedules", lines)

    if "extraction" in results:
        from bench import extraction

        section("Extraction quality", extraction.table(results["extraction"]).splitlines())

    rated = results.get("ratings") or {}
    if rated:
        rows = [
            [
                f"{fmt(r['ratings'])} ratings at once, {fmt(r['shards'])} shard"
                + ("s" if r["shards"] != 1 else ""),
                f"p50 {fmt(r['p50_ms'])} ms, p95 {fmt(r['p95_ms'])} ms; {fmt(r['wall_s'], 2)} s "
                f"({fmt(r['per_s'], 1)}/s); {fmt(r['counted'])} counted",
            ]
            for r in rated["at_once"]
        ]
        rows += [
            [
                f"GET /stats/tools with {fmt(r['missions'])} missions of a tool",
                f"{fmt(r['view_ms'])} ms, {fmt(r['documents_read'])} documents read; "
                f"{fmt(r['counted'])} counted",
            ]
            for r in rated["stats_reads"]
        ]
        read = rated["selection_read_ms"]
        rows.append(
            [
                "tool selection's read of a tool's ratings",
                f"p50 {fmt(read['p50_ms'])} ms, p95 {fmt(read['p95_ms'])} ms, n {fmt(read['n'])}",
            ]
        )
        lines = _table(["measure", "value"], rows, "ll")
        lines += [
            "",
            "In-process on the emulator: each rating is one mission write whose batch also "
            "increments the tool's counters (a random shard of everyone's, and the owner's). "
            "The emulator does not model Firestore's per-document write rate, so the one-shard "
            "row shows contention on this machine only.",
        ]
        section("Ratings", lines)

    scale = results.get("scale") or []
    if scale:
        header = ["missions", "throughput /s", "e2e p95 ms", "lost", "duplicated", "stuck"]
        keys = ["missions", "throughput_per_s", "e2e_p95_ms", "lost", "duplicated", "stuck"]
        rows = [
            [fmt(row.get(k), 2 if k == "throughput_per_s" else 1) for k in keys] for row in scale
        ]
        section("Scale", _table(header, rows, "r" * len(header)))

    writes = results.get("writes") or []
    if writes:
        header = [
            "sub-steps",
            "mission doc",
            "of which worker",
            "worker reads",
            "events",
            "other",
            "total",
            "peak doc writes/s",
            "least gap s",
        ]
        keys = [
            "substeps",
            "mission_doc_writes",
            "worker_writes",
            "worker_reads_before_writes",
            "event_docs",
            "other_docs",
            "total_writes",
            "peak_doc_writes_per_s",
            "min_gap_s",
        ]
        rows = [[fmt(row.get(k)) for k in keys] for row in writes]
        section("Firestore writes per mission", _table(header, rows, "r" * len(header)))

    cold = results.get("cold_start") or {}
    rows = []
    for target in ("api", "worker"):
        c = cold.get(target)
        if isinstance(c, Mapping):
            runs = len(c.get("lazy_ms") or []) or None
            rows.append(
                [
                    target,
                    fmt(c.get("lazy_p50_ms")),
                    fmt(c.get("eager_p50_ms")),
                    fmt(c.get("ratio_p50"), 2),
                    fmt(runs),
                ]
            )
    if rows:
        header = ["target", "lazy p50 ms", "eager p50 ms", "lazy / eager", "runs each"]
        lines = _table(header, rows)
        lines += ["", "Process start → first response served (fresh functions-framework process)."]
        section("Cold start", lines)

    rss = results.get("rss_mb") or {}
    if rss:
        section("Memory", _table(["function", "RSS MB"], [[k, fmt(v)] for k, v in rss.items()]))

    targets = results.get("targets") or []
    if targets:
        rows = [
            [
                t.get("target", ""),
                fmt(t.get("measured")),
                _met(t.get("met")),
                t.get("note") or "",
            ]
            for t in targets
        ]
        section("Targets", _table(["target", "measured", "met", "note"], rows, "llcl"))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- figure


def _no_data(ax: Axes, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _label_bars(ax: Axes, bars: Any, digits: int = 0) -> None:
    ax.bar_label(bars, fmt=f"{{:,.{digits}f}}", fontsize=7, padding=2)


def _plot_latency(ax: Axes, latency: Mapping[str, Any]) -> None:
    title = "(a) Progress latency"
    present = [(key, latency[key]) for key, _ in LATENCY_ROWS if isinstance(latency.get(key), dict)]
    if not present:
        return _no_data(ax, title)
    xs = range(len(present))
    width = 0.38
    p50 = [stat.get("p50") or 0 for _, stat in present]
    p95 = [stat.get("p95") or 0 for _, stat in present]
    _label_bars(ax, ax.bar([x - width / 2 for x in xs], p50, width, label="p50", color=P50_COLOR))
    _label_bars(ax, ax.bar([x + width / 2 for x in xs], p95, width, label="p95", color=P95_COLOR))
    ax.set_xticks(list(xs), [LATENCY_SHORT[key] for key, _ in present])
    if any(v > 0 for v in p50 + p95):
        ax.set_yscale("log")
        ax.margins(y=0.25)
    ratio = latency.get("ratio_listener_p95")
    if ratio is not None:
        title += f" — listener p95 = {ratio:.2f}{TIMES} floor"
    ax.set_title(title)
    ax.set_ylabel("latency (ms, log scale)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="major", alpha=0.3)


def _plot_scale(ax: Axes, scale: Sequence[Mapping[str, Any]]) -> None:
    title = "(b) Scale"
    if not scale:
        return _no_data(ax, title)
    xs = list(range(len(scale)))
    throughput = [row.get("throughput_per_s") or 0 for row in scale]
    bars = ax.bar(xs, throughput, 0.6, color=P50_COLOR, label="throughput")
    _label_bars(ax, bars, 2)
    ax.set_xticks(xs, [str(row.get("missions", "?")) for row in scale])
    ax.set_xlabel("concurrent missions")
    ax.set_ylabel("throughput (missions/s)", color=P50_COLOR)
    ax.margins(y=0.15)
    right = ax.twinx()
    p95 = [row.get("e2e_p95_ms") for row in scale]
    right.plot(xs, p95, "o-", color=P95_COLOR, label="e2e p95")
    right.set_ylabel("end-to-end p95 (ms)", color=P95_COLOR)
    right.set_ylim(bottom=0, top=max((v or 0 for v in p95), default=0) * 1.2 or 1)
    problems = [
        f"{row.get('missions')}: " + ", ".join(f"{row[k]} {k}" for k in flagged)
        for row in scale
        if (flagged := [k for k in ("lost", "duplicated", "stuck") if row.get(k)])
    ]
    if problems:
        title += " — " + "; ".join(problems)
    ax.set_title(title, color="firebrick" if problems else "black")
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper left")


def _plot_writes(ax: Axes, writes: Sequence[Mapping[str, Any]]) -> None:
    title = "(c) Firestore writes per mission"
    if not writes:
        return _no_data(ax, title)
    xs = list(range(len(writes)))
    bottom = [0.0] * len(writes)
    for key, label, color in WRITE_PARTS:
        values = [row.get(key) or 0 for row in writes]
        ax.bar(xs, values, 0.6, bottom=bottom, label=label, color=color)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for x, row, height in zip(xs, writes, bottom, strict=True):
        total = row.get("total_writes", height)
        ax.annotate(
            fmt(total),
            (x, height),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_xticks(xs, [str(row.get("substeps", "?")) for row in writes])
    ax.set_xlabel("sub-steps reported by the tool")
    ax.set_ylabel("document writes per mission")
    ax.margins(y=0.12)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


def _plot_cold_start(ax: Axes, cold: Mapping[str, Any]) -> None:
    title = "(d) Cold start p50 (process start → first response)"
    present = [t for t in ("api", "worker") if isinstance(cold.get(t), dict)]
    if not present:
        return _no_data(ax, title)
    xs = range(len(present))
    width = 0.38
    lazy = [cold[t].get("lazy_p50_ms") or 0 for t in present]
    eager = [cold[t].get("eager_p50_ms") or 0 for t in present]
    bars = ax.bar(
        [x - width / 2 for x in xs], lazy, width, label="lazy (main.py)", color=LAZY_COLOR
    )
    _label_bars(ax, bars)
    bars = ax.bar(
        [x + width / 2 for x in xs], eager, width, label="eager imports", color=EAGER_COLOR
    )
    _label_bars(ax, bars)
    labels = []
    for t in present:
        ratio = cold[t].get("ratio_p50")
        labels.append(f"{t}\n(lazy = {ratio:.2f}{TIMES} eager)" if ratio is not None else t)
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("time to first response (ms)")
    ax.margins(y=0.15)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


def figure(results: Mapping[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    try:
        _plot_latency(axes[0][0], results.get("latency") or {})
        _plot_scale(axes[0][1], results.get("scale") or [])
        _plot_writes(axes[1][0], results.get("writes") or [])
        _plot_cold_start(axes[1][1], results.get("cold_start") or {})
        meta = results.get("meta") or {}
        parts = [str(meta[k]) for k in ("mode", "date", "machine") if meta.get(k)]
        fig.suptitle("Buddy Missions benchmark" + (" — " + " · ".join(parts) if parts else ""))
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- entry points


def render(results: Mapping[str, Any], out_dir: Path) -> None:
    """results.md and results.png (not results.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(markdown(results), encoding="utf-8")
    figure(results, out_dir / "results.png")


def write(results: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    (out_dir / "results.json").write_text(text + "\n", encoding="utf-8")
    render(results, out_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.report path/to/results.json")
    source = Path(sys.argv[1])
    render(json.loads(source.read_text(encoding="utf-8")), source.parent)
    print(f"wrote {source.parent / 'results.md'} and {source.parent / 'results.png'}")
