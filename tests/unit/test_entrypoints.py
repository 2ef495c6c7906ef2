"""functions/main.py in-process: functions-framework's own app and test client, over fakes.

Routing, authentication, error mapping, size limits, CORS, poison messages and redelivery,
as a caller sees them — without emulators (those tests live in tests/integration).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import flask.testing
import pytest
from functions_framework import create_app

from buddy import bootstrap
from buddy.config import MAX_BODY_BYTES
from buddy.devstack import ROOT
from buddy.domain.mission import Status
from buddy.errors import (
    Conflict,
    DependencyUnavailable,
    InvalidTransition,
    MissionNotFound,
    ServiceError,
    StorageRejected,
    TooManyActiveMissions,
    ValidationFailed,
)

from .fakes import (
    FakeClock,
    FakeMissionStore,
    FakePublisher,
    seed_mission,
)

MAIN = str(ROOT / "functions" / "main.py")
ALICE = {"Authorization": "Bearer token-alice"}
BOB = {"Authorization": "Bearer token-bob"}
DASHBOARD = "http://127.0.0.1:5000"


@pytest.fixture
def app(make_app: Callable[..., bootstrap.App]) -> Iterator[bootstrap.App]:
    """The entry points of functions/main.py run on the composition root over the fakes."""
    with bootstrap.installed(make_app(interval=0)) as instance:
        yield instance


def client(target: str, signature: str = "http") -> flask.testing.FlaskClient:
    return create_app(target, MAIN, signature).test_client()


@pytest.fixture
def api(app: bootstrap.App) -> flask.testing.FlaskClient:
    return client("api")


def error_of(response: Any) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def created(api: flask.testing.FlaskClient, objective: str = "calculate 6*7") -> str:
    response = api.post("/missions", json={"objective": objective}, headers=ALICE)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["mission_id"])


# ---- the mission lifecycle through the real entry point ------------------------------------


def test_a_mission_goes_from_create_to_artifact_through_the_api_and_the_worker(
    api: flask.testing.FlaskClient, app: bootstrap.App, publisher: FakePublisher
) -> None:
    """Create, approve, execute (one message), the worker's push runs it, and the API then
    serves its progress, its gapless events and its artifact."""
    mission_id = created(api)
    assert api.post(f"/missions/{mission_id}/approve", headers=ALICE).get_json()["status"] == (
        "approved"
    )
    accepted = api.post(f"/missions/{mission_id}/execute", headers=ALICE)
    assert (accepted.status_code, accepted.get_json()) == (
        202,
        {"mission_id": mission_id, "status": "queued"},
    )
    assert publisher.published == [mission_id]
    assert api.get(f"/missions/{mission_id}/artifact", headers=ALICE).status_code == 404

    assert client("worker", "cloudevent").post("/", json=push(mission_id)).status_code == 200

    progress = api.get(f"/missions/{mission_id}/progress", headers=ALICE).get_json()
    assert (progress["status"], progress["progress_percent"]) == ("completed", 100)
    assert len(progress["completed_steps"]) == 7
    assert all("detail" not in step for step in progress["completed_steps"])
    events = api.get(f"/missions/{mission_id}/events", headers=ALICE).get_json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    later = api.get(f"/missions/{mission_id}/events?after_seq=3", headers=ALICE).get_json()
    assert [e["seq"] for e in later["events"]] == list(range(4, len(events) + 1))
    artifact = api.get(f"/missions/{mission_id}/artifact", headers=ALICE).get_json()
    assert (artifact["content"], artifact["truncated"]) == ("42", False)
    mission = api.get(f"/missions/{mission_id}", headers=ALICE).get_json()
    assert mission["execution_record"]["cost_usd"] == {"estimated": 0.0001, "actual": 0.0001}
    assert "outputs" not in mission["execution_record"]  # memoized for runs, not for clients
    listed = api.get("/missions?status=completed", headers=ALICE).get_json()["missions"]
    assert [m["mission_id"] for m in listed] == [mission_id]


def test_another_users_mission_is_not_found_on_every_route(
    api: flask.testing.FlaskClient,
) -> None:
    """Bob gets 404 for Alice's mission wherever he asks, and changes nothing."""
    mission_id = created(api)
    routes = [("get", ""), ("post", "/approve"), ("post", "/execute"), ("post", "/cancel")]
    routes += [("get", "/progress"), ("get", "/events"), ("get", "/artifact")]
    for method, suffix in routes:
        response = getattr(api, method)(f"/missions/{mission_id}{suffix}", headers=BOB)
        assert error_of(response) == (404, "not_found"), suffix
    mission = api.get(f"/missions/{mission_id}", headers=ALICE).get_json()
    assert mission["status"] == "proposed"


