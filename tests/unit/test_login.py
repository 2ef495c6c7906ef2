"""`buddy login`'s callback server (buddy.login) without emulators: real HTTP posts shaped like
the dashboard's form to the one-time server on 127.0.0.1."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from buddy import cli, login
from buddy.accounts import Credentials, credentials_path
from buddy.login import CallbackServer, SignedIn, SignInCancelled, SignInTimedOut

from .test_accounts import VARIABLES, jwt

STATE = "s" * 43
EXP = 2_000_000_000
REFUSED = "Refused: this sign-in did not come from your `buddy login` (state mismatch)"


def form(state: str = STATE, **changes: str) -> dict[str, str]:
    """What the dashboard's Allow posts, as the contract spells its fields."""
    fields = {
        "state": state,
        "refresh_token": "r1",
        "id_token": jwt(user_id="alice-uid", exp=EXP),
        "uid": "alice-uid",
        "email": "alice@example.com",
        "display_name": "Alice",
        "provider": "password",
        "api_key": "key-1",
        "project_id": "demo-x",
        "api_url": "http://127.0.0.1:5001",
        "auth_emulator": "http://127.0.0.1:9099",
        "firestore_emulator": "127.0.0.1:8080",
        "dashboard_url": "http://127.0.0.1:5000/",
    }
    return {**fields, **changes}


def post(server: CallbackServer, fields: dict[str, str], path: str = "/callback") -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{server.port}{path}", data=fields, timeout=5)


@pytest.fixture
def server() -> Iterator[CallbackServer]:
    with CallbackServer(STATE) as server:
        yield server


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Credentials:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return Credentials(credentials_path({"XDG_CONFIG_HOME": str(tmp_path)}))


def test_the_right_state_signs_in_stores_the_account_and_answers_200(
    credentials: Credentials,
) -> None:
    """The whole login: the URL printed carries the port and a random state; the dashboard's
    post with it gets the "Signed in" page; the account is stored, its project current."""
    said: queue.Queue[str] = queue.Queue()
    done: list[SignedIn] = []
    thread = threading.Thread(
        target=lambda: done.append(
            login.login(credentials, "http://dash.test/", said.put, 10, open_browser=False)
        )
    )
    thread.start()
    line = said.get(timeout=5)
    url = re.fullmatch(r"Open this URL to sign in: (\S+)", line)
    assert url, line
    split = urlsplit(url.group(1))
    assert (split.scheme, split.netloc, split.path) == ("http", "dash.test", "/")
    query = {key: value for key, [value] in parse_qs(split.query).items()}
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,128}", query["cli_state"])
    callback = f"http://127.0.0.1:{query['cli_port']}/callback"
    answer = httpx.post(callback, data=form(query["cli_state"]), timeout=5)
    thread.join(timeout=5)
    assert answer.status_code == 200
    assert "Signed in to the Buddy CLI as alice@example.com. You can close this tab." in answer.text
    [signed_in] = done
    assert signed_in.project == "demo-x"
    assert credentials.current == "demo-x"
    stored = credentials.account("demo-x")
    assert stored == signed_in.account
    assert (stored.uid, stored.email, stored.provider, stored.expires_at) == (
        "alice-uid",
        "alice@example.com",
        "password",
        EXP,
    )
    assert (stored.api_url, stored.auth_emulator, stored.firestore_emulator) == (
        "http://127.0.0.1:5001",
        "http://127.0.0.1:9099",
        "127.0.0.1:8080",
    )
    with pytest.raises(httpx.TransportError):  # one sign-in: the server is gone
        httpx.post(callback, data=form(query["cli_state"]), timeout=2)


@pytest.mark.parametrize(
    "state", ["t" * 43, "", STATE[:-1]], ids=["another-state", "empty", "one-short"]
)
def test_a_wrong_state_is_refused_with_400_and_the_cli_keeps_waiting(
    server: CallbackServer, state: str
) -> None:
    """A post that did not come from this login (wrong or no state) gets 400 and the refusal
    page; the real post after it still signs in."""
    refused = post(server, form(state))
    assert refused.status_code == 400
    assert REFUSED in refused.text
    no_state = post(server, {k: v for k, v in form().items() if k != "state"})
    assert no_state.status_code == 400
    with pytest.raises(SignInTimedOut):
        server.wait(0.2)
    assert post(server, form()).status_code == 200
    assert server.wait(1).account.uid == "alice-uid"


