"""Recipes, ratings and tool statistics in the dashboard, in a real Chromium, driven as a
person would: the gallery and its forms, Save as recipe and Run again on mission cards, the
stars of a finished mission, and the Tool statistics panel."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Locator, Page, expect

from .conftest import ARTIFACTS
from .test_dashboard import card, launch, propose


def recipe(page: Page, name: str) -> Locator:
    return page.locator("#recipes").get_by_role("article", name=name, exact=True)


def recipe_form(page: Page, name: str) -> Locator:
    return page.get_by_role("form", name=f"Run recipe: {name}")


def selected(page: Page) -> Locator:
    """The card of the mission the details panel shows, in the Pipeline list."""
    return page.locator("#pipeline article.mission[aria-current='true']")


def uses(page: Page, name: str) -> int:
    text = recipe(page, name).locator(".uses").inner_text()
    return int(text.removeprefix("Uses "))


def stat(page: Page, tool: str, row: str, who: str) -> Locator:
    """A cell of a tool's statistics table, found as a person reads it: by its row's label
    and its column's ("You" or "Everyone")."""
    table = page.get_by_role("table", name=f"Statistics of {tool}")
    header = page.get_by_role("rowheader", name=row, exact=True)
    cells = table.get_by_role("row").filter(has=header).get_by_role("cell")
    return cells.nth(["You", "Everyone"].index(who))


def test_a_built_in_recipe_runs_from_the_gallery_and_completes_live(
    open_dashboard: Callable[[], Page],
) -> None:
    """Choosing Calculate in the gallery opens a form with its one param; running it with 6*7
    starts a mission that completes on screen with 42, and the recipe counts the use."""
    page = open_dashboard()
    calculate = recipe(page, "Calculate")
    expect(calculate.locator(".badge")).to_have_text("built-in")
    before = uses(page, "Calculate")
    calculate.get_by_role("button", name="Use").click()
    form = recipe_form(page, "Calculate")
    expression = form.get_by_label("expression")
    expect(expression).to_be_focused()
    expect(expression).to_have_attribute("required", "")
    expression.fill("6*7")
    expect(form.locator("#recipe-objective")).to_contain_text("6*7")
    form.get_by_role("button", name="Run recipe").click()

    expect(form.locator("#recipe-status")).to_contain_text("Started")
    done = selected(page)
    expect(done).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(done.locator("a.artifact-link")).to_contain_text("6*7 = 42")
    expect(page.locator("#detail-meta")).to_contain_text("from recipe Calculate")
    expect(calculate.locator(".uses")).to_have_text(f"Uses {before + 1}", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-recipe.png"), full_page=True)
    # Scheduled from its card, the mission's recipe (and its params) is what the fires run.
    done.get_by_role("button", name="Schedule…").click()
    schedule_form = page.locator("#schedule-form")
    schedule_form.get_by_label("Cron").fill("0 9 * * 1-5")
    schedule_form.get_by_role("button", name="Create schedule").click()
    expect(schedule_form).to_be_hidden()
    schedule = page.locator("#schedules article.schedule").first
    expect(schedule.locator(".runs")).to_have_text(
        "Runs: recipe builtin-calculate v1 (expression=6*7)"
    )
    schedule.get_by_role("button", name="Delete").click()
    expect(page.locator("#schedules article.schedule")).to_have_count(0, timeout=10_000)


def test_a_bad_param_is_explained_next_to_the_form(open_dashboard: Callable[[], Page]) -> None:
    """The API's refusal of a param shows by the recipe's form, on the field it names, and no
    mission is made."""
    page = open_dashboard()
    recipe(page, "Search the web").get_by_role("button", name="Use").click()
    form = recipe_form(page, "Search the web")
    count = form.get_by_label("max_results")
    expect(count).to_have_value("5")  # its default
    form.get_by_role("button", name="Run recipe").click()
    expect(form.locator("#recipe-error")).to_contain_text("params.query")
    expect(form.get_by_label("query")).to_have_attribute("aria-invalid", "true")

    form.get_by_label("query").fill("otters")
    count.fill("2.5")
    form.get_by_role("button", name="Run recipe").click()
    expect(form.locator("#recipe-error")).to_contain_text(
        "params.max_results: Input should be a valid integer"
    )
    expect(count).to_be_focused()
    expect(count).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_label("query")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("article.mission")).to_have_count(0)


def test_a_mission_saved_as_a_recipe_runs_again_with_another_param(
    open_dashboard: Callable[[], Page],
) -> None:
    """Save as recipe on a mission card adds it to the gallery with its input as a param
    (the mission's value its default); run with 5*5 it makes and completes a new mission, and
    Run again… on that mission opens the form with 5*5 filled in."""
    page = open_dashboard()
    page.select_option("#tool", "calculate")
    mission_id = propose(page, "calculate 6*7", inputs='{"expression": "6*7"}')
    proposed = card(page, "live", mission_id)
    proposed.get_by_role("button", name="Save as recipe…").click()
    saving = proposed.get_by_role("form", name="Save as recipe")
    saving.get_by_label("Recipe name").fill("Times table")
    saving.get_by_role("button", name="Save recipe").click()
    expect(proposed.get_by_role("status")).to_have_text("Saved as recipe “Times table”.")
    expect(saving).to_have_count(0)

    saved = recipe(page, "Times table")
    expect(saved.locator(".recipe-params")).to_have_text("Params: expression (optional)")
    expect(saved.locator(".badge")).to_have_count(0)  # not a built-in
    expect(saved.locator(".uses")).to_have_text("Uses 0")
    saved.get_by_role("button", name="Use").click()
    form = recipe_form(page, "Times table")
    expression = form.get_by_label("expression")
    expect(expression).to_have_value("6*7")
    expression.fill("5*5")
    expect(form.locator("#recipe-objective")).to_contain_text("calculate 5*5")
    form.get_by_role("button", name="Run recipe").click()

    done = selected(page)
    expect(done).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(done.locator(".objective")).to_have_text("calculate 5*5")
    expect(done.locator("a.artifact-link")).to_contain_text("5*5 = 25")
    expect(saved.locator(".uses")).to_have_text("Uses 1")
    expect(saved.locator(".completed")).to_have_text("Completed 1", timeout=10_000)
    expect(card(page, "live", mission_id)).to_have_attribute("data-status", "proposed")

    form.get_by_role("button", name="Close").click()
    expect(form).to_be_hidden()
    done.get_by_role("button", name="Run again…").click()
    expect(recipe_form(page, "Times table").get_by_label("expression")).to_have_value("5*5")


