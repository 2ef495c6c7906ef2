"""Identity, isolation and hostile input, probed as a stranger would: clear answers, no changes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from google.cloud import firestore

from buddy.config import LocalPorts
from buddy.devstack import Function, wait_for_http

from ..localserver import LocalServer, Reply
from .conftest import ARTIFACTS, MissionWatcher, Stack, User, _free_port, events_of, sign_up

DASHBOARD = LocalPorts.from_env().url("hosting")


def unsigned_token(uid: str, expires_in: int) -> str:
    """A token shaped like the Auth emulator's: no signature at all."""
    now = int(time.time())
    project = os.environ.get("GCLOUD_PROJECT", "demo-buddy")
    claims = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "sub": uid,
        "user_id": uid,
        "iat": now - 60,
        "auth_time": now - 60,
        "exp": now + expires_in,
        "firebase": {"sign_in_provider": "anonymous", "identities": {}},
    }
    part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.fixture(scope="module")
def production_api(stack: Stack) -> Iterator[str]:
    """The API with emulator token checks off, as in production: real signatures required."""
    api = Function("api", _free_port())
    api.start({"FIREBASE_AUTH_EMULATOR_HOST": ""}, ARTIFACTS / "api-production.log")
    wait_for_http(api.url + "/healthz")
    yield api.url
    api.stop()


@pytest.fixture(scope="module")
def owner(stack: Stack) -> User:
    return User(*sign_up(), stack.api_url)


@pytest.fixture(scope="module")
def finished_mission(owner: User, db: firestore.Client) -> str:
    mission_id = owner.launch("calculate 40+2")
    MissionWatcher(db, mission_id).wait_terminal()
    return mission_id


def prepare(route: str, owner: User, finished: str) -> tuple[str, str, dict[str, Any] | None]:
    """A request for `route` that its owner may make: (method, path, body)."""
    if route == "create":
        return "POST", "/missions", {"objective": "calculate 1+1"}
    if route == "list":
        return "GET", "/missions", None
    if route == "artifact":
        return "GET", f"/missions/{finished}/artifact", None
    mission_id = owner.create()["mission_id"]
    if route == "execute":
        owner.call("POST", f"/missions/{mission_id}/approve")
    method = "POST" if route in {"approve", "execute", "cancel"} else "GET"
    suffix = "" if route == "get" else f"/{route}"
    return method, f"/missions/{mission_id}{suffix}", None


OWNER_STATUS = {
    "create": 201,
    "list": 200,
    "get": 200,
    "approve": 200,
    "execute": 202,
    "cancel": 200,
    "progress": 200,
    "events": 200,
    "artifact": 200,
}


@pytest.mark.parametrize("route", list(OWNER_STATUS))
@pytest.mark.parametrize(
    "who", ["no-token", "garbage-token", "expired-looking-in-production", "other-user", "owner"]
)
def test_route_by_identity_matrix(
    route: str,
    who: str,
    owner: User,
    finished_mission: str,
    bob: User,
    db: firestore.Client,
    production_api: str,
) -> None:
    """Every route answers each kind of caller as expected, and strangers change nothing."""
    method, path, body = prepare(route, owner, finished_mission)
    mission_id = path.split("/")[2] if path.count("/") >= 2 else None
    before = db.collection("missions").document(mission_id).get().to_dict() if mission_id else None
    url, headers = owner.api_url, {}
    if who == "garbage-token":
        headers = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.garbage.sig"}
    elif who == "expired-looking-in-production":
        url = production_api
        headers = {"Authorization": f"Bearer {unsigned_token(owner.uid, expires_in=-3600)}"}
    elif who == "other-user":
        headers = {"Authorization": f"Bearer {bob.token}"}
    elif who == "owner":
        headers = {"Authorization": f"Bearer {owner.token}"}
    response = requests.request(method, url + path, json=body, headers=headers, timeout=30)

    expected = {"owner": OWNER_STATUS[route]}.get(who, 401)
    if who == "other-user":
        expected = OWNER_STATUS[route] if route in {"create", "list"} else 404
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert set(response.json()["error"]) == {"code", "message"}
        if mission_id:
            assert db.collection("missions").document(mission_id).get().to_dict() == before


def test_forged_unsigned_token_works_only_in_emulator_mode(
    owner: User, production_api: str
) -> None:
    """A self-made unsigned token passes the emulator's checks, and nothing else."""
    forged = {"Authorization": f"Bearer {unsigned_token('mallory', expires_in=3600)}"}
    emulated = requests.get(owner.api_url + "/missions", headers=forged, timeout=10)
    assert emulated.status_code == 200  # why emulator settings must never reach production
    production = production_api
    response = requests.get(production + "/missions", headers=forged, timeout=10)
    assert response.status_code == 401
    real_emulator_token = {"Authorization": f"Bearer {owner.token}"}
    assert (
        requests.get(production + "/missions", headers=real_emulator_token, timeout=10).status_code
        == 401
    )


