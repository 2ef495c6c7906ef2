// An artifact's content, shown by its `format`: sanitized Markdown, search results as links,
// a research report with its citations linked, tables (with a chart when they hold numbers),
// pretty JSON and plain text.
//
// Artifacts hold what hostile pages wrote. Markdown goes through marked, with raw HTML shown
// as text, then DOMPurify with a short allowlist, in an inert document: nothing runs, and
// nothing there makes the dashboard reach a host the page names (images become links, no
// styles, no media). Content can be up to 1 MiB: it is rendered in chunks, yielding to the
// browser between them, and charts are drawn only when they scroll into view.

import DOMPurify from "dompurify";
import { Marked } from "marked";
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  Tooltip,
} from "chart.js";

import { el } from "./missions-view.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

// Markdown is rendered in pieces of about this many characters (a few ms each)...
export const CHUNK_CHARS = 4_000;
// ...and the browser gets a turn once a step has taken this long.
const STEP_MS = 12;
// Rows of a table, characters of a <pre> per piece.
const ROWS_PER_PIECE = 200;
const TEXT_CHARS_PER_PIECE = 16_000;
// A chart of more bars than this is unreadable: it shows the first ones and says so.
export const CHART_ROWS = 60;
const CHART_SERIES = 8;
const SMALL_SERIES_RATIO = 20;

const LINK_REL = "noopener noreferrer nofollow";
const SAFE_URL = /^(?:https?:|mailto:|#)/i;
const WEB_URL = /^https?:\/\//i;

const ALLOWED_TAGS = [
  "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "details", "div",
  "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
  "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong", "sub",
  "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
];
const PURIFY_CONFIG = {
  ALLOWED_TAGS,
  // No style (url() would fetch), no id or name (they would clobber the page's globals), no
  // class (the page's own look is not the artifact's to borrow).
  ALLOWED_ATTR: ["href", "title", "alt", "src", "align", "colspan", "rowspan", "start"],
  ALLOWED_URI_REGEXP: SAFE_URL,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  // The fragment stays in DOMPurify's inert document: its <img>s are replaced before they
  // reach the page's, where they would start loading.
  RETURN_DOM_FRAGMENT: true,
};

const purify = DOMPurify(window);

const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ENTITIES[c]);

const markdown = new Marked({
  gfm: true,
  async: false,
  renderer: {
    // Our Markdown comes from converters that write none: an HTML tag in it is text the page
    // showed (or an attack), and is shown as written.
    html: ({ text, block }) => (block ? `<p>${escapeHtml(text)}</p>` : escapeHtml(text)),
    checkbox: ({ checked }) => (checked ? "☑ " : "☐ "),
  },
});

// ---- pure helpers (no DOM) ------------------------------------------------------------

const NUMBER =
  /^[+\-\u2212]?\s*[$€£¥]?\s*[+\-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:e[+-]?\d+)?\s*%?$/i;

// A cell's number: "1,234", "12.5%", "$3", "-0.5", "−2" and numbers themselves; null if
// the cell is not one.
export function numberOf(value) {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (!/\d/.test(text) || !NUMBER.test(text)) return null;
  const plain = text.replace(/[\s,$€£¥%]/g, "").replace(/\u2212/g, "-").replace(/^\+/, "");
  const number = Number(plain);
  return Number.isFinite(number) ? number : null;
}

const isEmpty = (value) => value == null || String(value).trim() === "";

