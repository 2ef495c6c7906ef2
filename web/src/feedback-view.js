// The owner's rating of a finished mission, in its details: what they said last (read from the
// mission's document, so it shows as soon as the listener has it) and five star buttons, each
// sending its rating with the comment typed above it. A new rating replaces the last one.

import { RATING_STARS, TERMINAL, toMillis } from "./format.js";
import { el } from "./missions-view.js";

function currentText(feedback) {
  if (!feedback?.rating) return "Not rated yet.";
  const at = toMillis(feedback.at);
  const when = at == null ? "" : ` on ${new Date(at).toLocaleString()}`;
  const said = feedback.comment ? `: “${feedback.comment}”` : ".";
  return `You rated it ${feedback.rating} of ${RATING_STARS}${when}${said}`;
}

export function createFeedbackWidget({ root, api, onRated }) {
  const current = root.querySelector("#feedback-current");
  const form = root.querySelector("#feedback-form");
  const comment = form.querySelector("#feedback-comment");
  const stars = form.querySelector(".stars");
  const error = root.querySelector("#feedback-error");
  const status = root.querySelector("#feedback-status");
  let missionId = null;
  let shownAt = null; // when the rating shown in the comment box was given
  let edited = false; // the comment box holds what the owner typed: snapshots leave it alone

  for (let rating = 1; rating <= RATING_STARS; rating += 1) {
    const star = el("button", "star", "★");
    star.type = "submit";
    star.value = String(rating);
    star.setAttribute("aria-label", `Rate ${rating} of ${RATING_STARS}`);
    star.setAttribute("aria-pressed", "false");
    stars.append(star);
  }
  comment.addEventListener("input", () => (edited = true));

  function show(mission) {
    root.hidden = !mission;
    if (!mission) return;
    if (mission.mission_id !== missionId) {
      missionId = mission.mission_id;
      shownAt = null;
      edited = false;
      comment.value = "";
      error.textContent = "";
      status.textContent = "";
    }
    const finished = TERMINAL.has(mission.status);
    form.hidden = !finished;
    const feedback = mission.feedback ?? null;
    const text = finished ? currentText(feedback) : "You can rate it once it has finished.";
    if (current.textContent !== text) current.textContent = text;
    const rating = feedback?.rating ?? 0;
    for (const star of stars.children) {
      const value = Number(star.value);
      star.classList.toggle("on", value <= rating);
      star.setAttribute("aria-pressed", String(value === rating));
    }
    const at = feedback ? String(toMillis(feedback.at)) : null;
    if (at !== shownAt && !edited) comment.value = feedback?.comment ?? "";
    shownAt = at;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const rating = Number(event.submitter?.value);
    if (!missionId || !rating) return;
    const id = missionId;
    const buttons = [...stars.children];
    for (const star of buttons) star.disabled = true;
    error.textContent = "";
    status.textContent = "";
    try {
      const mission = await api.rate(id, rating, comment.value.trim());
      if (id !== missionId) return;
      edited = false;
      status.textContent = `Thanks: rated ${rating} of ${RATING_STARS}.`;
      onRated(mission);
    } catch (failure) {
      if (id === missionId) error.textContent = failure.message;
    } finally {
      for (const star of buttons) star.disabled = false;
    }
  });

  return { show };
}
