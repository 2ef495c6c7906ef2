"""BuddyClient: the Python client of the Buddy Missions API, for scripts, notebooks and the CLI.

    from buddy.client import BuddyClient

    client = BuddyClient.from_env()
    mission = client.create("calculate 2*(3+4)")
    client.approve(mission["mission_id"])
    client.execute(mission["mission_id"])
    for snapshot in client.watch(mission["mission_id"]):
        print(snapshot["progress_percent"], snapshot["status"])

`from_env` acts as the user of BUDDY_ID_TOKEN if set, else as the account `buddy login` stored
for the project, its ID token refreshed as it expires, else locally (a demo- project) as the
local user the dashboard uses too (see buddy.accounts).

Lifecycle calls go through the HTTP API; `watch` listens to the mission's Firestore document
(a realtime listener, no polling; see buddy.adapters.firestore_listener). Every failure is a
`BuddyError`, its message meant for a person.

Steering: `modify` (PATCH), `pause`, `resume`, `retry` and `clone`. A mission created with
`on_limit="ask"` pauses at a limit its owner can lift instead of failing; its snapshot then
says why (`pause_reason`), and `watch` stops there (see `watch`):

    client.modify(mission_id, budget_usd=snapshot["pause_reason"]["needed_usd"])
    client.resume(mission_id)

Recipes are missions with parameters: the built-ins and your own. `mission_from_recipe`
proposes a mission from one (approve and execute it as any other); `save_as_recipe` turns a
mission into one; `rate` gives a finished mission 1 to 5 stars, which tool selection learns
from (`tool_stats` shows what it learned):

    mission = client.mission_from_recipe("builtin-calculate", {"expression": "6*7"})
    ...  # approve, execute and watch it as above
    client.rate(mission["mission_id"], 5, "spot on")
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx

from buddy.config import PROJECT_ID, LocalPorts
from buddy.domain.mission import TERMINAL as TERMINAL_STATUSES
from buddy.domain.mission import Status, iso

_LOCAL = LocalPorts.from_env()
DEFAULT_API_URL = _LOCAL.url("api")
DEFAULT_PROJECT_ID = PROJECT_ID
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
# Not terminal, but nothing happens until its owner acts: where a watch stops by default.
PAUSED = Status.PAUSED.value
# execute waits for Pub/Sub up to BUDDY_PUBLISH_TIMEOUT_SECONDS (10 s) before its 503.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# How often a waiting watch wakes up to check its listener and its deadline.
_WAKE_SECONDS = 0.5
RELISTENS = 3  # listeners a watch starts again in a row, each ended before it heard anything

Mission = dict[str, Any]
Snapshot = dict[str, Any]
Missions = list[Mission]
Events = list[dict[str, Any]]
Schedule = dict[str, Any]
Schedules = list[Schedule]
Recipe = dict[str, Any]
Recipes = list[Recipe]
ToolStats = list[dict[str, Any]]
OnLimit = Literal["fail", "ask"]


class BuddyError(Exception):
    """Anything that went wrong talking to Buddy Missions; `str(e)` is meant for a person."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class ApiUnreachable(BuddyError):
    """Connection refused, reset or timed out."""


class NotAuthenticated(BuddyError):
    """401: no token, or the API refused it."""


class MissionNotFound(BuddyError):
    """404: no such mission, schedule or recipe (or someone else's), or no artifact yet."""


class Conflict(BuddyError):
    """409: the mission's state does not allow this action."""


class InvalidRequest(BuddyError):
    """400, 413, 415, 422: the request itself is wrong."""


class RateLimited(BuddyError):
    """429: too many of your missions are queued or running."""


class ServiceUnavailable(BuddyError):
    """503 (Firestore, Pub/Sub or Google's keys unreachable), or a lost live listener."""


class WatchTimeout(BuddyError):
    """`watch` gave up waiting for the mission to end."""


def unreachable_message(url: str) -> str:
    return f"cannot reach the API at {url} — start it with scripts/run.sh"