# ---- routing and authentication -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/nowhere", 404, "not_found"),
        ("get", "/missions/has%20space", 404, "not_found"),
        ("get", "/missions/" + "x" * 65, 404, "not_found"),
        ("delete", "/missions", 405, "method_not_allowed"),
        ("put", "/missions/m_1/approve", 405, "method_not_allowed"),
    ],
    ids=["unknown-route", "bad-id", "long-id", "delete-missions", "put-approve"],
)
def test_routes_that_do_not_exist_are_json_errors(
    api: flask.testing.FlaskClient, method: str, path: str, status: int, code: str
) -> None:
    """Unknown routes, ids that are not ids, and wrong methods are JSON errors, 405 with Allow."""
    response = getattr(api, method)(path, headers=ALICE)
    assert error_of(response) == (status, code)
    if status == 405:
        assert "POST" in response.headers["Allow"] or "GET" in response.headers["Allow"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "token-alice"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer x"},
    ],
    ids=["none", "no-scheme", "empty", "forged"],
)
def test_every_route_but_health_and_description_needs_a_token(
    api: flask.testing.FlaskClient, headers: dict[str, str]
) -> None:
    """Without a valid bearer token the API answers 401; /healthz and /openapi.json don't ask."""
    assert error_of(api.get("/missions", headers=headers)) == (401, "unauthenticated")
    assert api.get("/healthz").get_json() == {"status": "ok"}
    described = api.get("/openapi.json").get_json()
    tool = described["components"]["schemas"]["CreateMission"]["properties"]["tool"]
    assert tool["anyOf"][0]["enum"] == ["calculate", "research", "web_extract", "web_search"]


# ---- errors, mapped by their class -----------------------------------------------------------


class AlreadyArchived(Conflict):
    """A subclass the HTTP edge has never heard of."""


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (MissionNotFound("m_1"), 404, "not_found"),
        (InvalidTransition("approve", "queued", "proposed"), 409, "conflict"),
        (AlreadyArchived("it is archived"), 409, "conflict"),
        (ValidationFailed("limit must be between 1 and 100"), 422, "validation_failed"),
        (TooManyActiveMissions(10), 429, "too_many_active_missions"),
        (DependencyUnavailable("Firestore is unavailable"), 503, "unavailable"),
        (StorageRejected("Firestore refused the write"), 500, "storage_rejected"),
        (ServiceError("unexpected state"), 500, "internal"),
    ],
    ids=[
        "not-found",
        "transition",
        "new-subclass",
        "invalid",
        "too-many",
        "down",
        "refused",
        "root",
    ],
)
def test_service_errors_are_answered_by_their_class(
    api: flask.testing.FlaskClient,
    store: FakeMissionStore,
    monkeypatch: pytest.MonkeyPatch,
    error: ServiceError,
    status: int,
    code: str,
) -> None:
    """Each error of the tree is answered with its class's status and code and its message —
    a subclass the edge never heard of included (it answers like its parent)."""

    def fail(*_: Any) -> None:
        raise error

    monkeypatch.setattr(store, "get", fail)
    response = api.get("/missions/m_1", headers=ALICE)
    assert error_of(response) == (status, code)
    assert response.get_json()["error"]["message"] == str(error)


