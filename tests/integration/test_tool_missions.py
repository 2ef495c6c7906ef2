"""Missions that run the web tools end to end: pages and search served on loopback."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from google.cloud import firestore

from ..localserver import LocalServer, Reply
from .conftest import MissionWatcher, User, events_of, start_watched, wait_until

SCOPE = {"allowed_domains": ["127.0.0.1"]}


def small_site(site: LocalServer, pages: int = 3, delay: float = 0.0) -> str:
    """Registers a few linked pages under a fresh prefix; returns the first page's URL."""
    prefix = f"/{uuid.uuid4().hex[:8]}"
    for n in range(1, pages + 1):
        links = "".join(f'<a href="{prefix}/p{m}">Page {m}</a> ' for m in range(1, pages + 1))
        html = (
            f"<html><head><title>Guide part {n}</title><script>var hidden = 1;</script></head>"
            f"<body><nav>{links}</nav><main><h1>Part {n}</h1><p>Lesson {n} explains loops."
            f"</p></main></body></html>"
        )
        site.route(f"{prefix}/p{n}", Reply(body=html, delay=delay))
    return site.url(f"{prefix}/p1")


def test_web_extract_mission_leaves_an_artifact_worth_opening(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """Extracting three linked pages completes with their text, links and page progress."""
    url = small_site(site, pages=3, delay=0.3)
    mission_id, watcher = start_watched(
        alice, watch, f"extract the guide at {url}", scope=SCOPE, inputs={"max_pages": 3}
    )
    final = watcher.wait_terminal()
    assert final["status"] == "completed", final["execution_record"].get("error")
    record = final["execution_record"]
    assert record["tool_used"] == "web_extract"
    assert record["cost_usd"] == {"estimated": 0.003, "actual": 0.003}

    artifact = alice.call("GET", f"/missions/{mission_id}/artifact").json()
    assert artifact["title"] == "Guide part 1"
    assert "Lesson 1 explains loops." in artifact["content"]
    assert "Lesson 3 explains loops." in artifact["content"]
    assert "var hidden" not in artifact["content"]
    assert "Top links" in artifact["preview"]
    assert len(artifact["data"]["pages"]) == 3

    details = [(t["current_step"] or {}).get("detail") for t in watcher.trackers()]
    seen = [f"{d['done']}/{d['total']} {d['unit']}" for d in details if d]
    assert seen and all(s.endswith("pages") for s in seen), watcher.percents()
    percents = watcher.percents()
    assert any(55 < p < 80 for p in percents), f"no in-step progress in {percents}"


def test_web_search_mission_ranks_results_within_scope(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """A search mission asks the configured provider and keeps in-scope results, best first."""
    site.json(
        "/search",
        {
            "results": [
                {"url": "https://docs.python.org/3/tutorial/", "title": "Tutorial", "score": 2},
                {"url": "https://spam.example/python", "title": "Spam", "score": 9},
                {"url": "https://www.python.org/about/", "title": "About", "score": 5},
            ]
        },
    )
    mission_id, watcher = start_watched(
        alice, watch, "find python tutorials", scope={"allowed_domains": ["python.org"]}
    )
    final = watcher.wait_terminal()
    assert final["status"] == "completed", final["execution_record"].get("error")
    assert final["execution_record"]["tool_used"] == "web_search"
    asked = [r for r in site.requests if r.path == "/search"]
    assert asked[-1].query["q"] == "python tutorials"
    results = alice.call("GET", f"/missions/{mission_id}/artifact").json()["data"]["results"]
    assert [r["title"] for r in results] == ["About", "Tutorial"]


@pytest.mark.parametrize(
    ("objective", "fields", "step", "message"),
    [
        pytest.param(
            "extract {url}",
            {"inputs": {"max_pages": 10}, "budget_usd": 0.005},
            "budget_check",
            "Budget exceeded: $0.01 > $0.005 limit",
            id="budget",
        ),
        pytest.param(
            "extract https://example.com/page",
            {},
            "tool_execution",
            "Tool execution failed: example.com is outside the mission's allowed domains "
            "(127.0.0.1)",
            id="out-of-scope",
        ),
        pytest.param(
            "extract {url}-missing",
            {},
            "tool_execution",
            "Tool execution failed: {url}-missing answered HTTP 404",
            id="not-found",
        ),
    ],
)
def test_web_extract_failures_are_explained(
    alice: User,
    site: LocalServer,
    watch: Callable[[str], MissionWatcher],
    objective: str,
    fields: dict[str, object],
    step: str,
    message: str,
) -> None:
    """Budget, scope and HTTP failures end `failed` at their step with a readable message."""
    url = small_site(site, pages=1)
    _, watcher = start_watched(alice, watch, objective.format(url=url), scope=SCOPE, **fields)
    error = watcher.wait_terminal()["execution_record"]["error"]
    assert (error["step_name"], error["message"]) == (step, message.format(url=url))


def test_bad_tool_inputs_are_refused_at_create(alice: User) -> None:
    """Inputs that the chosen tool would reject are a 422 before anything is stored."""
    response = alice.call(
        "POST",
        "/missions",
        json={"objective": "extract it", "tool": "web_extract", "inputs": {"url": "ftp://x"}},
    )
    assert response.status_code == 422
    assert "inputs.url" in response.json()["error"]["message"]
    response = alice.call("POST", "/missions", json={"objective": "x", "inputs": {"bogus": 1}})
    assert response.status_code == 422


def test_cancel_stops_a_long_extraction_between_pages(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """Cancelling mid-crawl ends `cancelled` at the percent reached, without fetching the rest."""
    url = small_site(site, pages=6, delay=0.5)
    prefix = url.rsplit("/", 1)[0].split("127.0.0.1:", 1)[1].split("/", 1)[1]
    mission_id, watcher = start_watched(
        alice, watch, f"extract {url}", scope=SCOPE, inputs={"max_pages": 6}
    )
    crawling = threading.Event()
    while not crawling.wait(0.05):
        if any(55 < p < 80 for p in watcher.percents()):
            crawling.set()
        assert watcher.last is None or watcher.last["status"] != "completed"
    assert alice.call("POST", f"/missions/{mission_id}/cancel").status_code == 200
    final = watcher.wait_terminal()
    assert final["status"] == "cancelled"
    percent = final["execution_record"]["progress_tracker"]["progress_percent"]
    assert 55 < percent < 80
    assert events_of(alice, mission_id)[-1]["type"] == "mission_cancelled"
    fetched = [p for p in site.paths if p.startswith(f"/{prefix}/")]
    assert len(fetched) < 6
    assert alice.call("GET", f"/missions/{mission_id}/artifact").status_code == 404


def test_finished_missions_feed_the_duration_statistics(
    alice: User, watch: Callable[[str], MissionWatcher], db: firestore.Client
) -> None:
    """Each finished mission folds its step durations into the stats the ETA learns from
    (just after its last write: the owner never waits for them)."""
    _, watcher = start_watched(alice, watch, "calculate 1+1")
    watcher.wait_terminal()

    def recorded() -> bool:
        shards = [s.to_dict() for s in db.collection("stats").stream()]
        durations = [d for shard in shards for d in shard["durations"]]
        return "finalize" in durations and "tool_execution:calculate" in durations

    wait_until(recorded, "the durations recorded", timeout=10)


def _article(title: str, sentences: list[str]) -> str:
    body = "".join(f"<p>{s}</p>" for s in sentences)
    return (
        f"<html lang='en'><head><title>{title}</title></head><body>"
        f"<nav><a href='/'>Home</a></nav><article><h1>{title}</h1>{body}</article>"
        f"<footer>Site footer</footer></body></html>"
    )


def test_research_mission_asks_for_a_host_then_reports_without_fetching_twice(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    """'research …' through the stack: the local SearXNG-shaped search, then the sources in
    scope; a result on another host pauses the mission (on_limit ask) naming it; allowed and
    resumed, the mission reads it too, searching and fetching nothing a second time, and the
    report cites every source. Sub-step detail counts sources."""
    tag = uuid.uuid4().hex[:8]
    paths = [f"/r-{tag}/{name}" for name in ("listeners", "limits", "quotas")]
    for path, topic in zip(paths, ("listeners", "limits", "quotas"), strict=True):
        site.page(
            path,
            _article(
                f"Realtime {topic}",
                [
                    f"The realtime {topic} of a database decide how many clients it serves.",
                    f"Each of the {topic} is documented with its exact figure in the console.",
                    "A long enough paragraph keeps the extractor from calling this navigation.",
                ],
            ),
        )
    elsewhere = f"http://localhost:{site.port}{paths[1]}"
    site.json(
        "/search",
        {
            "results": [
                {"url": site.url(paths[0]), "title": "Listeners", "content": "about listeners"},
                {"url": elsewhere, "title": "Limits", "content": "about limits"},
                {"url": site.url(paths[2]), "title": "Quotas", "content": "about quotas"},
            ]
        },
    )
    mission_id, watcher = start_watched(
        alice,
        watch,
        "research the realtime listener limits",
        scope={"allowed_domains": ["127.0.0.1"]},
        on_limit="ask",
    )

    def mission() -> dict:
        return dict(alice.call("GET", f"/missions/{mission_id}").json())

    wait_until(lambda: mission()["status"] == "paused", "the research paused")
    reason = mission()["pause_reason"]
    assert (reason["code"], reason["hosts"]) == ("out_of_scope", ["localhost"]), reason
    assert not any(r.path.startswith(f"/r-{tag}/") for r in site.requests)  # asked first

    patched = alice.call(
        "PATCH",
        f"/missions/{mission_id}",
        json={"scope": {"allowed_domains": ["127.0.0.1", "localhost"]}},
    )
    assert patched.status_code == 200, patched.text
    assert alice.call("POST", f"/missions/{mission_id}/resume").status_code == 202
    final = watcher.wait_terminal()

    assert final["status"] == "completed", final["execution_record"].get("error")
    assert final["execution_record"]["tool_used"] == "research"
    asked = [r for r in site.requests if r.path == "/search"]  # earlier tests' too
    assert [r.query["q"] for r in asked].count("the realtime listener limits") == 1
    fetched = [r.path for r in site.requests if r.path.startswith(f"/r-{tag}/")]
    assert sorted(fetched) == sorted(paths)  # each source once
    artifact = alice.call("GET", f"/missions/{mission_id}/artifact").json()
    assert (artifact["type"], artifact["format"]) == ("research_report", "markdown")
    assert [s["title"] for s in artifact["data"]["sources"]] == [
        "Realtime listeners",
        "Realtime limits",
        "Realtime quotas",
    ]
    assert artifact["data"]["out_of_scope"] == []
    assert "### [3] Realtime quotas" in artifact["content"]
    assert f"[\\[1\\]]({site.url(paths[0])})" in artifact["data"]["summary"]
    assert "Site footer" not in artifact["content"]
    # Sub-step detail, as the log keeps it (the latest in-step update of each write wins; a
    # listener may see none of them when three local pages take less than a write interval).
    progress = [e["message"] for e in events_of(alice, mission_id) if e["type"] == "step_progress"]
    assert any(m.startswith("sources 3/3") for m in progress), progress


def test_research_without_asking_lists_results_outside_the_scope(
    alice: User, site: LocalServer, watch: Callable[[str], MissionWatcher]
) -> None:
    tag = uuid.uuid4().hex[:8]
    site.page(f"/o-{tag}", _article("Inside", ["An inside page about the listener limits."]))
    site.json(
        "/search",
        {
            "results": [
                {"url": "https://firebase.example/limits", "title": "Outside", "content": "x"},
                {"url": site.url(f"/o-{tag}"), "title": "Inside", "content": "y"},
            ]
        },
    )
    mission_id, watcher = start_watched(
        alice, watch, "find out the listener limits", scope={"allowed_domains": ["127.0.0.1"]}
    )
    final = watcher.wait_terminal()
    assert final["status"] == "completed", final["execution_record"].get("error")
    data = alice.call("GET", f"/missions/{mission_id}/artifact").json()["data"]
    assert [s["title"] for s in data["sources"]] == ["Inside"]
    assert [(o["host"], o["snippet"]) for o in data["out_of_scope"]] == [("firebase.example", "x")]
