// Buddy Missions dashboard. Firestore is only read, through realtime listeners (no polling);
// every change goes through the HTTP API. The selected mission lives in the URL hash.

import { initializeApp } from "firebase/app";
import { connectAuthEmulator, getAuth } from "firebase/auth";
import {
  collection,
  connectFirestoreEmulator,
  doc,
  getFirestore,
  limit,
  onSnapshot,
  orderBy,
  query,
  where,
} from "firebase/firestore";

import { createApi } from "./api.js";
import { watchSignIn } from "./auth-view.js";
import { renderArtifact, renderEventLog } from "./detail-view.js";
import { createFeedbackWidget } from "./feedback-view.js";
import { createSchedulesPanel } from "./schedules-view.js";
import { LIVE, PAUSED, TERMINAL, percentOf, runText, stepLine, toMillis } from "./format.js";
import {
  InputError,
  closeEditor,
  openEditor,
  parseDomains,
  parseInputs,
  readEditor,
  renderMissionList,
  showEditorError,
} from "./missions-view.js";
import {
  closeSaveForm,
  createRecipesPanel,
  openSaveForm,
  readSaveForm,
  showSaved,
} from "./recipes-view.js";
import { createStatsPanel } from "./stats-view.js";

const MISSIONS_SHOWN = 20;
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 15000;
// After a successful action, its buttons stay disabled until the listener shows the change.
const SETTLE_MAX_MS = 5000;
const ARTIFACT_ATTEMPTS = 3;
// Where keyboard focus goes once an action has taken effect and its button is disabled: the
// first of these buttons that can be pressed (a card that moved group is found again).
const NEXT_FOCUS = {
  approve: ["execute"],
  execute: ["cancel"],
  cancel: ["open"],
  pause: ["resume", "open"],
  resume: ["pause", "open"],
  retry: ["pause", "open"],
  lift: ["pause", "open"],
  modify: ["edit"],
};
// A refused field, as the API names it at the start of its message, and the editor's field.
const EDITOR_FIELD = {
  objective: "objective",
  scope: "domains",
  budget_usd: "budget",
  tool: "tool",
  inputs: "inputs",
};

const $ = (selector) => document.querySelector(selector);

let auth;
let db;
let api;
let schedules;
let recipes;
let stats;
let feedback;

const state = {
  uid: null,
  loaded: false,
  missions: [],
  statuses: new Map(), // mission id → its status in the last snapshot
  stopMissions: null,
  stopSchedules: null,
  pending: new Map(), // mission id → the action in flight or waiting to show up
  errors: new Map(), // mission id → the last action's error message
  selectedId: null,
  selected: null, // the selected mission's document
  selectedError: "",
  events: new Map(), // seq → event of the selected mission
  artifact: null, // { missionId, data, loading, attempts }
  stopDetail: null,
};

// ---- start-up -------------------------------------------------------------------------

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

async function loadConfig() {
  const config = await fetchJson("/buddy-config.json");
  let apiUrl = config.apiUrl;
  const override = new URLSearchParams(location.search).get("api");
  // The override is honoured only against emulators: elsewhere a crafted link could send
  // real ID tokens to any server.
  if (override && config.useEmulators) apiUrl = override;
  else if (override) console.warn("?api= is ignored unless buddy-config.json sets useEmulators");
  return {
    apiUrl: String(apiUrl).replace(/\/+$/, ""),
    useEmulators: Boolean(config.useEmulators),
    // Written by the local stack from its one list of ports (buddy.config.LocalPorts).
    emulators: config.emulators,
    // The user the CLI and the dashboard share locally until someone signs in.
    localUser: config.useEmulators ? (config.localUser ?? null) : null,
  };
}

// The tools the API offers, from its own description: the form never lists a stale set.
async function loadTools(apiUrl) {
  const select = $("#tool");
  try {
    const description = await fetchJson(`${apiUrl}/openapi.json`);
    const tool = description.components.schemas.CreateMission.properties.tool;
    const names = tool.anyOf.find((choice) => Array.isArray(choice.enum)).enum;
    for (const name of names) select.append(new Option(name, name));
  } catch (error) {
    select.title = `The tool list could not be loaded (${error.message}); Automatic still works.`;
  }
}