def launch_function(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        Function("api", _free_port()).command,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_refuses_to_start_in_production_with_emulator_settings() -> None:
    """On Cloud Run/Functions (K_SERVICE set), an emulator variable stops start-up with a reason."""
    process = launch_function({"K_SERVICE": "buddy-api"})
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Refusing to start: FIREBASE_AUTH_EMULATOR_HOST" in output


def test_cors_only_for_the_dashboard_origin(stack: Stack) -> None:
    """The dashboard's origin gets CORS headers, preflight included; other origins get none."""
    allowed = requests.get(stack.api_url + "/healthz", headers={"Origin": DASHBOARD}, timeout=10)
    assert allowed.headers["Access-Control-Allow-Origin"] == DASHBOARD
    preflight = requests.options(
        stack.api_url + "/missions",
        headers={
            "Origin": DASHBOARD,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    for method in (requests.get, requests.options):
        other = method(
            stack.api_url + "/healthz", headers={"Origin": "https://evil.example"}, timeout=10
        )
        assert not any(h.lower().startswith("access-control") for h in other.headers)


def test_too_many_active_missions_is_429(
    alice: User,
    site: LocalServer,
    start_api: Callable[..., str],
    watch: Callable[[str], MissionWatcher],
) -> None:
    """Past the allowed number of queued/running missions, execute is 429 and changes nothing."""
    site.route("/slow-for-429", Reply(body="<title>slow</title><p>slow</p>", delay=3))
    limited = User(alice.uid, alice.token, start_api(BUDDY_MAX_ACTIVE_MISSIONS="1"))
    scope = {"allowed_domains": ["127.0.0.1"]}
    running = limited.launch(f"extract {site.url('/slow-for-429')}", scope=scope)
    second = limited.create("calculate 2+2")["mission_id"]
    limited.call("POST", f"/missions/{second}/approve")
    response = limited.call("POST", f"/missions/{second}/execute")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_active_missions"
    assert limited.call("GET", f"/missions/{second}").json()["status"] == "approved"
    assert watch(running).wait_terminal()["status"] == "completed"
    assert limited.call("POST", f"/missions/{second}/execute").status_code == 202


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b'{"objective": "x", "budget_usd": 1e400}', 422, id="huge-number"),
        pytest.param(b'{"objective": "x", "budget_usd": "1"}', 422, id="number-as-string"),
        pytest.param(b'{"objective": 12}', 422, id="objective-not-a-string"),
        pytest.param(b'{"objective": "\\ud800 lone surrogate"}', 422, id="lone-surrogate"),
        pytest.param(
            b'{"objective": "x", "inputs": {"url": {"a": [[[{"b": null}]]]}}}',
            422,
            id="nested-junk",
        ),
        pytest.param(b'{"objective": "x", "inputs": {"__name__": 1}}', 422, id="reserved-field"),
        pytest.param(
            b'{"objective": "x", "scope": {"allowed_domains": "a.com"}}',
            422,
            id="domains-not-a-list",
        ),
        pytest.param(
            b'{"objective": "x", "scope": {"allowed_domains": ["a.com/../../etc"]}}',
            422,
            id="domain-with-path",
        ),
        pytest.param(b"[" * 30000, 400, id="deep-nesting"),
        pytest.param(b'{"objective": "x"' + b" " * 70000 + b"}", 413, id="oversize"),
        pytest.param(b"\xff\xfe not utf-8", 400, id="not-utf8"),
    ],
)
def test_hostile_bodies_get_4xx_and_store_nothing(
    alice: User, db: firestore.Client, body: bytes, status: int
) -> None:
    """Odd, oversize and injection-shaped bodies are refused clearly and create nothing."""
    mine = db.collection("missions").where(
        filter=firestore.FieldFilter("owner_uid", "==", alice.uid)
    )
    before = len(list(mine.stream()))
    response = alice.call(
        "POST", "/missions", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    assert len(list(mine.stream())) == before


def test_unusual_text_is_stored_as_data(alice: User) -> None:
    """Unicode and injection-looking text is kept exactly, as plain data."""
    objective = "calculate 1+1 — ‮RTL‬ 🚀 \u0000 '; DROP TABLE missions; -- {{7*7}} ${jndi:x}"
    created = alice.create(objective)
    assert created["objective"] == objective
    assert alice.call("GET", f"/missions/{created['mission_id']}").json()["objective"] == objective


def test_logs_hold_no_tokens_or_objectives(
    stack: Stack, alice: User, watch: Callable[[str], MissionWatcher]
) -> None:
    """Neither ID tokens nor what people asked for end up in the logs."""
    marker = "private-objective-7f3a"
    mission_id = alice.launch(f"calculate 6*7 {marker}", inputs={"expression": "6*7"})
    watch(mission_id).wait_terminal()
    assert events_of(alice, mission_id)
    alice.call("GET", "/missions", headers={"Authorization": "Bearer not-a-token-9d2c"})
    logs = "".join(p.read_text() for p in ARTIFACTS.glob("*.log"))
    assert mission_id in logs  # the logs are there, and they are about this mission
    for secret in (alice.token, marker, "not-a-token-9d2c"):
        assert secret not in logs
