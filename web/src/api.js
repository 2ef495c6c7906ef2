// The HTTP API: every change to a mission goes through it (clients never write Firestore).

export class ApiError extends Error {
  constructor(message, { code = "error", status = 0 } = {}) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export function createApi(baseUrl, currentUser) {
  async function send(method, path, body, forceRefresh) {
    const user = currentUser();
    if (!user) throw new ApiError("Not signed in yet; try again in a moment.");
    const headers = { Authorization: `Bearer ${await user.getIdToken(forceRefresh)}` };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${baseUrl}${path}`, init);
    } catch {
      throw new ApiError(`The API at ${baseUrl} cannot be reached. Check your connection.`);
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = data?.error;
      throw new ApiError(error?.message || `The API answered ${response.status}.`, {
        code: error?.code,
        status: response.status,
      });
    }
    return data;
  }

  async function request(method, path, body) {
    try {
      return await send(method, path, body, false);
    } catch (error) {
      // A cached ID token can expire between refreshes: get a fresh one and try once more.
      if (error.status !== 401) throw error;
      return send(method, path, body, true);
    }
  }

  const mission = (id) => `/missions/${encodeURIComponent(id)}`;
  const schedule = (id) => `/schedules/${encodeURIComponent(id)}`;
  const recipe = (id) => `/recipes/${encodeURIComponent(id)}`;
  return {
    create: (body) => request("POST", "/missions", body),
    approve: (id) => request("POST", `${mission(id)}/approve`),
    execute: (id) => request("POST", `${mission(id)}/execute`),
    cancel: (id) => request("POST", `${mission(id)}/cancel`),
    modify: (id, fields) => request("PATCH", mission(id), fields),
    pause: (id) => request("POST", `${mission(id)}/pause`),
    resume: (id) => request("POST", `${mission(id)}/resume`),
    // Both bodies are optional: a retry may amend the limits, a clone override any field.
    retry: (id, amendments) => request("POST", `${mission(id)}/retry`, amendments),
    clone: (id, overrides) => request("POST", `${mission(id)}/clone`, overrides),
    artifact: (id) => request("GET", `${mission(id)}/artifact`),
    schedules: () => request("GET", "/schedules"),
    createSchedule: (body) => request("POST", "/schedules", body),
    pauseSchedule: (id) => request("POST", `${schedule(id)}/pause`),
    resumeSchedule: (id) => request("POST", `${schedule(id)}/resume`),
    runSchedule: (id) => request("POST", `${schedule(id)}/run`),
    deleteSchedule: (id) => request("DELETE", schedule(id)),
    recipes: () => request("GET", "/recipes"),
    deleteRecipe: (id) => request("DELETE", recipe(id)),
    // A proposed mission made from the recipe's latest version (or `version`) with `params`.
    fromRecipe: (id, params, version) =>
      request("POST", `${recipe(id)}/missions`, version == null ? { params } : { params, version }),
    // The body is optional: a name, a description, the fields that become params.
    saveAsRecipe: (id, body) => request("POST", `${mission(id)}/save-as-recipe`, body),
    // A rating replaces the last one, comment and all.
    rate: (id, rating, comment) =>
      request("POST", `${mission(id)}/feedback`, comment ? { rating, comment } : { rating }),
    toolStats: () => request("GET", "/stats/tools"),
  };
}