async function main() {
  const config = await loadConfig();
  const app = initializeApp(await fetchJson("/__/firebase/init.json"));
  auth = getAuth(app);
  db = getFirestore(app);
  if (config.useEmulators) {
    const { auth: authUrl, firestore } = config.emulators;
    connectAuthEmulator(auth, authUrl, { disableWarnings: true });
    connectFirestoreEmulator(db, firestore.host, firestore.port);
  }
  api = createApi(config.apiUrl, () => auth.currentUser);
  schedules = createSchedulesPanel({ root: $("#schedules"), api });
  recipes = createRecipesPanel({
    root: $("#recipes"),
    api,
    onStarted: (mission) => showMission(mission.mission_id),
  });
  stats = createStatsPanel({ root: $("#stats"), api });
  feedback = createFeedbackWidget({ root: $("#feedback"), api, onRated: () => stats.refresh() });
  loadTools(config.apiUrl);

  wireCreateForm();
  wireMissionActions();
  window.addEventListener("hashchange", () => select(idFromHash()));
  setInterval(tick, 1000);

  watchSignIn({ auth, config, onSignedIn: startSession, onSignedOut: stopSession });
}

function startSession(user) {
  if (state.uid === user.uid) return;
  state.stopMissions?.();
  state.stopSchedules?.();
  state.uid = user.uid;
  state.stopMissions = listenToMissions();
  schedules.clear();
  state.stopSchedules = listenToSchedules();
  state.statuses = new Map();
  recipes.clear();
  recipes.refresh();
  stats.clear();
  stats.refresh();
  state.selectedId = null; // re-subscribes the detail listeners for this user
  select(idFromHash());
}

// Signed out: nothing of the last user stays on the page or keeps listening.
function stopSession() {
  state.stopMissions?.();
  state.stopSchedules?.();
  Object.assign(state, {
    uid: null,
    loaded: false,
    missions: [],
    statuses: new Map(),
    stopMissions: null,
    stopSchedules: null,
  });
  state.pending.clear();
  state.errors.clear();
  schedules.clear();
  recipes.clear();
  stats.clear();
  state.selectedId = undefined; // unlike any selection: select() stops the detail listeners
  select(null);
  setConnection("signed out", "idle");
}

// ---- listeners --------------------------------------------------------------------------

// Runs a listener and opens it again after an error, waiting longer after each failure in a row.
// `open(ok, failed, retrying)` subscribes and returns the unsubscribe function.
function keepListening(open, onFailure) {
  let stopped = false;
  let failures = 0;
  let timer = 0;
  let unsubscribe = () => {};
  const start = (retrying) => {
    unsubscribe = open(
      () => {
        failures = 0;
      },
      (error) => {
        if (stopped) return;
        const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** failures++);
        if (onFailure(error, delay) !== false) timer = setTimeout(() => start(true), delay);
      },
      retrying,
    );
  };
  start(false);
  return () => {
    stopped = true;
    clearTimeout(timer);
    unsubscribe();
  };
}

function setConnection(text, mode) {
  const connection = $("#connection");
  if (connection.textContent !== text) connection.textContent = text;
  connection.dataset.state = mode;
}

function listenToMissions() {
  const missions = query(
    collection(db, "missions"),
    where("owner_uid", "==", state.uid),
    orderBy("created_at", "desc"),
    limit(MISSIONS_SHOWN),
  );
  return keepListening(
    (ok, failed) =>
      onSnapshot(
        missions,
        // Metadata changes too: they say when the listener goes offline and comes back.
        { includeMetadataChanges: true },
        (snapshot) => {
          ok();
          state.loaded = true;
          state.missions = snapshot.docs.map((d) => ({ ...d.data(), mission_id: d.id }));
          refreshCountsWhenMissionsEnd();
          // Other scripts on the page (the benchmark, say) can follow the same snapshots.
          window.dispatchEvent(new CustomEvent("buddy:missions", { detail: state.missions }));
          if (snapshot.metadata.fromCache) setConnection("reconnecting…", "offline");
          else setConnection("live", "live");
          renderMissions();
        },
        failed,
      ),
    (error, delay) => {
      setConnection(`Listener error: ${error.message} — retrying in ${delay / 1000}s`, "error");
    },
  );
}

// The Recipes and Tool statistics panels count how missions ended: they ask again when one did.
function refreshCountsWhenMissionsEnd() {
  const statuses = new Map(state.missions.map((m) => [m.mission_id, m.status]));
  const ended = state.missions.some((m) => {
    const before = state.statuses.get(m.mission_id);
    return before && !TERMINAL.has(before) && TERMINAL.has(m.status);
  });
  state.statuses = statuses;
  if (!ended) return;
  recipes.refresh();
  stats.refresh();
}