// What a chart of a table shows, or null when it has nothing to chart: at least 2 rows and a
// column whose every filled cell is a number. Labels come from the first column that is not
// numeric, or are the rows' numbers.
export function chartOf(columns, rows) {
  if (rows.length < 2) return null;
  const numeric = columns.map((_, index) => {
    const filled = rows.map((row) => row[index]).filter((value) => !isEmpty(value));
    return filled.length > 0 && filled.every((value) => numberOf(value) != null);
  });
  const labelIndex = numeric.findIndex((isNumeric) => !isNumeric);
  const series = columns
    .map((name, index) => ({ name: String(name || `Column ${index + 1}`), index }))
    .filter(({ index }) => numeric[index])
    .slice(0, CHART_SERIES);
  if (!series.length) return null;
  const shown = rows.slice(0, CHART_ROWS);
  const charted = series.map(({ name, index }) => {
    const values = shown.map((row) => numberOf(row[index]));
    return { name, values, peak: Math.max(0, ...values.map((v) => Math.abs(v ?? 0))) };
  });
  // Series far smaller than the largest (a growth rate beside a population) get an axis of
  // their own, on the right, instead of bars too small to see.
  const largest = Math.max(...charted.map((s) => s.peak));
  return {
    labelName: labelIndex >= 0 ? String(columns[labelIndex] || "") : "Row",
    labels: shown.map((row, n) =>
      labelIndex >= 0 ? String(row[labelIndex] ?? "").trim() || `Row ${n + 1}` : String(n + 1),
    ),
    series: charted.map(({ name, values, peak }) => ({
      name,
      values,
      axis: peak * SMALL_SERIES_RATIO < largest ? "right" : "left",
    })),
    rows: rows.length,
  };
}

const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const DEFINITION = /^ {0,3}\[[^\]\n]+\]:\s*\S/;

// Markdown cut into pieces of about `size` characters, each rendered on its own: cuts fall at
// a blank line outside code fences before a line that starts a new block, so no block is cut
// in two (a long list may become two lists). Reference definitions are added to every piece,
// so that a link finds its target wherever it is defined.
export function markdownChunks(source, size = CHUNK_CHARS) {
  if (source.length <= size) return [source];
  const lines = source.split("\n");
  const chunks = [];
  const definitions = [];
  let start = 0;
  let length = 0;
  let fence = null;
  lines.forEach((line, i) => {
    length += line.length + 1;
    const opening = FENCE.exec(line);
    if (fence) {
      if (opening && opening[1][0] === fence[0] && opening[1].length >= fence.length) fence = null;
      return;
    }
    if (opening) {
      fence = opening[1];
      return;
    }
    if (DEFINITION.test(line)) definitions.push(line);
    const next = lines[i + 1];
    const boundary = line.trim() === "" && next !== undefined && /^\S/.test(next);
    // A piece with no such boundary for long (one huge list) is cut at any line's end.
    if ((boundary && length >= size) || (length >= size * 4 && next !== undefined)) {
      chunks.push(lines.slice(start, i + 1).join("\n"));
      start = i + 1;
      length = 0;
    }
  });
  if (start < lines.length) chunks.push(lines.slice(start).join("\n"));
  if (!definitions.length) return chunks;
  const tail = `\n\n${definitions.join("\n")}\n`;
  return chunks.map((chunk) => chunk + tail);
}

// "#Intro to it" → "intro-to-it": the anchor a Markdown "#…" link names.
export function anchorOf(text) {
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s+/g, "-");
}

function webUrl(value) {
  return typeof value === "string" && WEB_URL.test(value.trim()) ? value.trim() : null;
}

function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return "";
  }
}

// ---- rendering --------------------------------------------------------------------------

const views = new WeakMap(); // container → { generation, charts, observer }

function viewState(container) {
  let state = views.get(container);
  if (!state) {
    state = { generation: 0, charts: [], observer: null };
    views.set(container, state);
    // "#…" links move within the artifact; left alone they would change the page's hash,
    // which says which mission is open.
    container.addEventListener("click", (event) => {
      const link = event.target.closest?.('a[href^="#"]');
      if (!link || !container.contains(link)) return;
      event.preventDefault();
      let anchor = link.getAttribute("href").slice(1);
      try {
        anchor = anchorOf(decodeURIComponent(anchor));
      } catch {
        return; // a malformed escape names no heading
      }
      const target = [...container.querySelectorAll("[data-anchor]")].find(
        (node) => node.dataset.anchor === anchor,
      );
      target?.scrollIntoView({ block: "start" });
    });
  }
  return state;
}

