// The Tool statistics panel: for every tool, how its missions went for the viewer and for
// everyone (counts, success rate, median duration, mean cost, ratings), what the ratings add to
// its confidence when it is chosen now, and a chart of the last 30 days' daily success rate and
// mean rating. The API computes everything (GET /stats/tools); this only shows it.

import { dollars } from "./format.js";
import { el } from "./missions-view.js";
import { oneAtATime } from "./refresh.js";

export const CHART_DAYS = 30;
const DAY_MS = 86_400_000;
const SVG = "http://www.w3.org/2000/svg";
// The chart's drawing area, in viewBox units (it scales to the panel's width).
const CHART = { width: 320, height: 96, left: 34, right: 30, top: 8, bottom: 18 };
const SCOPES = { mine: "your missions", everyone: "everyone's missions" };

const percent = (rate) => `${Math.round(rate * 100)}%`;
const meanRatingText = (mean) => (mean == null ? "—" : `${mean.toFixed(1)} of 5`);
const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

// "+0.06", "-0.10": the sign always shown, as the mission's tool selection message does.
export function signedAdjustment(value) {
  const rounded = Math.round(value * 100) / 100;
  return `${rounded < 0 ? "-" : "+"}${Math.abs(rounded).toFixed(2)}`;
}

export function durationText(seconds) {
  if (seconds == null) return "—";
  if (seconds < 60) return `${Number(seconds.toPrecision(2))} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

// Means of tiny costs stay readable: two significant digits, never 1e-5.
export function costText(usd) {
  if (usd == null) return "—";
  return `$${dollars(Number(usd.toPrecision(2)))}`;
}

function successText(stats) {
  if (stats.success_rate == null) return "—";
  return `${percent(stats.success_rate)} (${stats.completed} of ${stats.completed + stats.failed})`;
}

const ROWS = [
  ["missions", "Missions", (s) => String(s.missions)],
  ["success", "Success rate", successText],
  ["duration", "Median duration", (s) => durationText(s.median_duration_seconds)],
  ["cost", "Mean cost", (s) => costText(s.mean_cost_usd)],
  ["ratings", "Ratings", (s) => String(s.ratings)],
  ["rating", "Mean rating", (s) => meanRatingText(s.mean_rating)],
];

function statsTable(entry) {
  const table = el("table", "stats-table");
  table.setAttribute("aria-label", `Statistics of ${entry.tool}`);
  const head = el("tr");
  head.append(el("td"));
  for (const text of ["You", "Everyone"]) {
    const th = el("th", null, text);
    th.scope = "col";
    head.append(th);
  }
  const thead = el("thead");
  thead.append(head);
  const tbody = el("tbody");
  for (const [key, label, text] of ROWS) {
    const row = el("tr");
    row.dataset.stat = key;
    const th = el("th", null, label);
    th.scope = "row";
    row.append(th, el("td", "mine", text(entry.mine)), el("td", "everyone", text(entry.everyone)));
    tbody.append(row);
  }
  table.append(thead, tbody);
  return table;
}

export function adjustmentText(adjustment) {
  const mean = adjustment.mean_rating;
  const meanText = mean == null ? "" : `, mean ${meanRatingText(mean)}`;
  return (
    `${adjustment.intent}: ${signedAdjustment(adjustment.adjustment)} from ` +
    `${plural(adjustment.ratings, "rating")}${meanText}`
  );
}

function adjustments(entry) {
  const box = el("div", "adjustments");
  box.append(el("h4", null, "Confidence adjustment now, by intent"));
  if (!entry.adjustments.length) {
    box.append(el("p", "hint", "None: no ratings of it yet."));
    return box;
  }
  const list = el("ul");
  for (const adjustment of entry.adjustments) {
    list.append(el("li", null, adjustmentText(adjustment)));
  }
  box.append(list);
  return box;
}

// ---- the chart -------------------------------------------------------------------------

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text != null) node.textContent = text;
  return node;
}

const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);

// The days the chart spans: CHART_DAYS of them (UTC dates, as the API counts), up to today or
// the newest day the API has, whichever is later.
export function chartDays(daily, now = Date.now()) {
  const newest = daily.at(-1)?.date;
  const today = Date.parse(`${isoDay(now)}T00:00:00Z`);
  const end = Math.max(today, newest ? Date.parse(`${newest}T00:00:00Z`) : 0);
  return Array.from({ length: CHART_DAYS }, (_, i) => isoDay(end - (CHART_DAYS - 1 - i) * DAY_MS));
}

export function daySuccessRate(day) {
  const ended = day.completed + day.failed;
  return ended ? day.completed / ended : null;
}

function dayTitle(day) {
  const rate = daySuccessRate(day);
  const ended = day.completed + day.failed;
  const success = rate == null ? "no missions ended" : `${percent(rate)} of ${ended} succeeded`;
  const rated =
    day.mean_rating == null
      ? ""
      : `, mean rating ${meanRatingText(day.mean_rating)} (${plural(day.ratings, "rating")})`;
  return `${day.date}: ${success}${rated}`;
}

function line(points, className) {
  if (!points.length) return null;
  const d = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
  return svg("path", { d, class: className, fill: "none" });
}

export function dailyChart(tool, scope, daily, now = Date.now()) {
  const { width, height, left, right, top, bottom } = CHART;
  const days = chartDays(daily, now);
  const byDate = new Map(daily.map((day) => [day.date, day]));
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const x = (index) => left + (index * plotWidth) / (CHART_DAYS - 1);
  const yOfRate = (rate) => top + (1 - rate) * plotHeight;
  const yOfRating = (rating) => top + (1 - (rating - 1) / 4) * plotHeight;

  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "daily-chart",
    role: "img",
    "aria-labelledby": `chart-${tool}-title`,
  });
  const shown = daily.filter((day) => days.includes(day.date));
  const summary = shown.length
    ? `${shown.length} of the last ${CHART_DAYS} days have data; the newest, ` +
      dayTitle(shown.at(-1))
    : `no data in the last ${CHART_DAYS} days`;
  const title = `${tool}, daily success rate and mean rating of ${SCOPES[scope]}: ${summary}`;
  chart.append(svg("title", { id: `chart-${tool}-title` }, title));
  for (const y of [top, top + plotHeight / 2, top + plotHeight]) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "grid" }));
  }
  const label = (text, attrs) => chart.append(svg("text", { class: "axis", ...attrs }, text));
  label("100%", { x: left - 4, y: top + 3, "text-anchor": "end" });
  label("0%", { x: left - 4, y: top + plotHeight + 3, "text-anchor": "end" });
  label("5★", { x: width - right + 4, y: top + 3 });
  label("1★", { x: width - right + 4, y: top + plotHeight + 3 });
  label(days[0].slice(5), { x: left, y: height - 4 });
  label(days.at(-1).slice(5), { x: width - right, y: height - 4, "text-anchor": "end" });

  const rates = [];
  const ratings = [];
  days.forEach((date, index) => {
    const day = byDate.get(date);
    if (!day) return;
    const rate = daySuccessRate(day);
    if (rate != null) rates.push([x(index), yOfRate(rate), day]);
    if (day.mean_rating != null) ratings.push([x(index), yOfRating(day.mean_rating), day]);
  });
  for (const node of [line(rates, "rate"), line(ratings, "rating")]) if (node) chart.append(node);
  for (const [points, className] of [
    [rates, "rate"],
    [ratings, "rating"],
  ]) {
    for (const [cx, cy, day] of points) {
      const dot = svg("circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 2.5, class: className });
      dot.append(svg("title", {}, dayTitle(day)));
      chart.append(dot);
    }
  }
  return chart;
}

function chartFigure(entry, scope, now) {
  const { daily } = entry[scope];
  const days = new Set(chartDays(daily, now));
  if (!daily.some((day) => days.has(day.date))) {
    const text = `Nothing to chart: none of ${SCOPES[scope]} in the last ${CHART_DAYS} days.`;
    return el("p", "hint chart-empty", text);
  }
  const figure = el("figure", "chart");
  figure.append(dailyChart(entry.tool, scope, daily, now));
  const caption = el("figcaption", "hint");
  caption.append(
    el("span", "key rate", "success rate"),
    " and ",
    el("span", "key rating", "mean rating"),
    ` by day, last ${CHART_DAYS} days, ${SCOPES[scope]}`,
  );
  figure.append(caption);
  return figure;
}

function toolSection(entry, scope, now) {
  const section = el("article", "tool-stats");
  const heading = el("h3", "tool-name", entry.tool);
  heading.id = `stats-${entry.tool}`;
  section.setAttribute("aria-labelledby", heading.id);
  section.dataset.tool = entry.tool;
  section.append(heading, statsTable(entry), adjustments(entry), chartFigure(entry, scope, now));
  return section;
}

export function createStatsPanel({ root, api }) {
  const list = root.querySelector("#stats-list");
  const status = root.querySelector("#stats-status");
  const error = root.querySelector("#stats-error");
  const scopeSelect = root.querySelector("#stats-scope");
  const refreshButton = root.querySelector("#stats-refresh");
  let tools = null;

  function render() {
    if (!tools) return;
    const scope = scopeSelect.value in SCOPES ? scopeSelect.value : "mine";
    const now = Date.now();
    list.replaceChildren(...tools.map((entry) => toolSection(entry, scope, now)));
  }

  const refresh = oneAtATime(async (stale) => {
    refreshButton.disabled = true;
    try {
      const answer = await api.toolStats();
      if (stale()) return;
      ({ tools } = answer);
      error.textContent = "";
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      render();
    } catch (failure) {
      if (!stale()) error.textContent = `The statistics could not be loaded: ${failure.message}`;
    } finally {
      refreshButton.disabled = false;
    }
  });

  refreshButton.addEventListener("click", () => refresh());
  scopeSelect.addEventListener("change", render);

  function clear() {
    refresh.forget();
    tools = null;
    list.replaceChildren();
    status.textContent = "";
  }

  return { refresh, clear };
}
