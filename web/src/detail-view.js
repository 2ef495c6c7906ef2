// The selected mission's panel: its event log and its artifact.

import { clearArtifactView, hasContent, renderArtifactView } from "./artifact-view.js";
import { eventText } from "./format.js";

export const EVENTS_SHOWN = 50;

// Adds, updates and removes list items one by one: the log is an aria-live region, and
// rebuilding it would make screen readers read every event again on each snapshot.
export function renderEventLog(list, events) {
  const seqs = [...events.keys()].sort((a, b) => a - b).slice(-EVENTS_SHOWN);
  const wanted = new Set(seqs);
  const existing = new Map();
  for (const item of [...list.children]) {
    const seq = Number(item.dataset.seq);
    if (wanted.has(seq)) existing.set(seq, item);
    else item.remove();
  }
  // Keep the newest in view, unless the reader has scrolled up to look at older events.
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  seqs.forEach((seq, index) => {
    const event = events.get(seq);
    let item = existing.get(seq);
    if (!item) {
      item = document.createElement("li");
      item.dataset.seq = String(seq);
      item.className = `event event-${event.type}`;
    }
    const text = eventText(event);
    if (item.textContent !== text) item.textContent = text;
    const time = Date.parse(event.timestamp);
    if (!Number.isNaN(time)) item.title = new Date(time).toLocaleString();
    const at = list.children[index];
    if (at !== item) list.insertBefore(item, at ?? null);
  });
  if (atBottom) list.scrollTop = list.scrollHeight;
}

const artifactShown = new WeakMap(); // box → the artifact its body shows

// Title, meta and summary at once; the preview until the content is rendered by its format
// (and for good if that fails). Called on every snapshot: the content is rendered once.
export function renderArtifact(box, artifact) {
  box.hidden = !artifact;
  const body = box.querySelector(".artifact-body");
  const preview = box.querySelector(".preview");
  if (!artifact) {
    if (artifactShown.has(box)) clearArtifactView(body);
    artifactShown.delete(box);
    return;
  }
  box.querySelector(".title").textContent = artifact.title;
  box.querySelector(".artifact-meta").textContent = [artifact.type, artifact.tool]
    .filter(Boolean)
    .join(" · ");
  box.querySelector(".summary").textContent = artifact.summary;
  if (artifactShown.get(box) === artifact) return;
  artifactShown.set(box, artifact);
  preview.textContent = artifact.preview;
  preview.hidden = false;
  body.hidden = true;
  clearArtifactView(body);
  if (!hasContent(artifact)) return;
  const onShown = () => {
    body.hidden = false;
    preview.hidden = true;
  };
  renderArtifactView(body, artifact, { onShown }).catch((error) => {
    console.error("The artifact could not be rendered", error);
    if (artifactShown.get(box) !== artifact) return;
    clearArtifactView(body);
    body.hidden = true;
    preview.hidden = false;
  });
}