// Stops a rendering under way and frees its charts.
export function clearArtifactView(container) {
  const state = viewState(container);
  state.generation += 1;
  state.observer?.disconnect();
  state.observer = null;
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
  container.replaceChildren();
  container.removeAttribute("aria-busy");
}

const nextTurn = () =>
  globalThis.scheduler?.yield ? globalThis.scheduler.yield() : new Promise((r) => setTimeout(r, 0));

function externalLink(url, text, className) {
  const link = el("a", className, text);
  link.href = url;
  link.target = "_blank";
  link.rel = LINK_REL;
  return link;
}

// Whether the artifact has more to show than its preview.
export function hasContent(artifact) {
  if (artifact.type === "search_results" && Array.isArray(artifact.data?.results)) return true;
  if (artifact.format === "table" && isTableData(artifact.data?.table)) return true;
  return typeof artifact.content === "string" && artifact.content.length > 0;
}

// Renders `artifact` into `container` (emptied first), a piece at a time. `onShown` is called
// once the first piece is on screen. Resolves when done, or early when another rendering of
// the container started.
export async function renderArtifactView(container, artifact, { onShown = () => {} } = {}) {
  clearArtifactView(container);
  container.setAttribute("aria-busy", "true");
  const state = viewState(container);
  const generation = state.generation;
  const current = () => state.generation === generation;
  let shown = false;
  let turnAt = performance.now() + STEP_MS;
  // After each piece: true to go on (giving the browser a turn when due), false to stop.
  const step = async () => {
    if (performance.now() < turnAt) return current();
    if (!shown) {
      shown = true;
      onShown();
    }
    await nextTurn();
    turnAt = performance.now() + STEP_MS;
    return current();
  };
  const context = { container, state, step };
  const data = artifact.data ?? {};
  const format = artifact.format || "text";
  const content = typeof artifact.content === "string" ? artifact.content : "";

  if (artifact.type === "search_results" && Array.isArray(data.results)) {
    container.append(searchResults(data));
  } else if (format === "table" && isTableData(data.table)) {
    await tableView(context, data.table);
  } else if (format === "markdown" || format === "table") {
    // A table without its data still has its Markdown pipe table in `content`.
    const citations = artifact.type === "research_report" ? citationsOf(data) : null;
    await markdownView(context, content, citations);
  } else if (format === "json") {
    await textView(context, prettyJson(content), "json");
  } else {
    await textView(context, content, "text");
  }
  if (!current()) return;
  if (artifact.truncated) {
    container.append(el("p", "artifact-note", "Cut to fit: this is the beginning of the content."));
  }
  if (!shown) onShown();
  container.setAttribute("aria-busy", "false");
}

// ---- Markdown ---------------------------------------------------------------------------

async function markdownView(context, source, citations) {
  const { container, step } = context;
  const body = el("div", "markdown");
  container.append(body);
  for (const chunk of markdownChunks(source)) {
    const piece = purify.sanitize(markdown.parse(chunk), PURIFY_CONFIG);
    tidy(piece, citations);
    const block = el("div", "markdown-chunk");
    block.append(piece);
    body.append(block);
    for (const table of block.querySelectorAll("table")) chartUnder(context, table);
    if (!(await step())) return;
  }
}

// Still in the inert document: links open apart and say nothing of the dashboard, images
// become links, headings get anchors, tables scroll on their own, citations are linked.
function tidy(fragment, citations) {
  const doc = fragment.ownerDocument;
  for (const image of fragment.querySelectorAll("img")) {
    const src = webUrl(image.getAttribute("src"));
    const text =
      image.getAttribute("alt")?.trim() || image.getAttribute("title")?.trim() || "image";
    const replacement = doc.createElement(src ? "a" : "span");
    replacement.className = "image-link";
    replacement.textContent = text;
    if (src) {
      replacement.setAttribute("href", src);
      replacement.setAttribute("title", `Image, not loaded: ${src}`);
    }
    image.replaceWith(replacement);
  }
  for (const link of fragment.querySelectorAll("a")) {
    const href = link.getAttribute("href");
    if (!href) {
      link.replaceWith(...link.childNodes); // its URL was refused: the text stays
    } else if (!href.startsWith("#")) {
      link.setAttribute("target", "_blank");
      link.setAttribute("rel", LINK_REL);
    }
  }
  for (const heading of fragment.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
    heading.dataset.anchor = anchorOf(heading.textContent);
  }
  for (const table of fragment.querySelectorAll("table")) {
    const wrap = doc.createElement("div");
    wrap.className = "table-wrap";
    table.replaceWith(wrap);
    wrap.append(table);
  }
  if (citations?.size) linkCitations(fragment, citations);
}