def error_for(status: int, code: str, message: str, mission_id: str | None = None) -> BuddyError:
    """The exception for an API error answer, its message phrased for a person."""
    if status == 401:
        return NotAuthenticated(f"not signed in: {message}", status, code)
    if status == 404:
        return MissionNotFound(message, status, code)
    if status == 409:
        subject = f"Mission {mission_id}" if mission_id else "The mission"
        return Conflict(f"{subject} can't do that now: {message}", status, code)
    if status in (400, 413, 415, 422):
        return InvalidRequest(f"invalid request: {message}", status, code)
    if status == 429:
        return RateLimited(f"over a limit: {message}", status, code)
    if status == 503:
        return ServiceUnavailable(
            f"the service is unavailable, nothing was changed; try again shortly: {message}",
            status,
            code,
        )
    return BuddyError(f"the API answered {status}: {message}", status, code)


def _error_of(response: httpx.Response, mission_id: str | None) -> BuddyError:
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        # Not our API's error shape (a proxy, a crash page): say what came back, briefly.
        code, message = "unknown", response.text.strip()[:200] or response.reason_phrase
    return error_for(response.status_code, code, message, mission_id)


def _fields(
    objective: str | None = None,
    allowed_domains: Sequence[str] | None = None,
    budget_usd: float | None = None,
    tool: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    on_limit: OnLimit | None = None,
) -> dict[str, Any]:
    """The create fields given (not None), as the API's body spells them."""
    body: dict[str, Any] = {}
    if objective is not None:
        body["objective"] = objective
    if allowed_domains is not None:
        body["scope"] = {"allowed_domains": list(allowed_domains)}
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    if tool is not None:
        body["tool"] = tool
    if inputs is not None:
        body["inputs"] = dict(inputs)
    if on_limit is not None:
        body["on_limit"] = on_limit
    return body


def _recipe_body(
    name: str,
    objective: str,
    description: str,
    params: Sequence[Mapping[str, Any]],
    allowed_domains: Sequence[str],
    budget_usd: float | str,
    tool: str | None,
    inputs: Mapping[str, Any] | None,
    on_limit: OnLimit,
) -> dict[str, Any]:
    """A whole recipe as POST and PUT /recipes take it (a PUT replaces every field)."""
    body: dict[str, Any] = {"name": name, "description": description, "objective": objective}
    body["params"] = [dict(param) for param in params]
    body.update(_fields(None, allowed_domains, None, tool, inputs, on_limit))
    body["budget_usd"] = budget_usd  # a number, or "{param}" naming a number param
    return body


class Subscription(Protocol):
    is_active: bool

    def unsubscribe(self) -> None: ...


class MissionListener(Protocol):
    def listen(
        self, mission_id: str, on_change: Callable[[Mapping[str, Any] | None], None]
    ) -> Subscription:
        """Calls on_change with the mission document (None once gone) on every change."""


def tracker_of(mission: Mapping[str, Any]) -> Mapping[str, Any]:
    """A mission's progress tracker (empty before it ran), from the API or a listener."""
    return (mission.get("execution_record") or {}).get("progress_tracker") or {}


def percent_of(mission: Mapping[str, Any]) -> int:
    return int(tracker_of(mission).get("progress_percent") or 0)


