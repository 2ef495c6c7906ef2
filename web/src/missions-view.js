// Mission cards. Each card is created once and then updated in place, so the progress bar's
// width can animate from its old value and a focused button keeps its focus across snapshots.

import {
  PAUSED,
  TERMINAL,
  attemptText,
  detailText,
  dollars,
  elapsedSeconds,
  etaSeconds,
  failureText,
  isStalled,
  pauseExpiry,
  pauseReasonOf,
  pauseText,
  percentOf,
  ratingText,
  runText,
  shorten,
  stepLine,
  toMillis,
  toolText,
} from "./format.js";

const ACTIONS = [
  ["approve", "Approve"],
  ["execute", "Execute"],
  ["pause", "Pause"],
  ["resume", "Resume"],
  ["retry", "Retry"],
  ["edit", "Edit"],
  ["run-again", "Run again"],
  ["clone", "Clone"],
  ["save-recipe", "Save as recipe…"],
  ["schedule", "Schedule…"],
  ["cancel", "Cancel"],
  ["open", "Open"],
];

// The buttons a card shows in each state: the actions it allows now, and those it is about to
// (Execute once approved, Resume once paused), disabled. Others stay in the page, hidden.
const SHOWN = {
  proposed: ["approve", "execute", "edit", "clone", "save-recipe", "schedule", "cancel"],
  approved: ["approve", "execute", "edit", "clone", "save-recipe", "schedule", "cancel"],
  queued: ["pause", "resume", "clone", "save-recipe", "schedule", "cancel"],
  running: ["pause", "resume", "clone", "save-recipe", "schedule", "cancel"],
  paused: ["pause", "resume", "edit", "clone", "save-recipe", "schedule", "cancel"],
  failed: ["retry", "edit", "run-again", "clone", "save-recipe", "schedule"],
  completed: ["run-again", "clone", "save-recipe", "schedule"],
  cancelled: ["run-again", "clone", "save-recipe", "schedule"],
};

// What the owner may change, by state (the API's rule): before it runs, anything the create
// form says; once stopped (paused or failed), only the limits that stopped it.
export const EDITABLE = {
  proposed: "all",
  approved: "all",
  paused: "limits",
  failed: "limits",
};