// A research report's sources by number: its "[1]"s link to them.
function citationsOf(data) {
  const sources = new Map();
  for (const source of Array.isArray(data.sources) ? data.sources : []) {
    const url = webUrl(source?.url);
    if (url && Number.isInteger(source.n)) sources.set(source.n, { url, title: source.title });
  }
  return sources;
}

function linkCitations(fragment, citations) {
  const doc = fragment.ownerDocument;
  const walker = doc.createTreeWalker(fragment, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) =>
      node.parentElement?.closest("a, code, pre") || !/\[\d+\]/.test(node.data)
        ? NodeFilter.FILTER_REJECT
        : NodeFilter.FILTER_ACCEPT,
  });
  const texts = [];
  while (walker.nextNode()) texts.push(walker.currentNode);
  for (const text of texts) {
    const parts = text.data.split(/(\[\d+\])/);
    const nodes = parts.map((part) => {
      const source = /^\[(\d+)\]$/.test(part) ? citations.get(Number(part.slice(1, -1))) : null;
      if (!source) return doc.createTextNode(part);
      const link = doc.createElement("a");
      link.className = "citation";
      link.textContent = part;
      link.setAttribute("href", source.url);
      link.setAttribute("target", "_blank");
      link.setAttribute("rel", LINK_REL);
      if (source.title) link.setAttribute("title", String(source.title));
      return link;
    });
    text.replaceWith(...nodes);
  }
}

// ---- search results ---------------------------------------------------------------------

function searchResults(data) {
  if (!data.results.length) {
    return el("p", "empty", data.query ? `No results for “${data.query}”.` : "No results.");
  }
  const list = el("ol", "search-results");
  const ranked = [...data.results].sort((a, b) => (a?.rank ?? 0) - (b?.rank ?? 0));
  for (const result of ranked) {
    if (!result || typeof result !== "object") continue;
    const item = el("li", "search-result");
    if (Number.isInteger(result.rank)) item.value = result.rank;
    const url = webUrl(result.url);
    const title = String(result.title || result.url || "Untitled");
    item.append(url ? externalLink(url, title, "result-title") : el("span", "result-title", title));
    if (url) item.append(el("span", "result-host", hostOf(url)));
    if (result.snippet) item.append(el("p", "snippet", String(result.snippet)));
    list.append(item);
  }
  return list;
}

// ---- tables, charts ---------------------------------------------------------------------

function isTableData(table) {
  return Boolean(table) && Array.isArray(table.columns) && Array.isArray(table.rows);
}

const cellText = (value) =>
  value == null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);

async function tableView(context, { columns, rows }) {
  const { container, step } = context;
  const wrap = el("div", "table-wrap");
  const table = el("table", "data-table");
  const head = el("tr");
  for (const column of columns) {
    const th = el("th", null, cellText(column));
    th.scope = "col";
    head.append(th);
  }
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  wrap.append(table);
  container.append(wrap);
  const values = [];
  for (let start = 0; start < rows.length; start += ROWS_PER_PIECE) {
    for (const row of rows.slice(start, start + ROWS_PER_PIECE)) {
      const cells = columns.map((column) => (row && typeof row === "object" ? row[column] : null));
      values.push(cells);
      const tr = el("tr");
      for (const cell of cells) {
        const td = el("td", null, cellText(cell));
        if (numberOf(cell) != null) td.className = "number";
        tr.append(td);
      }
      table.tBodies[0].append(tr);
    }
    if (!(await step())) return;
  }
  chartUnder(context, table, { columns: columns.map(cellText), rows: values });
}