// A schedule changed (a fire, an outcome, an edit): the panel asks the API for the schedules
// as their owner sees them, next fires included.
function listenToSchedules() {
  const mine = query(
    collection(db, "schedules"),
    where("owner_uid", "==", state.uid),
    orderBy("created_at", "desc"),
  );
  return keepListening(
    (ok, failed) =>
      onSnapshot(
        mine,
        () => {
          ok();
          schedules.refresh();
        },
        failed,
      ),
    () => true,
  );
}

function listenToSelected(id) {
  const stopDoc = keepListening(
    (ok, failed) =>
      onSnapshot(
        doc(db, "missions", id),
        (snapshot) => {
          ok();
          if (state.selectedId !== id) return;
          state.selected = snapshot.exists() ? { ...snapshot.data(), mission_id: id } : null;
          state.selectedError = snapshot.exists() ? "" : "This mission does not exist.";
          loadArtifactIfReady();
          renderDetail();
        },
        failed,
      ),
    (error, delay) => {
      if (state.selectedId !== id) return false;
      // The rules deny reading a mission that is missing or someone else's: waiting won't help.
      const hopeless = error.code === "permission-denied";
      state.selectedError = hopeless
        ? "This mission does not exist or is not yours."
        : `Cannot follow this mission: ${error.message} — retrying in ${delay / 1000}s`;
      renderDetail();
      return !hopeless;
    },
  );

  const stopEvents = keepListening(
    (ok, failed, retrying) => {
      const constraints = [where("owner_uid", "==", state.uid)];
      // Resume after the last event we have; the Map merge keeps the log whole either way.
      const lastSeq = Math.max(0, ...state.events.keys());
      if (retrying && lastSeq > 0) constraints.push(where("seq", ">", lastSeq));
      const events = query(
        collection(db, "missions", id, "events"),
        ...constraints,
        orderBy("seq"),
      );
      return onSnapshot(
        events,
        (snapshot) => {
          ok();
          if (state.selectedId !== id) return;
          for (const change of snapshot.docChanges()) {
            const event = change.doc.data();
            // A retracted event (an execute whose message never left) is deleted.
            if (change.type === "removed") state.events.delete(event.seq);
            else state.events.set(event.seq, event);
          }
          renderEventLog($("#event-log"), state.events);
        },
        failed,
      );
    },
    (error, delay) => {
      if (state.selectedId !== id) return false;
      $("#event-log-error").textContent =
        `The event log lost its connection (${error.message}); resuming in ${delay / 1000}s.`;
      setTimeout(() => ($("#event-log-error").textContent = ""), delay + 500);
      return true;
    },
  );

  return () => {
    stopDoc();
    stopEvents();
  };
}

// ---- selection -------------------------------------------------------------------------

function idFromHash() {
  const match = /^#m=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  return match ? match[1] : null;
}

function select(id) {
  if (id === state.selectedId) return;
  state.stopDetail?.();
  state.stopDetail = null;
  state.selectedId = id;
  state.selected = null;
  state.selectedError = "";
  state.events = new Map();
  state.artifact = null;
  $("#event-log").replaceChildren();
  $("#event-log-error").textContent = "";
  if (id && state.uid) state.stopDetail = listenToSelected(id);
  renderDetail();
  renderMissions();
}

function showMission(id, { focus = false } = {}) {
  const hash = `#m=${id}`;
  if (location.hash !== hash) location.hash = hash;
  select(id);
  if (focus) $("#detail-heading").focus();
}

function loadArtifactIfReady() {
  const mission = state.selected;
  const id = state.selectedId;
  if (!mission?.execution_record?.artifact_reference) return;
  if (state.artifact?.missionId === id) return;
  state.artifact = { missionId: id, data: null, loading: true, attempts: 0 };
  fetchArtifact(state.artifact);
}

async function fetchArtifact(entry) {
  entry.attempts += 1;
  try {
    entry.data = await api.artifact(entry.missionId);
    entry.loading = false;
    $("#artifact-error").textContent = "";
  } catch (error) {
    if (state.artifact !== entry) return;
    if (entry.attempts < ARTIFACT_ATTEMPTS) {
      setTimeout(() => state.artifact === entry && fetchArtifact(entry), 2000 * entry.attempts);
      return;
    }
    entry.loading = false;
    $("#artifact-error").textContent = `Could not load the artifact: ${error.message}`;
  }
  if (state.artifact === entry) renderDetail();
}