def test_a_bug_is_a_500_without_internals(
    api: flask.testing.FlaskClient, store: FakeMissionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception outside the tree is logged and answered with a generic 500."""

    def crash(*_: Any) -> None:
        raise KeyError("secret_internal_name")

    monkeypatch.setattr(store, "get", crash)
    response = api.get("/missions/m_1", headers=ALICE)
    assert error_of(response) == (500, "internal")
    assert "secret_internal_name" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"x" * (MAX_BODY_BYTES + 1), "application/json", 413, "payload_too_large"),
        (b'{"objective": "calculate 1+1"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"objective": ', "application/json", 400, "malformed_json"),
        (b"[" * 30000, "application/json", 400, "malformed_json"),
        (b'{"objective": "x", "budget_usd": 0}', "application/json", 422, "validation_failed"),
        (b'{"objective": "x", "evil": 1}', "application/json", 422, "validation_failed"),
    ],
    ids=["too-large", "not-json-type", "truncated", "deep", "zero-budget", "unknown-field"],
)
def test_bad_bodies_are_refused_and_store_nothing(
    api: flask.testing.FlaskClient,
    store: FakeMissionStore,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    """Oversize, mistyped, malformed and invalid bodies get their 4xx and create nothing."""
    response = api.post("/missions", data=body, content_type=content_type, headers=ALICE)
    assert error_of(response) == (status, code)
    assert store.missions == {}


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("PATCH {}", "objective"),
        ("PATCH {}", "budget_usd"),
        ("PATCH {}", "scope"),
        ("PATCH {}", "inputs"),
        ("PATCH {}", "on_limit"),
        ("POST {}/clone", "objective"),
        ("POST {}/clone", "inputs"),
        ("POST {}/retry", "budget_usd"),
        ("POST {}/retry", "scope"),
    ],
)
def test_null_is_not_a_value_in_an_edit_and_changes_nothing(
    api: flask.testing.FlaskClient, store: FakeMissionStore, route: str, field: str
) -> None:
    """Leaving a field out keeps it; sending it as null is a 422 naming the field (not a
    500, not a blanked mission), and nothing is stored."""
    mission_id = created(api)
    before = dict(store.missions)
    method, path = route.format(f"/missions/{mission_id}").split(" ")
    response = api.open(path, method=method, json={field: None}, headers=ALICE)
    assert error_of(response) == (422, "validation_failed")
    assert response.get_json()["error"]["message"].startswith(f"{field}: null")
    assert store.missions == before


@pytest.mark.parametrize("route", ["PATCH {}", "POST {}/clone"])
def test_an_empty_scope_in_an_edit_allows_no_domains_as_in_a_create(
    api: flask.testing.FlaskClient, route: str
) -> None:
    body = {"objective": "calculate 1+1", "scope": {"allowed_domains": ["example.com"]}}
    mission_id = api.post("/missions", json=body, headers=ALICE).get_json()["mission_id"]
    method, path = route.format(f"/missions/{mission_id}").split(" ")
    response = api.open(path, method=method, json={"scope": {}}, headers=ALICE)
    assert response.status_code in (200, 201), response.get_json()
    assert response.get_json()["scope"] == {"allowed_domains": []}


def test_a_null_tool_in_an_edit_lets_the_worker_choose_again(
    api: flask.testing.FlaskClient,
) -> None:
    response = api.post(
        "/missions", json={"objective": "calculate 1+1", "tool": "calculate"}, headers=ALICE
    )
    mission_id = response.get_json()["mission_id"]
    edited = api.patch(f"/missions/{mission_id}", json={"tool": None}, headers=ALICE)
    assert edited.status_code == 200 and edited.get_json()["tool"] is None


def test_cors_headers_go_to_the_dashboard_only(api: flask.testing.FlaskClient) -> None:
    """The dashboard's origin gets CORS headers (and a preflight); another origin none."""
    preflight = api.options("/missions", headers={"Origin": DASHBOARD})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    listed = api.get("/missions", headers={**ALICE, "Origin": DASHBOARD})
    assert listed.headers["Access-Control-Allow-Origin"] == DASHBOARD
    other = api.get("/missions", headers={**ALICE, "Origin": "https://evil.example"})
    assert not any(h.lower().startswith("access-control") for h, _ in other.headers)


# ---- the worker and the dead-letter function -------------------------------------------------


def push(mission_id: str | None = None, data: str | None = None, attempt: int = 1) -> dict:
    """The body of a Pub/Sub push, as the subscription sends it."""
    if data is None:
        data = base64.b64encode(json.dumps({"mission_id": mission_id}).encode()).decode()
    message = {"data": data, "messageId": "m-1", "publishTime": "2026-01-01T00:00:00Z"}
    return {
        "message": {**message, "deliveryAttempt": attempt},
        "subscription": "projects/demo-buddy/subscriptions/test",
    }


@pytest.mark.parametrize(
    "data",
    [
        base64.b64encode(b"not json").decode(),
        "!!! not base64",
        base64.b64encode(json.dumps({"mission_id": "../../etc"}).encode()).decode(),
        base64.b64encode(json.dumps({"mission_id": 7}).encode()).decode(),
        base64.b64encode(json.dumps({"other": "m_1"}).encode()).decode(),
    ],
    ids=["not-json", "not-base64", "path-in-id", "id-not-a-string", "no-id"],
)
def test_poison_messages_are_acknowledged_and_run_nothing(
    app: bootstrap.App, store: FakeMissionStore, data: str
) -> None:
    """A message no retry can fix is acknowledged (200, so Pub/Sub drops it) and runs nothing."""
    seed_mission(store, mission_id="m_1")
    assert client("worker", "cloudevent").post("/", json=push(data=data)).status_code == 200
    assert store.missions["m_1"].status == Status.QUEUED


def test_a_mission_held_by_a_live_run_is_refused_for_redelivery(
    app: bootstrap.App, store: FakeMissionStore, clock: FakeClock
) -> None:
    """While another run renews its lease, the worker answers 500 so Pub/Sub tries later."""
    from dataclasses import replace

    mission_id = seed_mission(store)
    app.runner.sleep = lambda seconds: store.put(  # the other run keeps renewing
        replace(store.missions[mission_id], lease_expires_at=clock.now + timedelta(seconds=90))
    )
    store.put(
        replace(
            store.missions[mission_id],
            status=Status.RUNNING,
            run_id="other",
            lease_expires_at=clock.now + timedelta(seconds=60),
        )
    )
    response = client("worker", "cloudevent").post("/", json=push(mission_id))
    assert response.status_code == 500
    assert store.missions[mission_id].run_id == "other"


def test_a_dead_letter_fails_its_mission_with_the_number_of_attempts(
    app: bootstrap.App, store: FakeMissionStore
) -> None:
    """The dead-letter function ends a mission no worker could take, saying how often."""
    mission_id = seed_mission(store)
    dead = client("dead_letter", "cloudevent").post("/", json=push(mission_id, attempt=5))
    assert dead.status_code == 200
    mission = store.missions[mission_id]
    assert mission.status == Status.FAILED
    assert mission.record.error is not None
    assert mission.record.error.message == (
        "Execution gave up: the worker could not take the mission after 5 delivery attempts"
    )


def test_the_sweeper_reports_what_it_did(app: bootstrap.App, store: FakeMissionStore) -> None:
    """A POST to the sweeper sweeps once and says what it did, by action."""
    response = client("sweeper").post("/")
    assert response.get_json() == {
        "swept": {"republished": 0, "failed": 0, "cancelled": 0, "skipped": 0, "expired": 0}
    }
