// The Recipes panel: the built-in recipes and the owner's, each with how often it made a mission
// and how those missions ended. Choosing one opens a form made from its params; running it makes
// a mission from the recipe, approves and executes it, and the mission then shows live like any
// other. A mission card's "Save as recipe…" adds to the gallery (its form is here too), and its
// "Run again…" on a mission made from a recipe opens this form with the params it ran with.

import { actionButton, el, InputError } from "./missions-view.js";
import { oneAtATime } from "./refresh.js";

// The control a param is typed into, by the param's type.
const CONTROLS = {
  string: { type: "text" },
  integer: { type: "number", step: "1", inputmode: "numeric" },
  number: { type: "number", step: "any", inputmode: "decimal" },
  url: { type: "url", inputmode: "url" },
};
const NUMERIC = new Set(["integer", "number"]);
// How long "Saved as recipe …" stays in a mission card.
const SAVED_NOTE_MS = 10000;

// The param a refusal names at the start of its message ("params.count: Input should be…").
export function refusedParam(message) {
  return /^params\.([a-z_][a-z0-9_]*)/.exec(message ?? "")?.[1] ?? null;
}

// A template as the API fills it in: {name} by the param's value, {name.host} by a URL's host.
// Placeholders without a value yet stay as they are.
export function fillTemplate(template, values) {
  return String(template).replace(/\{([a-z_][a-z0-9_]*)(\.host)?\}/g, (whole, name, host) => {
    if (values[name] == null || values[name] === "") return whole;
    if (!host) return String(values[name]);
    try {
      return new URL(String(values[name])).hostname || whole;
    } catch {
      return whole;
    }
  });
}

// What the form sends for a param: nothing for an empty field (the API fills in its default, or
// says it is required), a number for a numeric one. Whether a number is whole is the API's to say.
function paramValue(param, control) {
  if (NUMERIC.has(param.type) && control.validity.badInput) {
    throw new InputError(`${param.name} must be a number.`, param.name);
  }
  if (control.value.trim() === "") return undefined;
  return NUMERIC.has(param.type) ? control.valueAsNumber : control.value;
}

function paramField(param, value) {
  const id = `recipe-param-${param.name}`;
  const wrapper = el("div", "field");
  const label = el("label", null, param.name);
  label.htmlFor = id;
  if (param.required) label.append(" ", el("span", "required-mark", "(required)"));
  const control = el("input");
  const { type, ...attributes } = CONTROLS[param.type] ?? CONTROLS.string;
  control.type = type;
  for (const [name, attribute] of Object.entries(attributes)) control.setAttribute(name, attribute);
  control.id = id;
  control.name = param.name;
  control.required = Boolean(param.required);
  control.autocomplete = "off";
  control.spellcheck = false;
  if (value != null) control.value = String(value);
  wrapper.append(label, control);
  const described = ["recipe-error"];
  if (param.description) {
    const hint = el("p", "hint", param.description);
    hint.id = `${id}-hint`;
    described.unshift(hint.id);
    wrapper.append(hint);
  }
  control.setAttribute("aria-describedby", described.join(" "));
  return wrapper;
}