// ---- rendering -------------------------------------------------------------------------

// What an action on a mission changes, besides its fields (an edit is told by `updated_at`).
function signatureOf(mission) {
  if (!mission) return "";
  const { status, cancel_requested: cancelling, pause_requested: pausing } = mission;
  return [status, Boolean(cancelling), Boolean(pausing)].join();
}

function missionById(id) {
  return (
    state.missions.find((m) => m.mission_id === id) ??
    (state.selected?.mission_id === id ? state.selected : null)
  );
}

function prunePending() {
  const settled = [];
  for (const [id, entry] of state.pending) {
    if (!entry.done) continue;
    const mission = state.missions.find((m) => m.mission_id === id);
    // The listener shows the change: a new state, or the version the API answered with.
    const changed =
      !mission ||
      signatureOf(mission) !== entry.signature ||
      (entry.until != null && (toMillis(mission.updated_at) ?? 0) >= entry.until);
    if (changed || Date.now() - entry.doneAt > SETTLE_MAX_MS) {
      state.pending.delete(id);
      settled.push(entry);
    }
  }
  return settled;
}

function renderMissions() {
  const settled = prunePending();
  const ctx = {
    now: Date.now(),
    selectedId: state.selectedId,
    isPending: (mission) => state.pending.has(mission.mission_id),
    errorFor: (id) => state.errors.get(id),
  };
  const live = state.missions.filter((m) => LIVE.has(m.status));
  const paused = state.missions.filter((m) => m.status === PAUSED);
  renderMissionList($("#live-list"), live, { ...ctx, section: "live", pipeline: false });
  renderMissionList($("#paused-list"), paused, { ...ctx, section: "paused", pipeline: false });
  renderMissionList($("#pipeline-list"), state.missions, {
    ...ctx,
    section: "pipeline",
    pipeline: true,
  });
  $("#paused").hidden = paused.length === 0;
  const count = paused.length === 1 ? "1 mission" : `${paused.length} missions`;
  if ($("#paused-count").textContent !== count) $("#paused-count").textContent = count;
  $("#live-empty").hidden = !state.loaded || live.length + paused.length > 0;
  $("#pipeline-empty").hidden = !state.loaded || state.missions.length > 0;
  $("#missions-loading").hidden = state.loaded;

  // The clicked button is disabled now; keep keyboard users in the card, on the next step.
  for (const entry of settled) {
    const active = document.activeElement;
    if (active && active !== document.body && !active.disabled) continue;
    // A mission that was paused or resumed moved group: its card there is a new one.
    const card = entry.card.isConnected
      ? entry.card
      : document.querySelector(
          `#${entry.panel} article.mission[data-mission-id="${CSS.escape(entry.id)}"]`,
        );
    const next = (NEXT_FOCUS[entry.action] ?? [])
      .map((action) => card?.querySelector(`.actions button.${action}`))
      .find((button) => button && !button.disabled && !button.hidden);
    next?.focus();
  }
}

function renderDetail() {
  const mission = state.selected;
  const heading = $("#detail-heading");
  const meta = $("#detail-meta");
  let title = "Mission details";
  if (mission) title = mission.objective;
  else if (state.selectedId) title = state.selectedError ? "Mission unavailable" : "Loading mission…";
  if (heading.textContent !== title) heading.textContent = title;
  $("#detail-hint").hidden = Boolean(state.selectedId);
  $("#detail-body").hidden = !state.selectedId;
  $("#detail-error").textContent = state.selectedError;

  const parts = mission
    ? [
        mission.status,
        `${percentOf(mission)}%`,
        stepLine(mission),
        `budget $${mission.budget_usd}`,
        mission.scope?.allowed_domains?.length
          ? `domains ${mission.scope.allowed_domains.join(", ")}`
          : null,
        mission.on_limit === "ask" ? "asks at a limit" : null,
        runText(mission)?.toLowerCase(),
        mission.cloned_from ? `copy of ${mission.cloned_from}` : null,
        mission.recipe ? recipeText(mission.recipe) : null,
      ]
    : [];
  const text = parts.filter(Boolean).join(" · ");
  if (meta.textContent !== text) meta.textContent = text;

  const artifact = state.artifact?.missionId === state.selectedId ? state.artifact.data : null;
  renderArtifact($("#artifact"), artifact);
  feedback.show(mission);
}