def test_run_again_runs_a_copy_of_a_finished_mission(open_dashboard: Callable[[], Page]) -> None:
    """Run again on a completed mission's card starts a copy at once, which completes too."""
    page = open_dashboard()
    mission_id = propose(page, "calculate 2+3")
    launch(page, mission_id)
    first = card(page, "pipeline", mission_id)
    expect(first).to_have_attribute("data-status", "completed", timeout=30_000)
    first.get_by_role("button", name="Run again", exact=True).click()
    copy = selected(page)
    expect(copy).not_to_have_attribute("data-mission-id", mission_id)
    expect(copy.locator(".objective")).to_have_text("calculate 2+3")
    expect(copy).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(page.locator("#pipeline article.mission")).to_have_count(2)


def test_rating_a_finished_mission_shows_it_and_counts_in_the_statistics(
    open_dashboard: Callable[[], Page],
) -> None:
    """Stars on a finished mission send its rating with the comment: the mission shows it, the
    Tool statistics count it, and rating again replaces it."""
    page = open_dashboard()
    mission_id = propose(page, "calculate 3*3")
    feedback = page.locator("#feedback")
    launch(page, mission_id)
    done = card(page, "pipeline", mission_id)
    expect(done).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(stat(page, "calculate", "Missions", "You")).to_have_text("1", timeout=10_000)
    expect(stat(page, "calculate", "Ratings", "You")).to_have_text("0")
    expect(stat(page, "calculate", "Mean rating", "You")).to_have_text("—")

    done.get_by_role("button", name="Open").click()
    expect(feedback.locator("#feedback-current")).to_have_text("Not rated yet.")
    feedback.get_by_label("Comment").fill("Spot on")
    feedback.get_by_role("button", name="Rate 4 of 5").click()
    expect(feedback.locator("#feedback-current")).to_contain_text("You rated it 4 of 5")
    expect(feedback.locator("#feedback-current")).to_contain_text("“Spot on”")
    expect(feedback.get_by_role("button", name="Rate 4 of 5")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(done.locator(".rating")).to_have_text("Rated 4 of 5")
    expect(stat(page, "calculate", "Ratings", "You")).to_have_text("1", timeout=10_000)
    expect(stat(page, "calculate", "Mean rating", "You")).to_have_text("4.0 of 5")
    page.screenshot(path=str(ARTIFACTS / "dashboard-rated.png"), full_page=True)

    feedback.get_by_label("Comment").fill("")
    feedback.get_by_role("button", name="Rate 2 of 5").click()
    expect(done.locator(".rating")).to_have_text("Rated 2 of 5")
    expect(feedback.locator("#feedback-current")).not_to_contain_text("Spot on")
    expect(stat(page, "calculate", "Ratings", "You")).to_have_text("1", timeout=10_000)
    expect(stat(page, "calculate", "Mean rating", "You")).to_have_text("2.0 of 5")


def test_the_statistics_table_counts_a_tools_missions(open_dashboard: Callable[[], Page]) -> None:
    """After one calculation completes and one fails (a division by zero), the calculate table
    says two missions and a 50% success rate for this person, everyone's count includes them,
    and its chart has today's point."""
    page = open_dashboard()
    ok = propose(page, "calculate 4+4")
    launch(page, ok)
    expect(card(page, "pipeline", ok)).to_have_attribute("data-status", "completed", timeout=30_000)
    bad = propose(page, "calculate 1/0")
    launch(page, bad)
    expect(card(page, "pipeline", bad)).to_have_attribute("data-status", "failed", timeout=30_000)

    page.locator("#stats").get_by_role("button", name="Refresh").click()
    expect(page.locator("#stats-status")).to_contain_text("Updated")
    expect(stat(page, "calculate", "Missions", "You")).to_have_text("2", timeout=10_000)
    expect(stat(page, "calculate", "Success rate", "You")).to_have_text("50% (1 of 2)")
    expect(stat(page, "calculate", "Ratings", "You")).to_have_text("0")
    everyone = stat(page, "calculate", "Missions", "Everyone").inner_text()
    assert int(everyone) >= 2, everyone
    expect(stat(page, "calculate", "Median duration", "You")).to_have_text(re.compile(r"\d"))

    chart = page.locator("#stats").get_by_role("img", name=re.compile(r"^calculate, daily"))
    expect(chart).to_contain_text("50% of 2 succeeded")
    expect(chart.locator("circle.rate")).to_have_count(1)
    # Another tool with no missions of this person's shows zeros and dashes, not errors.
    expect(stat(page, "web_extract", "Missions", "You")).to_have_text("0")
    expect(stat(page, "web_extract", "Success rate", "You")).to_have_text("—")
