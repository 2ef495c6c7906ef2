"""The dashboard in a real Chromium, served by the Hosting emulator, driven as a person would."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import requests
from playwright.sync_api import Locator, Page, expect

from ..localserver import LocalServer, Reply
from .conftest import ARTIFACTS, Stack


def slow_page(site: LocalServer, delay: float) -> str:
    path = f"/dash-{uuid.uuid4().hex[:8]}"
    site.route(
        path,
        Reply(body=f"<title>Slow {path}</title><main><p>Worth the wait.</p></main>", delay=delay),
    )
    return site.url(path)


def propose(
    page: Page, objective: str, domains: str = "", budget: str = "", inputs: str = ""
) -> str:
    """Fills the form like a person and returns the new mission's id."""
    page.fill("#objective", objective)
    page.fill("#domains", domains)
    if budget:
        page.fill("#budget", budget)
    page.fill("#inputs", inputs)
    page.get_by_role("button", name="Propose mission").click()
    card = page.locator("#live article.mission").filter(has_text=objective).first
    expect(card).to_have_attribute("data-status", "proposed", timeout=10_000)
    return str(card.get_attribute("data-mission-id"))


def card(page: Page, section: str, mission_id: str) -> Locator:
    return page.locator(f"#{section} article.mission[data-mission-id='{mission_id}']")


def launch(page: Page, mission_id: str) -> None:
    live = card(page, "live", mission_id)
    expect(live.locator("button.execute")).to_be_disabled()
    live.locator("button.approve").click()
    expect(live).to_have_attribute("data-status", "approved")
    expect(live.locator("button.approve")).to_be_disabled()
    live.locator("button.execute").click()