def test_cancel_answers_200_and_fails_the_login(server: CallbackServer) -> None:
    """Cancel in the dashboard (error=access_denied): a "Sign-in cancelled" page, and the
    login ends with SignInCancelled (exit 1)."""
    answer = post(server, {"state": STATE, "error": "access_denied"})
    assert answer.status_code == 200
    assert "Sign-in cancelled" in answer.text
    with pytest.raises(SignInCancelled, match=r"^sign-in cancelled in the browser$"):
        server.wait(1)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/callback", 405), ("POST", "/other", 404), ("GET", "/", 404)],
    ids=["get-callback", "post-elsewhere", "get-root"],
)
def test_anything_but_a_post_to_the_callback_is_refused(
    server: CallbackServer, method: str, path: str, status: int
) -> None:
    """GETs and other paths get 404/405, settle nothing, and the real post still works."""
    answer = httpx.request(method, f"http://127.0.0.1:{server.port}{path}", timeout=5)
    assert answer.status_code == status
    if status == 405:
        assert answer.headers["Allow"] == "POST"
    assert post(server, form()).status_code == 200
    assert server.wait(1).project == "demo-x"


@pytest.mark.parametrize(
    "changes",
    [{"id_token": ""}, {"refresh_token": ""}, {"project_id": ""}, {"project_id": "../etc"}],
    ids=["no-id-token", "no-refresh-token", "no-project", "bad-project"],
)
def test_a_sign_in_without_tokens_or_project_is_refused_and_the_cli_keeps_waiting(
    server: CallbackServer, changes: dict[str, str]
) -> None:
    """The right state but not what an account needs: 400, nothing settled."""
    answer = post(server, form(**changes))
    assert answer.status_code == 400
    assert "incomplete" in answer.text
    assert post(server, form()).status_code == 200
    server.wait(1)


def test_a_second_post_after_the_sign_in_is_refused(server: CallbackServer) -> None:
    """The state is good for one sign-in."""
    assert post(server, form()).status_code == 200
    again = post(server, form(email="mallory@example.com"))
    assert again.status_code == 400
    assert server.wait(1).account.email == "alice@example.com"


def test_nobody_signing_in_times_out(server: CallbackServer) -> None:
    """No post before the deadline: SignInTimedOut, saying to run buddy login again."""
    started = time.monotonic()
    with pytest.raises(SignInTimedOut) as caught:
        server.wait(0.3)
    assert 0.25 < time.monotonic() - started < 2
    assert str(caught.value) == "nobody signed in within 0.3s: run buddy login again"


def test_the_server_listens_on_loopback_only(server: CallbackServer) -> None:
    """Bound to 127.0.0.1: no other machine can post to it."""
    assert server.address[0] == "127.0.0.1"


def test_the_sign_in_url_carries_the_port_and_the_state() -> None:
    """The dashboard URL gets ?cli_port=…&cli_state=…, whether it ends in a slash or not."""
    expected = f"http://d.test/?cli_port=4321&cli_state={STATE}"
    assert login.sign_in_url("http://d.test/", 4321, STATE) == expected
    assert login.sign_in_url("http://d.test", 4321, STATE) == expected


@pytest.mark.parametrize(
    ("dashboard", "expected"),
    [
        ("http://d.test/?api=http://a.test:5001", "http://d.test/?api=http%3A%2F%2Fa.test%3A5001&"),
        ("http://d.test/app?as=someone", "http://d.test/app/?as=someone&"),
        ("http://d.test/app/?cli_state=old&x=", "http://d.test/app/?x=&"),
        ("https://d.test/#top", "https://d.test/?"),
    ],
    ids=["api-kept", "path-and-query-kept", "stale-state-replaced", "fragment-kept"],
)
def test_the_sign_in_url_keeps_what_the_dashboard_url_asks_already(
    dashboard: str, expected: str
) -> None:
    """A dashboard URL with a query (?api=… for another API) or a path keeps them: the sign-in
    parameters are added, replacing any of the same name, never glued on as a second `?`."""
    url = login.sign_in_url(dashboard, 4321, STATE)
    fragment = "#top" if "#top" in dashboard else ""
    assert url == f"{expected}cli_port=4321&cli_state={STATE}{fragment}"


def test_cli_login_without_a_sign_in_prints_the_url_and_exits_1(credentials: Credentials) -> None:
    """`buddy login --no-browser --timeout 1` prints where to sign in, then gives up with one
    error line and exit 1, nothing stored."""
    result: Any = CliRunner().invoke(cli.app, ["login", "--no-browser", "--timeout", "1"])
    assert result.exit_code == 1, result.output
    assert re.match(
        r"Open this URL to sign in: http://127\.0\.0\.1:5000/\?cli_port=\d+&cli_state=[\w-]{43}\n",
        result.stdout,
    )
    assert result.stderr == "error: nobody signed in within 1s: run buddy login again\n"
    assert not credentials.path.exists()