export function allowedActions(mission) {
  const status = mission.status;
  const stopping = Boolean(mission.cancel_requested || mission.pause_requested);
  return {
    approve: status === "proposed",
    execute: status === "approved",
    pause: (status === "queued" || status === "running") && !stopping,
    resume: status === PAUSED,
    retry: status === "failed",
    edit: status in EDITABLE,
    clone: true,
    "run-again": TERMINAL.has(status),
    "save-recipe": true,
    schedule: true,
    cancel: !TERMINAL.has(status) && !mission.cancel_requested,
  };
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// A card's button: its name stays "Approve", "Delete"…; `describedBy` (the card's heading or
// objective) tells screen readers which card it acts on.
export function actionButton(action, label, describedBy) {
  const button = el("button", action, label);
  button.type = "button";
  button.dataset.action = action;
  button.setAttribute("aria-describedby", describedBy);
  return button;
}

// Replaces a region's children only when what it should show changed.
function showParts(region, parts) {
  const wanted = parts.filter(Boolean);
  const key = JSON.stringify(wanted);
  if (region.dataset.key === key) return;
  region.dataset.key = key;
  region.replaceChildren(
    ...wanted.map(({ tag = "span", cls, text, href, datetime }) => {
      const node = el(tag, cls, text);
      if (href) node.href = href;
      if (datetime) node.dateTime = datetime;
      return node;
    }),
  );
}

function setAttr(node, name, value) {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function createCard(mission, section, pipeline) {
  const idBase = `${section}-${mission.mission_id}`;
  const card = el("article", "mission");
  card.dataset.missionId = mission.mission_id;
  card.dataset.idBase = idBase;
  card.setAttribute("aria-labelledby", `${idBase}-objective`);

  const head = el("div", "mission-head");
  const objective = el("h3", "objective");
  objective.id = `${idBase}-objective`;
  head.append(objective, el("span", "badge"));

  const progress = el("div", "progress");
  progress.setAttribute("role", "progressbar");
  progress.setAttribute("aria-valuemin", "0");
  progress.setAttribute("aria-valuemax", "100");
  progress.append(el("div", "bar"));

  const actions = el("div", "actions");
  for (const [action, label] of ACTIONS) {
    const button = actionButton(action, label, objective.id);
    if (action === "edit" || action === "save-recipe") {
      button.setAttribute("aria-expanded", "false");
    }
    actions.append(button);
  }
  const error = el("p", "error");
  error.id = `${idBase}-error`;
  error.setAttribute("role", "alert");

  card.append(head, progress, el("p", "step"), el("p", "facts"), el("div", "notes"));
  // Only the paused group offers the pause's way out, so the page has one form per mission.
  if (section === "paused") card.append(el("div", "lift"));
  if (pipeline) card.append(el("dl", "summary-facts"), el("div", "links"));
  card.append(actions, error);
  return card;
}

// A labelled control; its description is its hint and `${idBase}-error` (where its form's
// errors appear).
function field(idBase, name, labelText, control, hintText) {
  const wrapper = el("div", "field");
  const label = el("label", null, labelText);
  control.id = `${idBase}-${name}`;
  control.name = name;
  label.htmlFor = control.id;
  wrapper.append(label, control);
  const described = [`${idBase}-error`];
  if (hintText) {
    const hint = el("p", "hint", hintText);
    hint.id = `${control.id}-hint`;
    described.unshift(hint.id);
    wrapper.append(hint);
  }
  control.setAttribute("aria-describedby", described.join(" "));
  return wrapper;
}

const editorField = (idBase, ...rest) => field(`${idBase}-edit`, ...rest);

function input(type, value, attributes = {}) {
  const node = el("input");
  node.type = type;
  node.value = value;
  for (const [name, attr] of Object.entries(attributes)) node.setAttribute(name, attr);
  return node;
}

// The hosts an out-of-scope pause asks to allow (a research may want several).
export function wantedHosts(reason) {
  return reason?.hosts?.length ? reason.hosts : reason?.host ? [reason.host] : [];
}

// The way out of a pause, by its reason: raise the budget to what it needs, or allow the host
// it wants to reach; a pause its owner asked for is lifted with Resume alone.
function renderLift(region, mission, idBase) {
  const reason = pauseReasonOf(mission);
  const code = reason?.code;
  const liftable =
    (code === "budget_exceeded" && reason.needed_usd != null) ||
    (code === "out_of_scope" && wantedHosts(reason).length > 0);
  const wanted = liftable ? reason : null;
  const key = wanted ? JSON.stringify([code, wanted.needed_usd, wantedHosts(wanted)]) : "";
  if (region.dataset.key === key) return;
  region.dataset.key = key;
  if (!wanted) {
    region.replaceChildren();
    return;
  }
  const form = el("form", "lift-form");
  form.dataset.lift = code;
  const submit = el("button", "primary lift-submit");
  submit.type = "submit";
  if (code === "budget_exceeded") {
    const needed = dollars(wanted.needed_usd);
    const budget = input("number", needed, {
      min: "0.000001",
      max: "100",
      step: "any",
      inputmode: "decimal",
    });
    budget.classList.add("lift-budget");
    budget.required = true;
    const hint = `It needs $${needed} to go on; cancel it if that is too much.`;
    submit.textContent = "Raise budget and resume";
    // Described by the card's error too, where a refusal of the new budget shows.
    form.append(field(idBase, "lift-budget", "New budget (USD)", budget, hint), submit);
  } else {
    form.dataset.hosts = JSON.stringify(wantedHosts(wanted));
    submit.textContent = `Allow ${wantedHosts(wanted).join(", ")} and resume`;
    form.append(submit);
  }
  submit.setAttribute("aria-describedby", `${idBase}-objective`);
  region.replaceChildren(form);
}

function updateCard(card, mission, ctx) {
  const { now, pipeline } = ctx;
  const status = mission.status;
  const percent = percentOf(mission);
  setAttr(card, "data-status", status);
  card.classList.toggle("selected", ctx.selectedId === mission.mission_id);
  if (ctx.selectedId === mission.mission_id) setAttr(card, "aria-current", "true");
  else card.removeAttribute("aria-current");

  setText(card.querySelector(".objective"), mission.objective);
  setText(card.querySelector(".badge"), status);

  const progress = card.querySelector(".progress");
  setAttr(progress, "aria-valuenow", String(percent));
  setAttr(progress, "aria-label", `Progress of mission: ${shorten(mission.objective, 60)}`);
  progress.firstChild.style.width = `${percent}%`;

  setText(card.querySelector(".step"), stepLine(mission));
  const pausing = mission.pause_requested && !TERMINAL.has(status) && status !== PAUSED;

  const elapsed = elapsedSeconds(mission, now);
  const eta = etaSeconds(mission, now);
  const detail = detailText(mission);
  const attempt = attemptText(mission);
  showParts(card.querySelector(".facts"), [
    elapsed != null && { cls: "elapsed", text: `Elapsed ${elapsed}s` },
    eta != null && { cls: "eta", text: `ETA ${eta}s` },
    detail && { cls: "detail", text: detail },
    attempt && { cls: "attempt", text: attempt },
    runText(mission) && { cls: "run", text: runText(mission) },
    ratingText(mission.feedback) && { cls: "rating", text: ratingText(mission.feedback) },
    isStalled(mission, now) && { cls: "stalled", text: "stalled" },
    mission.cancel_requested &&
      !TERMINAL.has(status) && { cls: "cancelling", text: "cancel requested" },
    pausing &&
      !mission.cancel_requested && {
        cls: "pausing",
        text: "pause requested — pauses at the next step boundary",
      },
  ]);

  const failure = failureText(mission);
  const paused = pauseText(mission);
  const expiry = pauseExpiry(mission);
  showParts(card.querySelector(".notes"), [
    failure && { tag: "p", cls: "failure", text: failure },
    paused && { tag: "p", cls: "pause-reason", text: paused },
    expiry && { tag: "time", cls: "pause-expiry", text: expiry.text, datetime: expiry.datetime },
  ]);
  const lift = card.querySelector(".lift");
  if (lift) renderLift(lift, mission, card.dataset.idBase);

  if (pipeline) {
    const finished = toMillis(mission.finished_at);
    showParts(card.querySelector(".summary-facts"), [
      { tag: "dt", text: "Tool" },
      { tag: "dd", cls: "tool", text: toolText(mission) },
      { tag: "dt", text: "Progress" },
      { tag: "dd", cls: "percent", text: `${percent}%` },
      { tag: "dt", text: "Finished" },
      finished == null
        ? { tag: "dd", cls: "finished", text: "—" }
        : {
            tag: "dd",
            cls: "finished",
            text: new Date(finished).toLocaleString(),
            datetime: new Date(finished).toISOString(),
          },
    ]);
    const artifact = mission.execution_record?.artifact_reference;
    showParts(card.querySelector(".links"), [
      artifact && {
        tag: "a",
        cls: "artifact-link",
        text: `Artifact: ${artifact.title || artifact.artifact_id}`,
        href: `#m=${mission.mission_id}`,
      },
    ]);
  }

  // While a request for this mission is in flight, none of its actions can be sent again.
  const pending = ctx.isPending(mission);
  const allowed = allowedActions(mission);
  const shown = new Set([...(SHOWN[status] ?? []), "open"]);
  for (const button of card.querySelectorAll(".actions button")) {
    const action = button.dataset.action;
    const disabled = action === "open" ? false : pending || !allowed[action];
    if (button.disabled !== disabled) button.disabled = disabled;
    const hidden = !shown.has(action);
    if (button.hidden !== hidden) button.hidden = hidden;
  }
  // A mission made from a recipe runs again through the recipe's form, its params filled in.
  const again = mission.recipe ? "Run again…" : "Run again";
  setText(card.querySelector(".actions button.run-again"), again);
  const forms = ".lift button, .editor button[type=submit], .save-recipe-form button[type=submit]";
  for (const button of card.querySelectorAll(forms)) {
    if (button.disabled !== pending) button.disabled = pending;
  }
  // An editor opened for fields the mission no longer lets change closes by itself.
  const editor = card.querySelector(".editor");
  if (editor && editor.dataset.fields !== EDITABLE[status]) closeEditor(card);
  // The card's own error, not the editor's inside it.
  setText(card.querySelector(":scope > .error"), ctx.errorFor(mission.mission_id) ?? "");
}

// Brings `container` to show `missions` in order, reusing the cards already there.
export function renderMissionList(container, missions, ctx) {
  const existing = new Map(
    [...container.children].map((card) => [card.dataset.missionId, card]),
  );
  const wanted = new Set(missions.map((m) => m.mission_id));
  for (const [id, card] of existing) {
    if (!wanted.has(id)) card.remove();
  }
  missions.forEach((mission, index) => {
    let card = existing.get(mission.mission_id);
    if (!card) card = createCard(mission, ctx.section, ctx.pipeline);
    updateCard(card, mission, ctx);
    // Move only what is out of place: moving a node would blur a focused button inside it.
    const at = container.children[index];
    if (at !== card) container.insertBefore(card, at ?? null);
  });
}

// ---- the inline editor -------------------------------------------------------------------

// What a person typed that cannot be sent, and the field to go back to.
export class InputError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

function onLimitChoice(idBase, current) {
  const group = el("fieldset", "choice");
  group.append(el("legend", null, "On a limit"));
  for (const [value, text] of [
    ["fail", "Fail"],
    ["ask", "Ask me"],
  ]) {
    const option = el("label", "choice-option");
    const radio = input("radio", value);
    radio.name = `${idBase}-edit-on_limit`;
    radio.dataset.field = "on_limit";
    radio.checked = current === value;
    option.append(radio, document.createTextNode(` ${text}`));
    group.append(option);
  }
  return group;
}

const EDITOR_HINTS = {
  approved: "Saving takes back the approval: approve it again to run what it now says.",
  paused: "Only the budget and the allowed domains can change now; resume it to go on.",
  failed: "Only the budget and the allowed domains can change now; retry it to run again.",
};

// Opens the editor under the card's facts with the fields its state lets change, filled in.
export function openEditor(card, mission, toolNames) {
  const fields = EDITABLE[mission.status];
  if (!fields) return null;
  closeEditor(card);
  const idBase = card.dataset.idBase;
  const form = el("form", "editor");
  form.id = `${idBase}-editor`;
  form.dataset.fields = fields;
  form.setAttribute("aria-label", `Edit mission: ${shorten(mission.objective, 60)}`);
  const parts = [];
  if (fields === "all") {
    const objective = el("textarea");
    objective.rows = 2;
    objective.maxLength = 2000;
    objective.required = true;
    objective.value = mission.objective;
    parts.push(editorField(idBase, "objective", "Objective", objective));
  }
  const domains = input("text", (mission.scope?.allowed_domains ?? []).join(" "), {
    autocomplete: "off",
    spellcheck: "false",
  });
  const domainsHint = "Hostnames, separated by commas or spaces.";
  parts.push(editorField(idBase, "domains", "Allowed domains", domains, domainsHint));
  const budget = input("number", dollars(mission.budget_usd), {
    min: "0.000001",
    max: "100",
    step: "any",
    inputmode: "decimal",
  });
  budget.required = true;
  parts.push(editorField(idBase, "budget", "Budget (USD)", budget));
  if (fields === "all") {
    const tool = el("select");
    tool.append(new Option("Automatic", ""));
    for (const name of new Set([...toolNames, ...(mission.tool ? [mission.tool] : [])])) {
      tool.append(new Option(name, name));
    }
    tool.value = mission.tool ?? "";
    parts.push(editorField(idBase, "tool", "Tool", tool));
    const inputs = el("textarea", "json");
    inputs.rows = 2;
    inputs.spellcheck = false;
    const given = mission.inputs ?? {};
    inputs.value = Object.keys(given).length ? JSON.stringify(given) : "";
    parts.push(editorField(idBase, "inputs", "Tool inputs (optional JSON object)", inputs));
    parts.push(onLimitChoice(idBase, mission.on_limit ?? "fail"));
  }
  const hint = EDITOR_HINTS[mission.status];
  if (hint) parts.push(el("p", "hint", hint));
  const error = el("p", "error editor-error");
  error.id = `${idBase}-edit-error`;
  error.setAttribute("role", "alert");
  const buttons = el("div", "form-actions");
  const save = el("button", "primary", "Save changes");
  save.type = "submit";
  const cancel = el("button", "editor-cancel", "Discard");
  cancel.type = "button";
  buttons.append(cancel, save);
  form.append(...parts, error, buttons);
  form.addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));

  card.insertBefore(form, card.querySelector(".actions"));
  const edit = card.querySelector("button.edit");
  edit.setAttribute("aria-expanded", "true");
  edit.setAttribute("aria-controls", form.id);
  form.querySelector("textarea, input").focus();
  return form;
}

