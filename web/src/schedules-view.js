// The Schedules panel: the owner's schedules with their next fires in the viewer's local
// time, their last fires linking to the missions they made, and Pause / Resume / Run now /
// Delete. A Firestore listener says when a schedule changed; the API's GET /schedules gives
// each one as its owner sees it (with its next fires). "Schedule…" on a mission card opens
// the form with that mission's fields.

import { actionButton, el } from "./missions-view.js";
import { oneAtATime } from "./refresh.js";

const FIRE_FORMAT = {
  weekday: "short",
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  timeZoneName: "short",
};

// A UTC instant as the viewer's clock reads it.
export function localTime(iso) {
  return new Date(iso).toLocaleString(undefined, FIRE_FORMAT);
}

export function viewerTimeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

// What a schedule of this mission runs: its recipe with the same params (the version it was
// made from), or the fields a create takes, no more.
export function missionBody(mission) {
  if (mission.recipe) {
    const { recipe_id, version, params } = mission.recipe;
    return { recipe_id, version, params };
  }
  const body = {
    objective: mission.objective,
    budget_usd: mission.budget_usd,
    scope: { allowed_domains: mission.scope?.allowed_domains ?? [] },
    on_limit: mission.on_limit ?? "fail",
  };
  if (mission.tool) body.tool = mission.tool;
  if (mission.inputs && Object.keys(mission.inputs).length) body.inputs = mission.inputs;
  return body;
}

export function createSchedulesPanel({ root, api }) {
  const form = root.querySelector("#schedule-form");
  const list = root.querySelector("#schedule-list");
  const empty = root.querySelector("#schedules-empty");
  const formError = root.querySelector("#schedule-error");
  const errors = new Map(); // schedule id → its last action's error
  let body = null; // the mission body the open form schedules

  // One GET at a time; changes that land meanwhile ask for one more.
  const refresh = oneAtATime(async (stale) => {
    try {
      const { schedules } = await api.schedules();
      if (!stale()) render(schedules);
    } catch (error) {
      if (stale()) return;
      empty.hidden = false;
      empty.textContent = `Schedules could not be loaded: ${error.message}`;
    }
  });

  function render(schedules) {
    empty.hidden = schedules.length > 0;
    empty.textContent = "No schedules. Use “Schedule…” on a mission to run it on a cron.";
    list.replaceChildren(...schedules.map(card));
  }

  function card(schedule) {
    const id = schedule.schedule_id;
    const article = el("article", "schedule");
    article.dataset.scheduleId = id;
    const heading = el("h3", "name", schedule.name);
    heading.id = `schedule-${id}-name`;
    article.setAttribute("aria-labelledby", heading.id);
    const state = schedule.paused ? "paused" : "active";
    const head = el("div", "schedule-head");
    head.append(heading, el("span", `badge ${state}`, state));
    article.append(head);
    article.append(
      el("p", "when", `${schedule.description} · ${schedule.cron} · ${schedule.timezone}`),
      el("p", "runs", `Runs: ${runs(schedule.mission)}`),
    );
    if (schedule.paused && schedule.pause_reason) {
      article.append(el("p", "pause-reason", schedule.pause_reason));
    }
    if (schedule.upcoming.length) {
      article.append(el("h4", "", "Next fires (your time)"));
      const fires = el("ol", "next-fires");
      for (const fire of schedule.upcoming) {
        const item = el("li");
        const time = el("time", "", localTime(fire.utc));
        time.dateTime = fire.utc;
        time.title = `${fire.local} in ${schedule.timezone}`;
        item.append(time);
        fires.append(item);
      }
      article.append(fires);
    }
    if (schedule.history.length) {
      article.append(el("h4", "", "Last fires"));
      const history = el("ol", "history");
      for (const fire of schedule.history) history.append(historyItem(fire));
      article.append(history);
    }
    const actions = el("div", "actions");
    const buttons = [
      schedule.paused ? ["resume", "Resume"] : ["pause", "Pause"],
      ["run", "Run now"],
      ["delete", "Delete"],
    ];
    for (const [action, label] of buttons) {
      actions.append(actionButton(action, label, heading.id));
    }
    const error = el("p", "error", errors.get(id) ?? "");
    error.setAttribute("role", "alert");
    article.append(actions, error);
    return article;
  }

  function historyItem(fire) {
    const item = el("li", `fire ${fire.status}`);
    const time = el("time", "", localTime(fire.fire_at));
    time.dateTime = fire.fire_at;
    item.append(time, " ", el("span", "fire-status", fire.status), " ");
    if (fire.mission_id) {
      const link = el("a", "mission-link", fire.mission_id);
      link.href = `#m=${fire.mission_id}`;
      item.append(link);
      if (fire.outcome) item.append(" ", el("span", `outcome ${fire.outcome}`, fire.outcome));
    } else {
      item.append(el("span", "reason", fire.reason ?? ""));
    }
    return item;
  }

  function openFor(mission) {
    body = missionBody(mission);
    form.hidden = false;
    form.querySelector("#schedule-objective").textContent = mission.objective;
    form.querySelector("#schedule-name").value = mission.objective.slice(0, 200);
    const zone = form.querySelector("#schedule-timezone");
    if (!zone.value) zone.value = viewerTimeZone();
    formError.textContent = "";
    root.scrollIntoView({ block: "nearest" });
    form.querySelector("#schedule-cron").focus();
  }

  function closeForm() {
    form.hidden = true;
    body = null;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!body) return;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    formError.textContent = "";
    try {
      await api.createSchedule({
        name: form.querySelector("#schedule-name").value,
        cron: form.querySelector("#schedule-cron").value.trim(),
        timezone: form.querySelector("#schedule-timezone").value.trim(),
        overlap: form.querySelector("#schedule-overlap").value,
        mission: body,
      });
      closeForm();
      await refresh();
    } catch (error) {
      formError.textContent = error.message;
    } finally {
      submit.disabled = false;
    }
  });
  form.querySelector(".schedule-cancel").addEventListener("click", closeForm);

  list.addEventListener("click", async (event) => {
    const button = event.target.closest("article.schedule button[data-action]");
    if (!button || button.disabled) return;
    const id = button.closest("article.schedule").dataset.scheduleId;
    const action = button.dataset.action;
    button.disabled = true;
    errors.delete(id);
    try {
      if (action === "pause") await api.pauseSchedule(id);
      else if (action === "resume") await api.resumeSchedule(id);
      else if (action === "run") await api.runSchedule(id);
      else if (action === "delete") await api.deleteSchedule(id);
    } catch (error) {
      errors.set(id, error.message);
    }
    await refresh();
  });

  function clear() {
    refresh.forget();
    list.replaceChildren();
  }

  return { refresh, openFor, clear };
}

// What a schedule's fires run: a mission body, or a recipe (pinned version) with its params.
function runs(mission) {
  if (!mission.recipe_id) return mission.objective;
  const given = Object.entries(mission.params ?? {}).map(([k, v]) => `${k}=${v}`);
  return `recipe ${mission.recipe_id} v${mission.version} (${given.join(", ")})`;
}