function createRecipeCard(recipe) {
  const id = recipe.recipe_id;
  const card = el("article", "recipe");
  card.dataset.recipeId = id;
  const heading = el("h3", "name");
  heading.id = `recipe-${id}-name`;
  card.setAttribute("aria-labelledby", heading.id);
  const head = el("div", "recipe-head");
  head.append(heading);
  if (recipe.builtin) head.append(el("span", "badge builtin", "built-in"));
  const counts = el("p", "recipe-counts");
  counts.append(el("span", "uses"), el("span", "completed"), el("span", "failed"));
  const actions = el("div", "actions");
  const buttons = [["use", "Use"], ...(recipe.builtin ? [] : [["delete", "Delete"]])];
  for (const [action, label] of buttons) {
    actions.append(actionButton(action, label, heading.id));
  }
  const error = el("p", "error");
  error.setAttribute("role", "alert");
  card.append(head, el("p", "description"), el("p", "recipe-params"), counts, actions, error);
  return card;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function paramsText(recipe) {
  if (!recipe.params.length) return "No params";
  const names = recipe.params.map((p) => (p.required ? p.name : `${p.name} (optional)`));
  return `Params: ${names.join(", ")}`;
}

function updateRecipeCard(card, recipe, error) {
  setText(card.querySelector(".name"), recipe.name);
  const description = card.querySelector(".description");
  setText(description, recipe.description);
  description.hidden = !recipe.description;
  setText(card.querySelector(".recipe-params"), paramsText(recipe));
  setText(card.querySelector(".uses"), `Uses ${recipe.uses}`);
  setText(card.querySelector(".completed"), `Completed ${recipe.completed}`);
  setText(card.querySelector(".failed"), `Failed ${recipe.failed}`);
  setText(card.querySelector(".error"), error ?? "");
}

export function createRecipesPanel({ root, api, onStarted }) {
  const list = root.querySelector("#recipe-list");
  const empty = root.querySelector("#recipes-empty");
  const form = root.querySelector("#recipe-form");
  const fields = form.querySelector("#recipe-fields");
  const preview = form.querySelector("#recipe-objective");
  const formError = form.querySelector("#recipe-error");
  const formStatus = form.querySelector("#recipe-status");
  const errors = new Map(); // recipe id → its card's last error
  let recipes = [];
  let chosen = null; // the recipe the open form runs

  const refresh = oneAtATime(async (stale) => {
    try {
      const answer = await api.recipes();
      if (stale()) return;
      ({ recipes } = answer);
    } catch (error) {
      if (stale()) return;
      empty.hidden = false;
      empty.textContent = `Recipes could not be loaded: ${error.message}`;
      return;
    }
    render();
  });

  // Cards are kept and updated in place, so a focused button keeps its focus across refreshes.
  function render() {
    empty.hidden = recipes.length > 0;
    empty.textContent = "No recipes.";
    const existing = new Map([...list.children].map((card) => [card.dataset.recipeId, card]));
    recipes.forEach((recipe, index) => {
      let card = existing.get(recipe.recipe_id);
      existing.delete(recipe.recipe_id);
      if (!card) card = createRecipeCard(recipe);
      updateRecipeCard(card, recipe, errors.get(recipe.recipe_id));
      const at = list.children[index];
      if (at !== card) list.insertBefore(card, at ?? null);
    });
    for (const card of existing.values()) card.remove();
    if (chosen) {
      const current = recipes.find((r) => r.recipe_id === chosen.recipe_id);
      if (current) chosen = current;
      else closeForm();
    }
  }

  // Opens the form for a recipe, its fields filled with `values` or else the params' defaults.
  function open(recipe, values = {}) {
    chosen = recipe;
    form.hidden = false;
    form.querySelector("#recipe-form-heading").textContent = `Run recipe: ${recipe.name}`;
    const about = form.querySelector("#recipe-form-about");
    about.textContent = recipe.description;
    about.hidden = !recipe.description;
    fields.replaceChildren(
      ...recipe.params.map((param) => paramField(param, values[param.name] ?? param.default)),
    );
    formError.textContent = "";
    formStatus.textContent = "";
    showPreview();
    form.scrollIntoView({ block: "nearest" });
    const first = form.querySelector("#recipe-fields input, button[type=submit]");
    first.focus();
  }

  function closeForm() {
    const was = chosen;
    chosen = null;
    form.hidden = true;
    fields.replaceChildren();
    return was;
  }

  function typedValues() {
    const values = {};
    for (const param of chosen?.params ?? []) {
      const control = form.elements.namedItem(param.name);
      values[param.name] = control?.value || param.default;
    }
    return values;
  }

  function showPreview() {
    if (!chosen) return;
    const values = typedValues();
    const budget = chosen.budget_usd;
    const parts = [fillTemplate(chosen.objective, values)];
    if (chosen.tool) parts.push(`tool ${chosen.tool}`);
    parts.push(`budget $${typeof budget === "number" ? budget : fillTemplate(budget, values)}`);
    preview.textContent = parts.join(" · ");
  }

  function readParams() {
    const params = {};
    for (const param of chosen.params) {
      const value = paramValue(param, form.elements.namedItem(param.name));
      if (value !== undefined) params[param.name] = value;
    }
    return params;
  }

  function showFormError(message, paramName) {
    formError.textContent = message;
    for (const control of fields.querySelectorAll("[aria-invalid]")) {
      control.removeAttribute("aria-invalid");
    }
    const control = paramName && form.elements.namedItem(paramName);
    if (control && "focus" in control) {
      control.setAttribute("aria-invalid", "true");
      control.focus();
    }
  }

  form.addEventListener("input", (event) => {
    event.target.removeAttribute?.("aria-invalid");
    showPreview();
  });

  // The browser's own checks are off (novalidate): the API says what is wrong with a param, in
  // the same words as for any other client.
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!chosen) return;
    const recipe = chosen;
    let params;
    try {
      params = readParams();
    } catch (error) {
      if (!(error instanceof InputError)) throw error;
      showFormError(error.message, error.field);
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    showFormError("");
    formStatus.textContent = "";
    try {
      await start(recipe, params);
    } finally {
      submit.disabled = false;
    }
  });

  async function start(recipe, params) {
    let mission;
    try {
      mission = await api.fromRecipe(recipe.recipe_id, params);
    } catch (error) {
      showFormError(error.message, error.status === 422 ? refusedParam(error.message) : null);
      return;
    }
    refresh(); // its uses went up
    try {
      await api.approve(mission.mission_id);
      await api.execute(mission.mission_id);
      formStatus.textContent = `Started: ${mission.objective}`;
    } catch (error) {
      showFormError(`The mission was made but did not start: ${error.message}`);
    }
    onStarted(mission);
  }

  form.querySelector(".recipe-close").addEventListener("click", () => {
    const was = closeForm();
    if (!was) return;
    const card = `article[data-recipe-id="${CSS.escape(was.recipe_id)}"]`;
    list.querySelector(`${card} button.use`)?.focus();
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") form.querySelector(".recipe-close").click();
  });

  list.addEventListener("click", async (event) => {
    const button = event.target.closest("article.recipe button[data-action]");
    if (!button || button.disabled) return;
    const id = button.closest("article.recipe").dataset.recipeId;
    const recipe = recipes.find((r) => r.recipe_id === id);
    if (!recipe) return;
    if (button.dataset.action === "use") {
      open(recipe);
      return;
    }
    button.disabled = true;
    errors.delete(id);
    try {
      await api.deleteRecipe(id);
    } catch (error) {
      errors.set(id, error.message);
    }
    button.disabled = false;
    await refresh();
  });

  // "Run again…" of a mission made from a recipe: false when that recipe is not in the gallery.
  function openFor(ref) {
    const recipe = recipes.find((r) => r.recipe_id === ref?.recipe_id);
    if (!recipe) return false;
    open(recipe, ref.params ?? {});
    return true;
  }

  const nameOf = (id) => recipes.find((r) => r.recipe_id === id)?.name ?? null;

  function clear() {
    refresh.forget();
    closeForm();
    recipes = [];
    errors.clear();
    list.replaceChildren();
  }

  return { refresh, openFor, nameOf, clear };
}

