// Text shown for a mission, computed from its Firestore document alone.
// No DOM and no SDK here, so every rule about what a person sees lives in one place.

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
// Missions someone may still act on or is waiting for. Paused ones wait for their owner and
// are listed apart (PAUSED), never as running.
export const LIVE = new Set(["proposed", "approved", "queued", "running"]);
export const PAUSED = "paused";

// Firestore Timestamps (mission fields) and ISO strings (tracker fields) alike.
export function toMillis(value) {
  if (value == null) return null;
  if (typeof value.toMillis === "function") return value.toMillis();
  if (value instanceof Date) return value.getTime();
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

export function trackerOf(mission) {
  return mission.execution_record?.progress_tracker ?? null;
}

export function percentOf(mission) {
  const percent = Number(trackerOf(mission)?.progress_percent);
  return Number.isFinite(percent) ? Math.min(100, Math.max(0, Math.round(percent))) : 0;
}

export function stepText(step) {
  return (
    `Step ${step.step_index}/${step.total_steps}: ${step.step_name} — ` +
    `${step.message} (${step.progress_percent}%)`
  );
}

// The step worth showing: the running one, or once finished the last that completed or failed.
export function shownStep(mission) {
  const tracker = trackerOf(mission);
  if (!tracker) return null;
  const current = tracker.current_step ?? null;
  const lastDone = tracker.completed_steps?.at(-1) ?? null;
  // A paused mission stopped in (or just before) its current step: that is where it resumes.
  if (mission.status === "running" || mission.status === PAUSED) return current ?? lastDone;
  if (current?.status === "failed") return current;
  return lastDone ?? current;
}

const WAITING = {
  proposed: "Waiting for approval",
  approved: "Approved — ready to execute",
  queued: "Queued — waiting for a worker",
  running: "Starting…",
  paused: "Paused before it started",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled before it ran",
};

export function stepLine(mission) {
  const step = shownStep(mission);
  return step ? stepText(step) : (WAITING[mission.status] ?? mission.status);
}

// Whole seconds; null when the mission has not started.
export function elapsedSeconds(mission, now) {
  const tracker = trackerOf(mission);
  if (!tracker) return null;
  if (mission.status === "running") {
    const start = toMillis(tracker.start_time);
    if (start != null) return Math.max(0, Math.floor((now - start) / 1000));
  }
  return Math.max(0, Math.floor(Number(tracker.elapsed_seconds) || 0));
}

// The worker's last estimate counted down since it was written; null when there is none to show.
export function etaSeconds(mission, now) {
  const tracker = trackerOf(mission);
  // A paused mission's estimate would count down to nothing while nobody works on it.
  if (!tracker || TERMINAL.has(mission.status) || mission.status === PAUSED) return null;
  const written = toMillis(tracker.updated_at);
  const since = written == null ? 0 : (now - written) / 1000;
  return Math.max(0, Math.round((Number(tracker.estimated_time_remaining) || 0) - since));
}

export function detailText(mission) {
  const detail = trackerOf(mission)?.current_step?.detail;
  return detail ? `${detail.unit} ${detail.done}/${detail.total}` : null;
}

export function attemptText(mission) {
  const attempt = mission.execution_record?.attempt ?? 0;
  return mission.status === "running" && attempt > 1 ? `Attempt ${attempt}` : null;
}

// A running mission whose lease ran out: its worker stopped renewing it.
export function isStalled(mission, now) {
  if (mission.status !== "running") return false;
  const expires = toMillis(mission.lease_expires_at);
  return expires != null && expires < now;
}

export function failureText(mission) {
  if (mission.status !== "failed") return null;
  const error = mission.execution_record?.error;
  if (!error) return "Failed";
  return error.step_name ? `Failed at ${error.step_name}: ${error.message}` : `Failed: ${error.message}`;
}

// What a pause means for the owner, and until when it waits for them.
export function pauseReasonOf(mission) {
  return mission.status === PAUSED ? (mission.pause_reason ?? null) : null;
}

export function pauseText(mission) {
  const reason = pauseReasonOf(mission);
  if (!reason) return null;
  return reason.message || "Paused";
}

// "Waits until <local time>, then fails", or null when the pause never expires.
export function pauseExpiry(mission) {
  const expires = toMillis(pauseReasonOf(mission)?.expires_at);
  if (expires == null) return null;
  const at = new Date(expires);
  return { text: `Waits until ${at.toLocaleString()}, then fails`, datetime: at.toISOString() };
}

// Missions run again after a failure count their runs; the first run says nothing.
export function runText(mission) {
  const run = Number(mission.execution_record?.run) || 1;
  return run > 1 ? `Run ${run}` : null;
}

export const RATING_STARS = 5;

// The owner's rating of a finished mission, once given.
export function ratingText(feedback) {
  return feedback?.rating ? `Rated ${feedback.rating} of ${RATING_STARS}` : null;
}

// Dollars as a person types them (0.0001, not 1e-4), never rounded: a budget field filled
// with a hair less than a mission needs would only pause it again.
export function dollars(amount) {
  const value = Number(amount);
  if (!Number.isFinite(value)) return "";
  const plain = value.toFixed(10).replace(/0+$/, "").replace(/\.$/, "");
  return Number(plain) === value ? plain : String(value);
}

export function toolText(mission) {
  return mission.execution_record?.tool_used || mission.tool || "auto";
}

export function eventText(event) {
  const parts = [`#${event.seq} ${event.type}`];
  if (event.step_name) parts.push(event.step_name);
  if (event.message) parts.push(event.message);
  return parts.join(" · ");
}

export function shorten(text, max = 80) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