def test_create_approve_execute_shows_live_progress_to_100(
    open_dashboard: Callable[[], Page], site: LocalServer
) -> None:
    """The bar moves through intermediate values while the mission runs, then reaches 100,
    with the step text, the event log and the artifact on screen."""
    page = open_dashboard()
    url = slow_page(site, delay=1.5)
    mission_id = propose(page, f"extract {url}", domains="127.0.0.1")
    launch(page, mission_id)
    running = card(page, "live", mission_id)
    expect(running).to_have_attribute("data-status", "running", timeout=10_000)
    expect(running.locator(".step")).to_contain_text("Step 5/7: tool_execution", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-mid-run.png"), full_page=True)

    done = card(page, "pipeline", mission_id)
    expect(done).to_have_attribute("data-status", "completed", timeout=30_000)
    bar = done.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    seen = page.evaluate(f"window.__progress['{mission_id}'] || []")
    assert any(0 < value < 100 for value in seen), seen
    assert seen == sorted(seen), seen
    expect(done.locator(".tool")).to_contain_text("web_extract")
    done.locator("a.artifact-link").click()
    expect(page.locator("#artifact .title")).to_contain_text("Slow", timeout=10_000)
    log = page.locator("#event-log li")
    expect(log.last).to_contain_text("mission_completed", timeout=10_000)
    seqs = [int(s) for s in log.evaluate_all("items => items.map(i => i.dataset.seq)")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    page.screenshot(path=str(ARTIFACTS / "dashboard-end.png"), full_page=True)


def test_a_reload_mid_run_shows_the_same_progress_or_more(
    open_dashboard: Callable[[], Page], site: LocalServer
) -> None:
    """Refreshing the page while a mission runs restores where it is, never earlier."""
    page = open_dashboard()
    mission_id = propose(page, f"extract {slow_page(site, delay=3)}", domains="127.0.0.1")
    launch(page, mission_id)
    live = card(page, "live", mission_id)
    expect(live.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "55", timeout=10_000)
    before = int(live.get_by_role("progressbar").get_attribute("aria-valuenow") or 0)
    page.reload()
    bar = page.locator(f"article.mission[data-mission-id='{mission_id}'] [role=progressbar]").first
    expect(bar).to_be_visible(timeout=20_000)
    assert int(bar.get_attribute("aria-valuenow") or 0) >= before
    expect(card(page, "pipeline", mission_id)).to_have_attribute(
        "data-status", "completed", timeout=30_000
    )


def test_another_user_sees_none_of_my_missions(open_dashboard: Callable[[], Page]) -> None:
    """A second person, in another browser profile, sees an empty dashboard."""
    mine = open_dashboard()
    propose(mine, "calculate 1+2+3")
    theirs = open_dashboard()
    expect(theirs.locator("article.mission")).to_have_count(0)
    expect(mine.locator("#pipeline article.mission")).to_have_count(1)


def test_a_failed_mission_shows_its_step_and_message(
    open_dashboard: Callable[[], Page], site: LocalServer
) -> None:
    """A mission over budget ends failed, with the failing step and the reason shown."""
    page = open_dashboard()
    mission_id = propose(
        page,
        f"extract {slow_page(site, 0)}",
        domains="127.0.0.1",
        budget="0.005",
        inputs='{"max_pages": 10}',
    )
    launch(page, mission_id)
    failed = card(page, "pipeline", mission_id)
    expect(failed).to_have_attribute("data-status", "failed", timeout=20_000)
    expect(failed.locator(".failure")).to_contain_text(
        "budget_check: Budget exceeded: $0.01 > $0.005 limit"
    )
    expect(failed.locator(".badge")).to_have_text("failed")


def test_bad_input_and_refused_actions_are_explained_inline(
    open_dashboard: Callable[[], Page],
) -> None:
    """Invalid JSON inputs and API refusals show a message next to what caused them."""
    page = open_dashboard()
    page.fill("#objective", "calculate 2+2")
    page.fill("#inputs", "{not json")
    page.get_by_role("button", name="Propose mission").click()
    expect(page.locator("#create-error")).not_to_be_empty()
    expect(page.locator("article.mission")).to_have_count(0)
    page.fill("#inputs", '{"colour": "red"}')
    page.get_by_role("button", name="Propose mission").click()
    expect(page.locator("#create-error")).to_contain_text("inputs")


def test_cancel_from_the_dashboard(open_dashboard: Callable[[], Page], site: LocalServer) -> None:
    """Cancelling a running mission from its card ends it cancelled."""
    page = open_dashboard()
    mission_id = propose(page, f"extract {slow_page(site, delay=3)}", domains="127.0.0.1")
    launch(page, mission_id)
    live = card(page, "live", mission_id)
    expect(live).to_have_attribute("data-status", "running", timeout=10_000)
    live.locator("button.cancel").click()
    ended = card(page, "pipeline", mission_id)
    expect(ended).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(ended.locator("button.cancel")).to_be_disabled()


def test_the_tool_choices_are_the_apis_and_a_chosen_tool_is_sent(
    open_dashboard: Callable[[], Page], stack: Stack
) -> None:
    """The Tool menu lists what the API's /openapi.json offers, and a mission proposed with a
    tool chosen there carries it."""
    described = requests.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    tool = described["components"]["schemas"]["CreateMission"]["properties"]["tool"]
    offered = next(choice["enum"] for choice in tool["anyOf"] if "enum" in choice)
    page = open_dashboard()
    options = page.locator("#tool option")
    expect(options).to_have_count(len(offered) + 1)
    assert options.all_inner_texts() == ["Automatic", *offered]
    page.select_option("#tool", "calculate")
    mission_id = propose(page, "calculate 9*9")
    expect(card(page, "pipeline", mission_id).locator(".tool")).to_contain_text("calculate")


def linked_slow_pages(site: LocalServer, count: int, delay: float) -> tuple[str, list[str]]:
    """`count` pages, each linking to the next and each answering after `delay` seconds."""
    base = f"/crawl-{uuid.uuid4().hex[:8]}"
    paths = [f"{base}/{n}" for n in range(1, count + 1)]
    for n, path in enumerate(paths, start=1):
        link = f'<a href="{paths[n]}">Part {n + 1}</a>' if n < count else ""
        body = f"<title>Part {n}</title><main><p>Part {n} of the crawl.</p>{link}</main>"
        site.route(path, Reply(body=body, delay=delay))
    return site.url(paths[0]), paths


def test_pause_a_running_crawl_from_its_card_then_resume_it(
    open_dashboard: Callable[[], Page], site: LocalServer
) -> None:
    """A crawl paused from its card waits in the Paused group, and Resume carries it on to
    completion without reading any page twice."""
    page = open_dashboard()
    url, paths = linked_slow_pages(site, count=4, delay=2.5)
    mission_id = propose(page, f"extract {url}", domains="127.0.0.1", inputs='{"max_pages": 4}')
    launch(page, mission_id)
    running = card(page, "live-list", mission_id)
    expect(running.locator(".detail")).to_contain_text("pages 1/", timeout=15_000)
    expect(running.locator("button.resume")).to_be_disabled()
    running.locator("button.pause").click()
    expect(running.locator(".pausing")).to_have_text(
        "pause requested — pauses at the next step boundary"
    )
    expect(running.locator("button.pause")).to_be_disabled()

    paused = card(page, "paused", mission_id)
    expect(paused).to_have_attribute("data-status", "paused", timeout=15_000)
    expect(card(page, "live-list", mission_id)).to_have_count(0)
    expect(page.locator("#paused-heading")).to_contain_text("1 mission")
    expect(paused.locator(".pause-reason")).to_contain_text("Paused by its owner")
    expect(paused.locator("button.pause")).to_be_disabled()
    paused.locator("button.resume").click()
    resumed = card(page, "live-list", mission_id)
    expect(resumed.locator("button.pause")).to_be_focused(timeout=10_000)  # the next step

    done = card(page, "pipeline", mission_id)
    expect(done).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(page.locator("#paused")).to_be_hidden()
    fetched = [path for path in site.paths if path in paths]
    assert sorted(fetched) == sorted(paths), fetched  # every page once: resumed where it stopped


def test_an_ask_mission_over_budget_pauses_with_the_budget_it_needs_filled_in(
    open_dashboard: Callable[[], Page],
) -> None:
    """A mission that asks at a limit pauses at budget_check with the needed budget filled in;
    raising the budget from that form resumes it to completion."""
    page = open_dashboard()
    page.get_by_label("Ask me").check()
    mission_id = propose(page, "calculate 2+2", budget="0.00005")
    launch(page, mission_id)
    paused = card(page, "paused", mission_id)
    expect(paused).to_have_attribute("data-status", "paused", timeout=20_000)
    expect(paused.locator(".step")).to_contain_text("budget_check")
    expect(paused.locator(".pause-reason")).to_contain_text("Budget exceeded")
    expect(paused.locator(".pause-expiry")).to_contain_text("Waits until")
    budget = paused.get_by_label("New budget (USD)")
    expect(budget).to_have_value("0.0001")
    page.screenshot(path=str(ARTIFACTS / "dashboard-paused.png"), full_page=True)
    paused.get_by_role("button", name="Raise budget and resume").click()
    done = card(page, "pipeline", mission_id)
    expect(done).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(page.locator("#paused")).to_be_hidden()


def test_a_failed_mission_is_retried_after_an_edit_and_a_clone_copies_it(
    open_dashboard: Callable[[], Page],
) -> None:
    """A mission failed over budget completes once its budget is edited and it is retried;
    its Clone is a new proposed mission with the same objective, selected."""
    page = open_dashboard()
    mission_id = propose(page, "calculate 2+2", budget="0.00005")
    launch(page, mission_id)
    failed = card(page, "pipeline", mission_id)
    expect(failed).to_have_attribute("data-status", "failed", timeout=20_000)

    failed.get_by_role("button", name="Edit").click()
    editor = failed.get_by_role("form", name="Edit mission")
    expect(editor.get_by_label("Objective")).to_have_count(0)  # only the limits, once failed
    editor.get_by_label("Allowed domains").fill("exa_mple.com")
    editor.get_by_role("button", name="Save changes").click()
    expect(editor.locator(".editor-error")).to_contain_text("allowed_domains")
    editor.get_by_label("Allowed domains").fill("")
    editor.get_by_label("Budget (USD)").fill("0.0001")
    page.screenshot(path=str(ARTIFACTS / "dashboard-edit.png"), full_page=True)
    editor.get_by_role("button", name="Save changes").click()
    expect(editor).to_have_count(0)
    failed.get_by_role("button", name="Retry").click()
    expect(failed).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(failed.locator(".run")).to_have_text("Run 2")

    failed.get_by_role("button", name="Clone").click()
    copy = page.locator("#live-list article.mission[aria-current='true']")
    expect(copy).to_have_attribute("data-status", "proposed", timeout=10_000)
    expect(copy.locator(".objective")).to_have_text("calculate 2+2")
    assert copy.get_attribute("data-mission-id") != mission_id
    expect(page.locator("#detail-meta")).to_contain_text("budget $0.0001")
    expect(page.locator("#event-log")).to_contain_text("mission_cloned", timeout=10_000)


def test_schedule_a_mission_from_its_card_and_steer_the_schedule(
    open_dashboard: Callable[..., Page],
) -> None:
    """Schedule… on a mission card opens the form with it; the new schedule shows its next five
    fires in the viewer's local time (the browser's zone, here New York); Run now adds a
    fire whose link opens its mission; Pause and Resume swap; a bad zone is explained; Delete
    removes it."""
    page = open_dashboard(timezone_id="America/New_York")
    mission_id = propose(page, "calculate 6*7")
    card(page, "live", mission_id).get_by_role("button", name="Schedule…").click()
    form = page.locator("#schedule-form")
    expect(form).to_be_visible()
    expect(form.locator("#schedule-objective")).to_have_text("calculate 6*7")
    expect(form.get_by_label("Time zone")).to_have_value("America/New_York")
    form.get_by_label("Time zone").fill("Berlin")
    form.get_by_role("button", name="Create schedule").click()
    expect(form.locator("#schedule-error")).to_contain_text("not an IANA time zone")
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_label("Cron").fill("0 9 * * 1-5")
    form.get_by_role("button", name="Create schedule").click()
    expect(form).to_be_hidden()

    schedule = page.locator("#schedules article.schedule").first
    expect(schedule.locator(".when")).to_contain_text("At 09:00 on Monday through Friday")
    fires = schedule.locator(".next-fires time")
    expect(fires).to_have_count(5)
    # 09:00 in Berlin is 03:00 in New York (02:00 or 04:00 in the weeks the changes differ).
    for text in fires.all_inner_texts():
        assert any(f"0{h}:00" in text for h in (2, 3, 4)) and ("EST" in text or "EDT" in text)

    schedule.get_by_role("button", name="Run now").click()
    link = schedule.locator(".history a.mission-link").first
    expect(link).to_be_visible(timeout=10_000)
    fired = str(link.inner_text())
    link.click()
    expect(page.locator("#event-log")).to_contain_text(
        "Mission created by schedule", timeout=10_000
    )
    expect(schedule.locator(".history .outcome")).to_have_text("completed", timeout=30_000)
    assert fired != mission_id

    schedule.get_by_role("button", name="Pause").click()
    expect(schedule.locator(".badge")).to_have_text("paused", timeout=10_000)
    expect(schedule.locator(".next-fires")).to_have_count(0)
    schedule.get_by_role("button", name="Resume").click()
    expect(schedule.locator(".badge")).to_have_text("active", timeout=10_000)
    schedule.get_by_role("button", name="Delete").click()
    expect(page.locator("#schedules article.schedule")).to_have_count(0, timeout=10_000)
    expect(page.locator("#schedules-empty")).to_contain_text("No schedules")