function tableCells(table) {
  const rowsOf = (section) => [...(section?.rows ?? [])];
  const headRow = rowsOf(table.tHead)[0];
  const columns = headRow ? [...headRow.cells].map((cell) => cell.textContent.trim()) : [];
  const body = [...table.tBodies].flatMap(rowsOf);
  const rows = body.map((row) => [...row.cells].map((cell) => cell.textContent.trim()));
  return { columns, rows };
}

const chartData = new WeakMap(); // figure → what its chart shows

// Puts a chart under a table that holds numbers, drawn when it scrolls into view.
function chartUnder(context, table, cells = tableCells(table)) {
  const chart = chartOf(cells.columns, cells.rows);
  if (!chart) return;
  const figure = el("figure", "artifact-chart");
  const names = chart.series.map((s) => s.name).join(", ");
  const of = chart.rows > CHART_ROWS ? ` (the first ${CHART_ROWS} of ${chart.rows} rows)` : "";
  const caption = el("figcaption", null, `Chart: ${names} by ${chart.labelName}${of}`);
  const box = el("div", "chart-box");
  const canvas = el("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", caption.textContent);
  box.append(canvas);
  figure.append(box, caption);
  (table.closest(".table-wrap") ?? table).after(figure);
  chartData.set(figure, chart);
  observerOf(context).observe(figure);
}

function observerOf({ state }) {
  state.observer ??= new IntersectionObserver(
    (entries, observer) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        observer.unobserve(entry.target);
        try {
          state.charts.push(drawChart(entry.target));
        } catch (error) {
          console.error("A chart could not be drawn", error); // its table is still there
        }
      }
    },
    { rootMargin: "200px" },
  );
  return state.observer;
}

function drawChart(figure) {
  const chart = chartData.get(figure);
  const style = getComputedStyle(figure);
  const color = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  const palette = [1, 2, 3, 4, 5, 6].map((n) => color(`--chart-${n}`, "#0b5cad"));
  const text = color("--muted", "#5a626d");
  const grid = color("--border", "#d9dee4");
  const names = (axis) =>
    chart.series.filter((series) => series.axis === axis).map((series) => series.name);
  const twoAxes = names("right").length > 0;
  const axis = (side) => ({
    position: side,
    ticks: { color: text },
    grid: side === "left" ? { color: grid } : { drawOnChartArea: false },
    title: { display: twoAxes, text: names(side).join(", "), color: text },
  });
  return new Chart(figure.querySelector("canvas"), {
    type: "bar",
    data: {
      labels: chart.labels,
      datasets: chart.series.map((series, n) => ({
        label: series.name,
        data: series.values,
        yAxisID: series.axis,
        backgroundColor: palette[n % palette.length],
      })),
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: {
        legend: { display: chart.series.length > 1, labels: { color: text } },
      },
      scales: {
        x: { ticks: { color: text }, grid: { display: false } },
        left: axis("left"),
        ...(twoAxes ? { right: axis("right") } : {}),
      },
    },
  });
}

// ---- JSON, text -------------------------------------------------------------------------

function prettyJson(content) {
  try {
    return JSON.stringify(JSON.parse(content), null, 2);
  } catch {
    return content; // not JSON after all: shown as it is
  }
}

// A <pre> filled a piece at a time, cut at line ends; pieces off screen are not laid out.
async function textView({ container, step }, text, kind) {
  const pre = el("pre", `artifact-text ${kind}`);
  container.append(pre);
  if (text.length <= TEXT_CHARS_PER_PIECE) {
    pre.textContent = text;
    return;
  }
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + TEXT_CHARS_PER_PIECE);
    const newline = text.indexOf("\n", end);
    if (end < text.length && newline !== -1 && newline - end < 4096) end = newline + 1;
    pre.append(el("span", "text-piece", text.slice(start, end)));
    start = end;
    if (!(await step())) return;
  }
}