export function closeEditor(card) {
  card.querySelector(".editor")?.remove();
  const edit = card.querySelector("button.edit");
  edit?.setAttribute("aria-expanded", "false");
  edit?.removeAttribute("aria-controls");
}

export function showEditorError(form, message, fieldName) {
  form.querySelector(".editor-error").textContent = message;
  for (const control of form.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
  }
  const control = fieldName && form.elements.namedItem(fieldName);
  if (control && "focus" in control) {
    control.setAttribute("aria-invalid", "true");
    control.focus();
  }
}

export function parseDomains(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

export function parseInputs(text) {
  const raw = text.trim();
  if (!raw) return {};
  let inputs;
  try {
    inputs = JSON.parse(raw);
  } catch (error) {
    throw new InputError(`Inputs are not valid JSON: ${error.message}`, "inputs");
  }
  if (inputs === null || typeof inputs !== "object" || Array.isArray(inputs)) {
    const message = 'Inputs must be a JSON object, e.g. {"expression": "6*7"}.';
    throw new InputError(message, "inputs");
  }
  return inputs;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// The fields the editor changed, as a PATCH body (nothing unchanged is sent).
export function readEditor(form, mission) {
  const value = (name) => form.elements.namedItem(name)?.value;
  const changes = {};
  const domains = parseDomains(value("domains") ?? "");
  if (!same(domains, mission.scope?.allowed_domains ?? [])) {
    changes.scope = { allowed_domains: domains };
  }
  const budget = form.elements.namedItem("budget").valueAsNumber;
  if (!Number.isFinite(budget)) throw new InputError("Give the budget in dollars.", "budget");
  if (budget !== mission.budget_usd) changes.budget_usd = budget;
  if (form.dataset.fields === "all") {
    const objective = value("objective");
    if (objective !== mission.objective) changes.objective = objective;
    const tool = value("tool") || null;
    if (tool !== (mission.tool ?? null)) changes.tool = tool;
    const inputs = parseInputs(value("inputs") ?? "");
    if (!same(inputs, mission.inputs ?? {})) changes.inputs = inputs;
    const onLimit = form.querySelector("input[data-field=on_limit]:checked")?.value;
    if (onLimit && onLimit !== (mission.on_limit ?? "fail")) changes.on_limit = onLimit;
  }
  return changes;
}