function recipeText({ recipe_id: id, version }) {
  return `from recipe ${recipes.nameOf(id) ?? id} (version ${version})`;
}

// Elapsed time, ETA and stalled leases move with the clock, not with snapshots.
function tick() {
  if (state.loaded) renderMissions();
}

// ---- actions ---------------------------------------------------------------------------

function readCreateForm() {
  const body = { objective: $("#objective").value };
  const domains = parseDomains($("#domains").value);
  if (domains.length) body.scope = { allowed_domains: domains };
  const budget = $("#budget").valueAsNumber;
  if (Number.isFinite(budget)) body.budget_usd = budget;
  const tool = $("#tool").value;
  if (tool) body.tool = tool;
  body.on_limit = $("#create-form input[name=on_limit]:checked")?.value ?? "fail";
  const inputs = parseInputs($("#inputs").value);
  if (Object.keys(inputs).length) body.inputs = inputs;
  return body;
}

function wireCreateForm() {
  const form = $("#create-form");
  const errorBox = $("#create-error");
  const inputsField = $("#inputs");
  inputsField.addEventListener("input", () => inputsField.removeAttribute("aria-invalid"));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = readCreateForm();
    } catch (error) {
      if (!(error instanceof InputError)) throw error;
      errorBox.textContent = error.message;
      inputsField.setAttribute("aria-invalid", "true");
      inputsField.focus();
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    errorBox.textContent = "";
    try {
      const mission = await api.create(body);
      $("#objective").value = "";
      showMission(mission.mission_id);
    } catch (error) {
      errorBox.textContent = error.message;
    } finally {
      submit.disabled = false;
    }
  });
}

function wireMissionActions() {
  $("#main").addEventListener("click", (event) => {
    const link = event.target.closest("a.artifact-link");
    if (link && !(event.ctrlKey || event.metaKey || event.shiftKey)) {
      event.preventDefault();
      showMission(link.closest("article.mission").dataset.missionId, { focus: true });
      return;
    }
    const discard = event.target.closest("article.mission .editor-cancel");
    if (discard) {
      closeEditorAndReturn(discard.closest("article.mission"));
      return;
    }
    const unsaved = event.target.closest("article.mission .save-recipe-cancel");
    if (unsaved) {
      closeSaveFormAndReturn(unsaved.closest("article.mission"));
      return;
    }
    const button = event.target.closest("article.mission .actions button[data-action]");
    if (!button || button.disabled) return;
    const card = button.closest("article.mission");
    const id = card.dataset.missionId;
    const action = button.dataset.action;
    if (action === "open") showMission(id, { focus: true });
    else if (action === "edit") toggleEditor(card, id);
    else if (action === "clone") cloneMission(id, card);
    else if (action === "run-again") runAgain(id, card);
    else if (action === "save-recipe") toggleSaveForm(card, id);
    else if (action === "schedule") {
      const mission = missionById(id);
      if (mission) schedules.openFor(mission);
    }
    else runAction(id, action, card, () => api[action](id));
  });

  $("#main").addEventListener("submit", (event) => {
    const form = event.target;
    const card = form.closest("article.mission");
    if (!card) return;
    event.preventDefault();
    if (form.classList.contains("editor")) saveEdit(form, card);
    else if (form.classList.contains("lift-form")) liftPause(form, card);
    else if (form.classList.contains("save-recipe-form")) saveAsRecipe(form, card);
  });

  $("#main").addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const editor = event.target.closest?.("article.mission .editor");
    if (editor) closeEditorAndReturn(editor.closest("article.mission"));
    const saving = event.target.closest?.("article.mission .save-recipe-form");
    if (saving) closeSaveFormAndReturn(saving.closest("article.mission"));
  });
}

function closeSaveFormAndReturn(card) {
  closeSaveForm(card);
  card.querySelector("button.save-recipe")?.focus();
}

function toggleSaveForm(card, id) {
  if (card.querySelector(".save-recipe-form")) {
    closeSaveForm(card);
    return;
  }
  const mission = missionById(id);
  if (mission) openSaveForm(card, mission);
}

