// Mission cards. Each card is created once and then updated in place, so the progress bar's
// width can animate from its old value and a focused button keeps its focus across snapshots.

import {
  TERMINAL,
  attemptText,
  detailText,
  elapsedSeconds,
  etaSeconds,
  failureText,
  isStalled,
  percentOf,
  shorten,
  stepLine,
  toMillis,
  toolText,
} from "./format.js";

const ACTIONS = [
  ["approve", "Approve"],
  ["execute", "Execute"],
  ["cancel", "Cancel"],
  ["open", "Open"],
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
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
    const button = el("button", action, label);
    button.type = "button";
    button.dataset.action = action;
    // The button's name stays "Approve" etc.; the objective tells screen readers which mission.
    button.setAttribute("aria-describedby", objective.id);
    actions.append(button);
  }
  const error = el("p", "error");
  error.setAttribute("role", "alert");

  card.append(head, progress, el("p", "step"), el("p", "facts"), el("div", "notes"));
  if (pipeline) card.append(el("dl", "summary-facts"), el("div", "links"));
  card.append(actions, error);
  return card;
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

  const elapsed = elapsedSeconds(mission, now);
  const eta = etaSeconds(mission, now);
  const detail = detailText(mission);
  const attempt = attemptText(mission);
  showParts(card.querySelector(".facts"), [
    elapsed != null && { cls: "elapsed", text: `Elapsed ${elapsed}s` },
    eta != null && { cls: "eta", text: `ETA ${eta}s` },
    detail && { cls: "detail", text: detail },
    attempt && { cls: "attempt", text: attempt },
    isStalled(mission, now) && { cls: "stalled", text: "stalled" },
    mission.cancel_requested &&
      !TERMINAL.has(status) && { cls: "cancelling", text: "cancel requested" },
  ]);

  const failure = failureText(mission);
  showParts(card.querySelector(".notes"), [failure && { tag: "p", cls: "failure", text: failure }]);

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
  const allowed = {
    approve: status === "proposed",
    execute: status === "approved",
    cancel: !TERMINAL.has(status) && !mission.cancel_requested,
  };
  for (const button of card.querySelectorAll(".actions button")) {
    const action = button.dataset.action;
    const disabled = action === "open" ? false : pending || !allowed[action];
    if (button.disabled !== disabled) button.disabled = disabled;
  }
  setText(card.querySelector(".error"), ctx.errorFor(mission.mission_id) ?? "");
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