def _plain(value: Any) -> Any:
    """Firestore timestamps (datetimes) as the API's ISO strings; the rest as it is."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return iso(value) if isinstance(value, datetime) else value


def snapshot_of(doc: Mapping[str, Any]) -> Snapshot:
    """A mission document as a progress snapshot (plain JSON values only)."""
    record = doc.get("execution_record") or {}
    tracker = tracker_of(doc)
    status = str(doc["status"])
    return {
        "mission_id": doc["mission_id"],
        "status": status,
        "progress_percent": percent_of(doc),
        "current_step": tracker.get("current_step"),
        "completed_steps": list(tracker.get("completed_steps") or []),
        "elapsed_seconds": float(tracker.get("elapsed_seconds") or 0.0),
        "estimated_time_remaining": (
            0.0 if status in TERMINAL else float(tracker.get("estimated_time_remaining") or 0.0)
        ),
        "run": int(record.get("run") or 1),
        "attempt": record.get("attempt"),
        "error": record.get("error"),
        "result_summary": record.get("result_summary"),
        "artifact_reference": record.get("artifact_reference"),
        "cancel_requested": bool(doc.get("cancel_requested")),
        "pause_requested": bool(doc.get("pause_requested")),
        # {code: requested | budget_exceeded | out_of_scope, message, step_name, expires_at,
        #  needed_usd, host} while paused, else None.
        "pause_reason": _plain(doc["pause_reason"]) if doc.get("pause_reason") else None,
        # Bumped in the same write as every event appended, so a reader knows when to re-read.
        "event_seq": int(doc.get("event_seq") or 0),
    }


class TokenSource(Protocol):
    """Where a client gets its ID tokens when none is given (buddy.accounts.Session)."""

    def token(self) -> str: ...

    def renew(self) -> str:
        """A new token, after the API refused the last one."""


class BuddyClient:
    """Typed calls to the Buddy Missions API, and a live `watch` over Firestore."""

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        token: str | None = None,
        project_id: str = DEFAULT_PROJECT_ID,
        listener: MissionListener | None = None,
        *,
        auth: TokenSource | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.project_id = project_id
        self._token = token
        self._auth = auth
        self._listener = listener
        self._http = http or httpx.Client(timeout=TIMEOUT)
        # Set for local use: the listener reads the Firestore emulator (as its admin).
        self.firestore_emulator: str | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] = os.environ,
        api_url: str | None = None,
        project: str | None = None,
    ) -> BuddyClient:
        """A client for the project (`project`, else the environment's, else the one signed in
        to last, else demo-buddy; see buddy.accounts), acting as BUDDY_ID_TOKEN's user if set,
        else as the account `buddy login` stored for it, else locally as the local user."""
        from buddy import accounts  # it builds on this module's errors

        credentials = accounts.Credentials(accounts.credentials_path(env))
        target = accounts.target_project(credentials, env, project)
        stored = credentials.account(target)
        url = accounts.api_url(target, stored, env, api_url)
        token = env.get("BUDDY_ID_TOKEN") or None
        session = None if token else accounts.Session(target, credentials, env)
        client = cls(url, token, target, auth=session)
        client.firestore_emulator = accounts.firestore_emulator(target, stored, env)
        return client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BuddyClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # The API

    def create(
        self,
        objective: str,
        allowed_domains: Sequence[str] = (),
        budget_usd: float = 1.0,
        tool: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        on_limit: OnLimit = "fail",
    ) -> Mission:
        """Proposes a mission. `on_limit="ask"`: at a limit you can lift (the budget, the
        allowed domains) it pauses and asks instead of failing."""
        body: dict[str, Any] = {
            "objective": objective,
            "scope": {"allowed_domains": list(allowed_domains)},
            "budget_usd": budget_usd,
            "on_limit": on_limit,
        }
        if tool is not None:
            body["tool"] = tool
        if inputs:
            body["inputs"] = dict(inputs)
        return dict(self._call("POST", "/missions", json=body))

    def approve(self, mission_id: str) -> Mission:
        return dict(self._call("POST", f"/missions/{mission_id}/approve", mission_id))

    def execute(self, mission_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/missions/{mission_id}/execute", mission_id))

    def cancel(self, mission_id: str) -> Mission:
        return dict(self._call("POST", f"/missions/{mission_id}/cancel", mission_id))

    def modify(
        self,
        mission_id: str,
        *,
        objective: str | None = None,
        allowed_domains: Sequence[str] | None = None,
        budget_usd: float | None = None,
        tool: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        on_limit: OnLimit | None = None,
    ) -> Mission:
        """Edits a mission; only the fields given (not None) are sent. Proposed or approved:
        any of them (an approved one goes back to proposed). Paused or failed: only
        `budget_usd` (never below what it spent) and `allowed_domains`, which replaces the
        list. Otherwise Conflict."""
        body = _fields(objective, allowed_domains, budget_usd, tool, inputs, on_limit)
        return dict(self._call("PATCH", f"/missions/{mission_id}", mission_id, json=body))

    def pause(self, mission_id: str) -> Mission:
        """Queued: paused at once. Running: `pause_requested`, paused at the next step
        boundary (a long tool between its pages)."""
        return dict(self._call("POST", f"/missions/{mission_id}/pause", mission_id))

    def resume(self, mission_id: str) -> dict[str, Any]:
        """paused → queued: it carries on where it stopped. Answers {mission_id, status}."""
        return dict(self._call("POST", f"/missions/{mission_id}/resume", mission_id))

    def retry(
        self,
        mission_id: str,
        budget_usd: float | None = None,
        allowed_domains: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """failed → queued for its next run, from the failed step; the budget and the allowed
        domains may be changed on the way. Answers {mission_id, status}."""
        body = _fields(budget_usd=budget_usd, allowed_domains=allowed_domains)
        path = f"/missions/{mission_id}/retry"
        return dict(self._call("POST", path, mission_id, **({"json": body} if body else {})))

    def clone(
        self,
        mission_id: str,
        *,
        objective: str | None = None,
        allowed_domains: Sequence[str] | None = None,
        budget_usd: float | None = None,
        tool: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        on_limit: OnLimit | None = None,
    ) -> Mission:
        """A new proposed mission with this one's fields, those given (not None) overridden;
        its `cloned_from` names this one."""
        body = _fields(objective, allowed_domains, budget_usd, tool, inputs, on_limit)
        path = f"/missions/{mission_id}/clone"
        return dict(self._call("POST", path, mission_id, **({"json": body} if body else {})))

    def get(self, mission_id: str) -> Mission:
        return dict(self._call("GET", f"/missions/{mission_id}", mission_id))

    def list(
        self, status: str | None = None, limit: int = 20, schedule_id: str | None = None
    ) -> Missions:
        """Your missions, newest first: in a status, or made by a schedule, if given."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if schedule_id:
            params["schedule_id"] = schedule_id
        return list(self._call("GET", "/missions", params=params)["missions"])

    # ---- schedules ---------------------------------------------------------------------------

    def create_schedule(
        self,
        name: str,
        cron: str,
        mission: Mapping[str, Any],
        *,
        timezone: str = "UTC",
        overlap: str | None = None,
        catchup_window_seconds: int | None = None,
        pause_after_failures: int | None = None,
    ) -> Schedule:
        """A recurring mission: `mission` is a create body (objective, scope, budget_usd,
        tool, inputs, on_limit), run approved at every fire of `cron` (five fields, read in
        `timezone`). The answer lists its next five fires (`upcoming`)."""
        body: dict[str, Any] = {"name": name, "cron": cron, "timezone": timezone}
        body["mission"] = dict(mission)
        optional = {
            "overlap": overlap,
            "catchup_window_seconds": catchup_window_seconds,
            "pause_after_failures": pause_after_failures,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return dict(self._call("POST", "/schedules", json=body))

    def schedules(self) -> Schedules:
        return list(self._call("GET", "/schedules")["schedules"])

    def schedule(self, schedule_id: str) -> Schedule:
        return dict(self._call("GET", f"/schedules/{schedule_id}"))

    def modify_schedule(self, schedule_id: str, **fields: Any) -> Schedule:
        """Changes the fields given (name, cron, timezone, mission, overlap,
        catchup_window_seconds, pause_after_failures); the next fire is recomputed."""
        return dict(self._call("PATCH", f"/schedules/{schedule_id}", json=fields))

    def pause_schedule(self, schedule_id: str) -> Schedule:
        return dict(self._call("POST", f"/schedules/{schedule_id}/pause"))

    def resume_schedule(self, schedule_id: str) -> Schedule:
        """Fires again from the next cron time; fires missed while paused are not made up."""
        return dict(self._call("POST", f"/schedules/{schedule_id}/resume"))

    def run_schedule(self, schedule_id: str) -> dict[str, Any]:
        """Fires now, outside the cron: answers {mission_id, status: "queued"}."""
        return dict(self._call("POST", f"/schedules/{schedule_id}/run"))

    def delete_schedule(self, schedule_id: str) -> None:
        """Deletes the schedule; the missions it made stay."""
        self._call("DELETE", f"/schedules/{schedule_id}")

    def progress(self, mission_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/missions/{mission_id}/progress", mission_id))

    def events(self, mission_id: str, after_seq: int = 0) -> Events:
        params = {"after_seq": after_seq}
        answer = self._call("GET", f"/missions/{mission_id}/events", mission_id, params=params)
        return list(answer["events"])

    def artifact(self, mission_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/missions/{mission_id}/artifact", mission_id))

    # ---- recipes, ratings and what tool selection learned from them ---------------------------

    def recipes(self) -> Recipes:
        """The built-in recipes first, then yours, newest first."""
        return list(self._call("GET", "/recipes")["recipes"])

    def recipe(self, recipe_id: str, version: int | None = None) -> Recipe:
        """A recipe at its latest version, or at `version`."""
        params = {} if version is None else {"version": version}
        return dict(self._call("GET", f"/recipes/{recipe_id}", params=params))

    def create_recipe(
        self,
        name: str,
        objective: str,
        *,
        description: str = "",
        params: Sequence[Mapping[str, Any]] = (),
        allowed_domains: Sequence[str] = (),
        budget_usd: float | str = 1.0,
        tool: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        on_limit: OnLimit = "fail",
    ) -> Recipe:
        """A recipe at version 1. `objective`, `allowed_domains` and the strings of `inputs`
        are templates: `{param}` is a param's value, `{param.host}` the host of a url param;
        an input that is exactly "{param}" gets the param's typed value. `params` are
        `{name, type: string | integer | number | url, default?, description?}`: one with a
        default is optional."""
        body = _recipe_body(
            name,
            objective,
            description,
            params,
            allowed_domains,
            budget_usd,
            tool,
            inputs,
            on_limit,
        )
        return dict(self._call("POST", "/recipes", json=body))

    def update_recipe(
        self,
        recipe_id: str,
        name: str,
        objective: str,
        *,
        description: str = "",
        params: Sequence[Mapping[str, Any]] = (),
        allowed_domains: Sequence[str] = (),
        budget_usd: float | str = 1.0,
        tool: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        on_limit: OnLimit = "fail",
    ) -> Recipe:
        """A new version of your recipe with these fields (all of them: as create_recipe);
        missions made from the earlier versions keep theirs."""
        body = _recipe_body(
            name,
            objective,
            description,
            params,
            allowed_domains,
            budget_usd,
            tool,
            inputs,
            on_limit,
        )
        return dict(self._call("PUT", f"/recipes/{recipe_id}", json=body))

    def delete_recipe(self, recipe_id: str) -> None:
        """Deletes your recipe; the missions made from it stay."""
        self._call("DELETE", f"/recipes/{recipe_id}")

    def mission_from_recipe(
        self, recipe_id: str, params: Mapping[str, Any], version: int | None = None
    ) -> Mission:
        """Proposes the recipe's mission with these params (its latest version, or
        `version`); the mission's `recipe` says which, with the params as resolved."""
        body: dict[str, Any] = {"params": dict(params)}
        if version is not None:
            body["version"] = version
        return dict(self._call("POST", f"/recipes/{recipe_id}/missions", json=body))

    def save_as_recipe(
        self,
        mission_id: str,
        name: str | None = None,
        description: str | None = None,
        params: Sequence[str] | None = None,
    ) -> Recipe:
        """A new recipe from this mission. `params` names the fields that become params
        ("inputs.url", "objective", "budget_usd"), each defaulting to the mission's value;
        by default its inputs, or its objective when it has none."""
        given = {"name": name, "description": description}
        body: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
        if params is not None:
            body["params"] = list(params)
        path = f"/missions/{mission_id}/save-as-recipe"
        return dict(self._call("POST", path, mission_id, **({"json": body} if body else {})))

    def rate(self, mission_id: str, rating: int, comment: str | None = None) -> Mission:
        """Rates a finished (completed, failed or cancelled) mission 1 to 5; rating it again
        replaces the rating. Answers the mission, its `feedback` set."""
        body: dict[str, Any] = {"rating": rating}
        if comment is not None:
            body["comment"] = comment
        return dict(self._call("POST", f"/missions/{mission_id}/feedback", mission_id, json=body))

    def tool_stats(self) -> ToolStats:
        """Every tool by name: its missions' outcomes and ratings, yours (`mine`) and
        everyone's, and what its ratings add to tool selection's confidence per intent."""
        return list(self._call("GET", "/stats/tools")["tools"])

    # Live progress

    def watch(
        self, mission_id: str, timeout: float | None = None, until_paused: bool = True
    ) -> Generator[Snapshot, None, None]:
        """Yields a snapshot per change of the mission document, until a terminal one.

        A paused mission is not terminal, but nothing happens to it until someone acts (edits
        and resumes it, or cancels it): by default the watch stops at a paused snapshot too,
        whose `pause_reason` says why. With `until_paused=False` it waits through pauses.
        The listener subscribes at the first `next()`; the first snapshot is the state then.
        A listener whose stream ends is replaced, RELISTENS times in a row at most. Raises
        WatchTimeout after `timeout` seconds, ServiceUnavailable if the listeners keep dying.
        """
        # The API says 404 for unknown or foreign missions (the emulator's Firestore client is
        # an admin and would not).
        self.get(mission_id)
        updates: queue.Queue[Snapshot | None] = queue.Queue()

        def on_change(data: Mapping[str, Any] | None) -> None:
            # Runs on the listener's thread: hand the snapshot over to the generator.
            updates.put(snapshot_of(data) if data else None)

        listener = self._listen().listen(mission_id, on_change)
        deadline = None if timeout is None else time.monotonic() + timeout
        relistens = 0  # in a row, with nothing heard in between
        try:
            while True:
                try:
                    snapshot = updates.get(timeout=_WAKE_SECONDS)
                except queue.Empty:
                    if not listener.is_active:
                        # Its stream ended without recovery (the emulator has sent what the
                        # client could not parse): a new listener starts with the document
                        # as it is now.
                        if relistens == RELISTENS:
                            raise ServiceUnavailable(
                                f"lost the live connection to Firestore while watching {mission_id}"
                            ) from None
                        relistens += 1
                        listener.unsubscribe()
                        listener = self._listen().listen(mission_id, on_change)
                        continue
                    if deadline is not None and time.monotonic() > deadline:
                        raise WatchTimeout(
                            f"Mission {mission_id} did not finish within {timeout:g}s"
                        ) from None
                    continue
                if snapshot is None:
                    raise MissionNotFound(f"Mission {mission_id} not found")
                relistens = 0
                yield snapshot
                if snapshot["status"] in TERMINAL or (
                    until_paused and snapshot["status"] == PAUSED
                ):
                    return
        finally:
            listener.unsubscribe()

    def follow_events(
        self,
        mission_id: str,
        after_seq: int = 0,
        timeout: float | None = None,
        until_paused: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Yields the mission's events from `after_seq` on, as they happen, until it ends
        (or pauses, as `watch` does: the last event is then its `mission_paused`).

        Driven by the mission listener: events are appended in the same write that raises the
        document's `event_seq`, so the log is re-read only when that grew.
        """
        last = after_seq
        for snapshot in self.watch(mission_id, timeout, until_paused):
            if snapshot["event_seq"] > last:
                for event in self.events(mission_id, last):
                    last = max(last, int(event["seq"]))
                    yield event

    # Plumbing

    def _call(self, method: str, path: str, mission_id: str | None = None, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and self._auth is not None:
            # A stored token can be revoked, or outlive the emulator that issued it: renew once.
            response = self._send(method, path, self._auth.renew(), **kwargs)
        if not response.is_success:
            raise _error_of(response, mission_id)
        return response.json() if response.content else None

    def _send(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self._current_token()}"}
        try:
            return self._http.request(method, self.api_url + path, headers=headers, **kwargs)
        except httpx.TransportError:
            raise ApiUnreachable(unreachable_message(self.api_url)) from None

    def _current_token(self) -> str:
        """The token given, else the token source's, asked each time: it refreshes the token
        before it ends, so a long watch or a long script outlives an ID token's hour."""
        if self._token is not None:
            return self._token
        if self._auth is None:
            raise NotAuthenticated("no ID token: run `buddy login`, or set BUDDY_ID_TOKEN")
        return self._auth.token()

    def _listen(self) -> MissionListener:
        """The Firestore listener, made on first use (importing it costs about a second)."""
        if self._listener is None:
            from buddy.adapters.firestore_listener import FirestoreMissionListener

            emulator = self.firestore_emulator or os.environ.get("FIRESTORE_EMULATOR_HOST")
            self._listener = FirestoreMissionListener(
                self.project_id, emulator, None if emulator else self._current_token
            )
        return self._listener
