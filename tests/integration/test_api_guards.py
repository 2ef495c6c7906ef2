"""Identity, ownership and input checks of the HTTP API: clear errors, nothing changed."""

from __future__ import annotations

import pytest
import requests
from google.cloud import firestore

from .conftest import Stack, User

MISSION_ROUTES = [
    ("GET", ""),
    ("POST", "/approve"),
    ("POST", "/execute"),
    ("POST", "/cancel"),
    ("GET", "/progress"),
    ("GET", "/events"),
    ("GET", "/artifact"),
]


def test_healthz_needs_no_token(stack: Stack) -> None:
    """GET /healthz answers 200 without credentials."""
    response = requests.get(stack.api_url + "/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer not-a-jwt"],
    ids=["none", "empty-bearer", "basic", "garbage"],
)
def test_missing_or_bad_token_is_401(stack: Stack, header: str | None) -> None:
    """Without a valid Firebase ID token every mission route answers 401."""
    headers = {"Authorization": header} if header else {}
    for method, path in [
        ("GET", "/missions"),
        ("POST", "/missions"),
        ("GET", "/missions/m_x/progress"),
    ]:
        response = requests.request(
            method, stack.api_url + path, headers=headers, json={"objective": "x"}, timeout=10
        )
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("method", "suffix"), MISSION_ROUTES, ids=[m + s for m, s in MISSION_ROUTES]
)
def test_another_users_mission_is_404(
    alice: User, bob: User, db: firestore.Client, method: str, suffix: str
) -> None:
    """Bob can't see or change Alice's mission: it looks like it does not exist."""
    mission_id = alice.create()["mission_id"]
    before = db.collection("missions").document(mission_id).get().to_dict()
    response = bob.call(method, f"/missions/{mission_id}{suffix}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert db.collection("missions").document(mission_id).get().to_dict() == before
    assert mission_id not in [
        m["mission_id"] for m in bob.call("GET", "/missions").json()["missions"]
    ]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        pytest.param(b"{not json", {}, 400, "malformed_json", id="malformed"),
        pytest.param(b'{"objective": ""}', {}, 422, "validation_failed", id="empty-objective"),
        pytest.param(
            b'{"objective": "x", "budget_usd": 0}', {}, 422, "validation_failed", id="zero-budget"
        ),
        pytest.param(
            b'{"objective": "x", "budget_usd": 101}',
            {},
            422,
            "validation_failed",
            id="budget-over-100",
        ),
        pytest.param(
            b'{"objective": "x", "color": "red"}', {}, 422, "validation_failed", id="unknown-field"
        ),
        pytest.param(
            b'{"objective": "x", "tool": "teleport"}',
            {},
            422,
            "validation_failed",
            id="unknown-tool",
        ),
        pytest.param(
            b'{"objective": "x", "scope": {"allowed_domains": ["http://a.com/x"]}}',
            {},
            422,
            "validation_failed",
            id="bad-domain",
        ),
        pytest.param(b'["objective"]', {}, 422, "validation_failed", id="not-an-object"),
        pytest.param(
            b'{"objective": "' + b"x" * 2001 + b'"}',
            {},
            422,
            "validation_failed",
            id="objective-too-long",
        ),
        pytest.param(
            b'{"objective": "' + b"x" * 70_000 + b'"}',
            {},
            413,
            "payload_too_large",
            id="over-64-kib",
        ),
        pytest.param(
            b"objective=x",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
            id="form-encoded",
        ),
    ],
)
def test_bad_create_input_gets_a_clear_error_and_creates_nothing(
    alice: User, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    """Bad input is answered with a 4xx and a message, and no mission is created."""
    before = alice.call("GET", "/missions").json()["missions"]
    response = alice.call(
        "POST", "/missions", data=body, headers={"Content-Type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert alice.call("GET", "/missions").json()["missions"] == before


def test_validation_message_names_the_field(alice: User) -> None:
    """A 422 says which field is wrong."""
    response = alice.call("POST", "/missions", json={"objective": "x", "budget_usd": -3})
    assert response.status_code == 422
    assert "budget_usd" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "mission_id",
    ["..%2F..%2Fartifacts%2Fx", "a" * 65, "m%20x", "m.x"],
    ids=["path-separators", "too-long", "space", "dot"],
)
def test_odd_mission_ids_are_404(alice: User, mission_id: str) -> None:
    """Ids that are not ours never reach a document path: they are simply not found."""
    response = alice.call("GET", f"/missions/{mission_id}")
    assert response.status_code == 404


def test_unknown_route_and_method(alice: User) -> None:
    """Unknown routes are 404 and wrong methods 405, both in the JSON error shape."""
    assert alice.call("GET", "/nowhere").json()["error"]["code"] == "not_found"
    response = alice.call("DELETE", "/missions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