async function saveAsRecipe(form, card) {
  const id = card.dataset.missionId;
  const error = form.querySelector(".save-recipe-error");
  error.textContent = "";
  const save = () => api.saveAsRecipe(id, readSaveForm(form));
  const recipe = await runAction(id, "save-recipe", card, save, {
    settles: false,
    onError: (failure) => (error.textContent = failure.message),
  });
  if (!recipe) return;
  showSaved(card, recipe);
  card.querySelector("button.save-recipe")?.focus();
  recipes.refresh();
}

function closeEditorAndReturn(card) {
  closeEditor(card);
  card.querySelector("button.edit")?.focus();
}

function toggleEditor(card, id) {
  if (card.querySelector(".editor")) {
    closeEditor(card);
    return;
  }
  const mission = missionById(id);
  const tools = [...$("#tool").options].map((option) => option.value).filter(Boolean);
  if (mission) openEditor(card, mission, tools);
}

async function saveEdit(form, card) {
  const id = card.dataset.missionId;
  const mission = missionById(id);
  if (!mission) return;
  let changes;
  try {
    changes = readEditor(form, mission);
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    showEditorError(form, error.message, error.field);
    return;
  }
  if (Object.keys(changes).length === 0) {
    closeEditorAndReturn(card);
    return;
  }
  showEditorError(form, "");
  const saved = await runAction(id, "modify", card, () => api.modify(id, changes), {
    onError: (error) => {
      const named = error.status === 422 ? /^(\w+)/.exec(error.message)?.[1] : null;
      showEditorError(form, error.message, EDITOR_FIELD[named]);
    },
  });
  // Focus comes back to Edit once the listener shows the saved mission.
  if (saved) closeEditor(card);
}

// Lifts the limit a paused mission stopped at, then resumes it.
async function liftPause(form, card) {
  const id = card.dataset.missionId;
  const mission = missionById(id);
  if (!mission) return;
  let changes;
  if (form.dataset.lift === "budget_exceeded") {
    changes = { budget_usd: form.querySelector(".lift-budget").valueAsNumber };
  } else {
    const domains = mission.scope?.allowed_domains ?? [];
    const hosts = JSON.parse(form.dataset.hosts);
    changes = { scope: { allowed_domains: [...new Set([...domains, ...hosts])] } };
  }
  await runAction(id, "lift", card, async () => {
    await api.modify(id, changes);
    return api.resume(id);
  });
}

async function cloneMission(id, card) {
  const copy = await runAction(id, "clone", card, () => api.clone(id), { settles: false });
  if (copy) showMission(copy.mission_id, { focus: true });
}

// A copy that runs at once; a mission made from a recipe opens the recipe's form instead, with
// the params it ran with, to run as it is or changed.
async function runAgain(id, card) {
  const mission = missionById(id);
  if (mission?.recipe && recipes.openFor(mission.recipe)) return;
  let copy = null;
  const run = async () => {
    copy = await api.clone(id);
    try {
      await api.approve(copy.mission_id);
      return await api.execute(copy.mission_id);
    } catch (error) {
      throw new Error(`Its copy was made but did not start: ${error.message}`);
    }
  };
  await runAction(id, "run-again", card, run, { settles: false });
  if (copy) showMission(copy.mission_id);
}

// Sends an action for a mission: its buttons stay disabled until the listener shows what it
// changed (or, with `settles: false`, until the API answered, for an action that changes
// another mission). Returns the API's answer, or null after showing the error.
async function runAction(id, action, card, send, { onError = null, settles = true } = {}) {
  const mission = missionById(id);
  const entry = {
    id,
    action,
    card,
    panel: card.closest("section.panel")?.id ?? "live",
    signature: signatureOf(mission),
    until: null,
    done: false,
    doneAt: 0,
  };
  state.errors.delete(id);
  state.pending.set(id, entry);
  renderMissions();
  let answer = null;
  try {
    answer = await send();
    const version = Date.parse(answer?.updated_at);
    if (!Number.isNaN(version)) entry.until = version;
    entry.done = true;
    entry.doneAt = Date.now();
    if (!settles && state.pending.get(id) === entry) state.pending.delete(id);
  } catch (error) {
    if (state.pending.get(id) === entry) state.pending.delete(id);
    if (onError) onError(error);
    else state.errors.set(id, error.message);
  }
  renderMissions();
  return answer;
}

main().catch((error) => {
  $("#auth-status").textContent = `Could not start: ${error.message}`;
  setConnection("offline", "error");
});