// ---- "Save as recipe…" on a mission card --------------------------------------------------

export function openSaveForm(card, mission) {
  closeSaveForm(card);
  card.querySelector(".saved-note")?.remove();
  const idBase = `${card.dataset.idBase}-recipe`;
  const form = el("form", "save-recipe-form");
  form.id = idBase;
  form.setAttribute("aria-label", `Save as recipe: ${mission.objective.slice(0, 60)}`);
  const wrapper = el("div", "field");
  const label = el("label", null, "Recipe name");
  const name = el("input");
  name.type = "text";
  name.id = `${idBase}-name`;
  name.name = "name";
  name.maxLength = 200;
  name.value = mission.objective.slice(0, 200);
  label.htmlFor = name.id;
  const hint = el(
    "p",
    "hint",
    "Its tool inputs become the recipe's params (its objective, when it has none), " +
      "with this mission's values as their defaults.",
  );
  hint.id = `${idBase}-hint`;
  const error = el("p", "error save-recipe-error");
  error.id = `${idBase}-error`;
  error.setAttribute("role", "alert");
  name.setAttribute("aria-describedby", `${hint.id} ${error.id}`);
  wrapper.append(label, name, hint);
  const buttons = el("div", "form-actions");
  const discard = el("button", "save-recipe-cancel", "Discard");
  discard.type = "button";
  const save = el("button", "primary", "Save recipe");
  save.type = "submit";
  buttons.append(discard, save);
  form.append(wrapper, error, buttons);

  card.insertBefore(form, card.querySelector(".actions"));
  const toggle = card.querySelector("button.save-recipe");
  toggle.setAttribute("aria-expanded", "true");
  toggle.setAttribute("aria-controls", form.id);
  name.focus();
  name.select();
  return form;
}

export function closeSaveForm(card) {
  card.querySelector(".save-recipe-form")?.remove();
  const toggle = card.querySelector("button.save-recipe");
  toggle?.setAttribute("aria-expanded", "false");
  toggle?.removeAttribute("aria-controls");
}

// The body the API takes: a name only when one was given.
export function readSaveForm(form) {
  const name = form.elements.namedItem("name").value.trim();
  return name ? { name } : {};
}

export function showSaved(card, recipe) {
  closeSaveForm(card);
  const note = el("p", "saved-note");
  note.setAttribute("role", "status");
  card.insertBefore(note, card.querySelector(".actions"));
  // Filled in once in the page, so that screen readers announce it.
  requestAnimationFrame(() => (note.textContent = `Saved as recipe “${recipe.name}”.`));
  setTimeout(() => note.remove(), SAVED_NOTE_MS);
}
