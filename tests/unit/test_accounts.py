"""Stored accounts (buddy.accounts) without emulators: the credentials file, which project, API
and token a command uses, refreshes against a local server shaped like Google's securetoken
API, and the local user's sign-in against one shaped like the Auth emulator's."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from buddy import accounts, cli
from buddy.accounts import Account, Credentials, Session
from buddy.client import ApiUnreachable, BuddyClient, BuddyError, NotAuthenticated

from ..localserver import LocalServer, Received, Reply

REFRESH = "POST /securetoken.googleapis.com/v1/token"
CUSTOM_TOKEN = "POST /identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken"
# What the commands read besides the file; each test says which of them it sets.
VARIABLES = (
    "BUDDY_ID_TOKEN",
    "BUDDY_PROJECT_ID",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "BUDDY_API_URL",
    "BUDDY_DASHBOARD_URL",
    "BUDDY_LOCAL_UID",
    "FIRESTORE_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
)


# Fixed, so that two accounts made apart compare equal; tests last seconds.
IN_AN_HOUR = time.time() + 3600


def jwt(**payload: Any) -> str:
    """An unsigned JWT, as the Auth emulator issues them."""
    part = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{part}."


def alice(server: LocalServer | None = None, **changes: Any) -> Account:
    """Alice's account, its token good for an hour, signed in at `server` if given."""
    account = Account(
        uid="alice-uid",
        refresh_token="r1",
        id_token=jwt(user_id="alice-uid", email="alice@example.com"),
        expires_at=IN_AN_HOUR,
        api_key="key-1",
        provider="password",
        email="alice@example.com",
        api_url="http://api.alice.test",
        auth_emulator=server.base_url if server else "",
        firestore_emulator="127.0.0.1:8181" if server else "",
        dashboard_url="http://dash.alice.test/",
    )
    return replace(account, **changes)


def refreshed(**body: Any) -> Reply:
    answer = {"id_token": "id-2", "refresh_token": "r2", "expires_in": "3600", "user_id": "u"}
    return Reply(200, json.dumps({**answer, **body}), "application/json")


def refused(code: str) -> Reply:
    error = {"error": {"code": 400, "message": code, "status": "INVALID_ARGUMENT"}}
    return Reply(400, json.dumps(error), "application/json")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[LocalServer]:
    server = LocalServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A config directory of the test's own and none of the variables above (the CLI reads
    os.environ: it is cleaned too)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return {"XDG_CONFIG_HOME": str(tmp_path)}


@pytest.fixture
def credentials(env: dict[str, str]) -> Credentials:
    return Credentials(accounts.credentials_path(env))


# The file


def test_the_credentials_file_is_private_from_its_creation(
    credentials: Credentials, tmp_path: Path
) -> None:
    """Saved under a umask that would leave it world-readable, the file is 0600 in a 0700
    directory, in version 2's shape, the project signed in to current."""
    (tmp_path / "buddy").mkdir(mode=0o755)  # made loosely before: tightened
    before = os.umask(0)
    try:
        credentials.save("demo-x", alice(), current=True)
    finally:
        os.umask(before)
    assert credentials.path == tmp_path / "buddy" / "credentials.json"
    assert stat.S_IMODE(credentials.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.path.parent.stat().st_mode) == 0o700
    saved = json.loads(credentials.path.read_text())
    assert saved == {"version": 2, "current": "demo-x", "accounts": {"demo-x": asdict(alice())}}
    fields = "uid email display_name provider refresh_token id_token expires_at api_key"
    fields += " api_url auth_emulator firestore_emulator dashboard_url local_user"
    assert sorted(saved["accounts"]["demo-x"]) == sorted(fields.split(" "))
    # No temporary file left behind; the (empty) lock file stays.
    files = sorted(p.name for p in credentials.path.parent.iterdir())
    assert files == [".credentials.lock", "credentials.json"]


def test_a_file_in_the_old_format_counts_as_nobody_signed_in(credentials: Credentials) -> None:
    """The first format (a top-level idToken) is no sign-in, and the next save replaces it."""
    credentials.path.parent.mkdir(parents=True)
    old = {"idToken": "i1", "refreshToken": "r1", "localId": "u"}
    credentials.path.write_text(json.dumps(old))
    assert (credentials.current, credentials.account("demo-buddy")) == (None, None)
    with pytest.raises(NotAuthenticated, match=r"^not signed in to acme-prod: run `buddy login"):
        Session("acme-prod", credentials).token()
    credentials.save("acme-prod", alice())
    saved = json.loads(credentials.path.read_text())
    assert saved == {"version": 2, "current": None, "accounts": {"acme-prod": asdict(alice())}}


@pytest.mark.parametrize(
    "entry",
    [
        {"uid": "u", "id_token": "t", "expires_at": 1.0, "api_key": "k"},
        {"uid": "u", "refresh_token": 7, "id_token": "t", "expires_at": 1.0},
        {"uid": "u", "refresh_token": "r", "id_token": "t", "expires_at": "soon"},
        "not an account",
    ],
    ids=["no-refresh-token", "refresh-token-not-text", "expiry-not-a-number", "not-an-object"],
)
def test_an_entry_that_is_not_an_account_counts_as_no_sign_in(
    credentials: Credentials, entry: Any
) -> None:
    """An entry edited by hand or cut short is no account (the CLI asks for a login)."""
    credentials.path.parent.mkdir(parents=True)
    data = {"version": 2, "current": "acme-prod", "accounts": {"acme-prod": entry}}
    credentials.path.write_text(json.dumps(data))
    assert credentials.account("acme-prod") is None


def test_a_file_that_is_not_json_is_refused_not_replaced(credentials: Credentials) -> None:
    """A damaged credentials file may still hold other projects' sign-ins: a save refuses to
    overwrite it and says what to do, and the file stays as it was."""
    credentials.path.parent.mkdir(parents=True)
    credentials.path.write_text('{"version": 2, "accounts": {"acme-prod": {')
    with pytest.raises(BuddyError, match=r"is not valid JSON: fix it, or delete it"):
        credentials.save("demo-x", alice(), current=True)
    assert credentials.path.read_text() == '{"version": 2, "accounts": {"acme-prod": {'


def test_two_commands_saving_at_once_lose_neither_sign_in(credentials: Credentials) -> None:
    """Two processes refreshing two projects' tokens at the same moment: both are kept."""
    import multiprocessing

    def save_many(project: str) -> None:
        for n in range(40):
            credentials.save(project, replace(alice(), id_token=f"{project}-{n}"))

    workers = [multiprocessing.Process(target=save_many, args=(p,)) for p in ("demo-a", "demo-b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    kept = [credentials.account(project) for project in ("demo-a", "demo-b")]
    assert [account.id_token if account else None for account in kept] == [
        "demo-a-39",
        "demo-b-39",
    ]


def test_logout_forgets_only_that_project(credentials: Credentials) -> None:
    """remove() drops the project's account and, if it was current, the current project."""
    credentials.save("acme-prod", alice(), current=True)
    credentials.save("demo-x", alice(uid="other"))
    assert credentials.remove("acme-prod") == alice()
    assert credentials.remove("acme-prod") is None
    assert credentials.current is None
    assert credentials.account("demo-x") == alice(uid="other")


# Which project, API and dashboard


@pytest.mark.parametrize(
    ("given", "variables", "expected"),
    [
        ("opt-p", {"BUDDY_PROJECT_ID": "b-p", "GOOGLE_CLOUD_PROJECT": "g-p"}, "opt-p"),
        (None, {"BUDDY_PROJECT_ID": "b-p", "GOOGLE_CLOUD_PROJECT": "g-p"}, "b-p"),
        (None, {"GOOGLE_CLOUD_PROJECT": "g-p", "GCLOUD_PROJECT": "gc-p"}, "g-p"),
        (None, {"GCLOUD_PROJECT": "gc-p"}, "gc-p"),
        (None, {}, "last-p"),
    ],
    ids=["option", "buddy-variable", "google-variable", "gcloud-variable", "last-signed-in"],
)
def test_the_project_is_the_option_then_the_variables_then_the_last_sign_in(
    credentials: Credentials, given: str | None, variables: dict[str, str], expected: str
) -> None:
    """--project > BUDDY_PROJECT_ID > GOOGLE_CLOUD_PROJECT > GCLOUD_PROJECT > current."""
    credentials.save("last-p", alice(), current=True)
    assert accounts.target_project(credentials, variables, given) == expected


def test_with_nothing_said_the_project_is_demo_buddy(credentials: Credentials) -> None:
    """No option, variable or sign-in: the local stack's project."""
    assert accounts.target_project(credentials, {}) == "demo-buddy"


def test_the_api_url_is_the_option_then_the_variable_then_the_account_then_local() -> None:
    """--api-url > BUDDY_API_URL > the account's > the local stack's, for a demo- project."""
    env = {"BUDDY_API_URL": "http://env.test"}
    assert accounts.api_url("acme-prod", alice(), env, "http://opt.test") == "http://opt.test"
    assert accounts.api_url("acme-prod", alice(), env) == "http://env.test"
    assert accounts.api_url("acme-prod", alice(), {}) == "http://api.alice.test"
    assert accounts.api_url("demo-x", None, {"BUDDY_API_PORT": "6001"}) == "http://127.0.0.1:6001"


def test_a_deployed_project_without_an_api_url_says_how_to_get_one() -> None:
    """No URL known for a deployed project: a NotConfigured error naming both ways out."""
    with pytest.raises(accounts.NotConfigured) as caught:
        accounts.api_url("acme-prod", None, {})
    assert str(caught.value) == (
        "no API URL for project acme-prod: run buddy login --project acme-prod or pass --api-url"
    )


def test_the_dashboard_url_falls_back_to_the_local_stack_or_firebase_hosting() -> None:
    """BUDDY_DASHBOARD_URL > the account's > local hosting (demo-) > https://P.web.app."""
    env = {"BUDDY_DASHBOARD_URL": "http://env.test/"}
    assert accounts.dashboard_url("acme-prod", alice(), env) == "http://env.test/"
    assert accounts.dashboard_url("acme-prod", alice(), {}) == "http://dash.alice.test/"
    assert accounts.dashboard_url("demo-x", None, {}) == "http://127.0.0.1:5000/"
    assert accounts.dashboard_url("acme-prod", None, {}) == "https://acme-prod.web.app/"


# Which token


def test_buddy_id_token_wins_over_the_stored_account(
    credentials: Credentials, env: dict[str, str], server: LocalServer
) -> None:
    """With BUDDY_ID_TOKEN set, a client sends it, even with an account stored; without it,
    the stored account's (fresh: no refresh)."""
    credentials.save("acme-prod", alice(server), current=True)
    given = BuddyClient.from_env({**env, "BUDDY_ID_TOKEN": "from-env"})
    assert (given.project_id, given._current_token()) == ("acme-prod", "from-env")
    stored = BuddyClient.from_env(env)
    assert stored._current_token() == alice(server).id_token
    assert stored.api_url == "http://api.alice.test"
    assert server.requests == []


def test_a_token_near_its_expiry_is_refreshed_before_it_is_sent(
    credentials: Credentials, server: LocalServer
) -> None:
    """Four minutes left: the refresh token buys a new ID token, which is stored (and used
    until it nears its own end)."""
    server.route(REFRESH, refreshed())
    credentials.save("acme-prod", alice(server, expires_at=time.time() + 240))
    session = Session("acme-prod", credentials)
    assert session.token() == "id-2"
    assert session.token() == "id-2"
    [call] = server.requests
    assert call.query == {"key": "key-1"}
    assert call.form() == {"grant_type": "refresh_token", "refresh_token": "r1"}
    stored = credentials.account("acme-prod")
    assert stored is not None
    assert (stored.id_token, stored.refresh_token) == ("id-2", "r2")
    assert stored.expires_at == pytest.approx(time.time() + 3600, abs=30)
    assert replace(stored, id_token="", refresh_token="", expires_at=0) == replace(
        alice(server), id_token="", refresh_token="", expires_at=0
    )


@pytest.mark.parametrize(
    "code",
    ["TOKEN_EXPIRED", "USER_NOT_FOUND", "INVALID_REFRESH_TOKEN", "USER_DISABLED"],
)
def test_a_refused_refresh_says_to_sign_in_again(
    credentials: Credentials, server: LocalServer, code: str
) -> None:
    """The sign-in service refusing the refresh token for good: NotAuthenticated saying to
    run buddy login; the account stays as it was."""
    server.route(REFRESH, refused(f"{code} : details"))
    credentials.save("acme-prod", alice(server, expires_at=0.0))
    with pytest.raises(NotAuthenticated) as caught:
        Session("acme-prod", credentials).token()
    assert str(caught.value) == (
        "your sign-in to acme-prod has expired or was revoked: run `buddy login`"
    )
    assert credentials.account("acme-prod") == alice(server, expires_at=0.0)


def test_a_token_the_api_rejects_is_refreshed_once_and_the_call_retried(
    credentials: Credentials, server: LocalServer
) -> None:
    """A 401 for a token that has not expired (revoked, say): one refresh, the same call
    again with the new token, and it succeeds."""
    server.route(REFRESH, refreshed())
    credentials.save("acme-prod", alice(server))
    sent: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer id-2":
            return httpx.Response(200, json={"missions": []})
        return httpx.Response(401, json={"error": {"code": "unauthenticated", "message": "no"}})

    http = httpx.Client(transport=httpx.MockTransport(api))
    client = BuddyClient("http://api.test", None, auth=Session("acme-prod", credentials), http=http)
    assert client.list() == []
    assert sent == [f"Bearer {alice(server).id_token}", "Bearer id-2"]
    assert len(server.requests) == 1


def test_a_deployed_project_without_a_sign_in_says_to_run_buddy_login(
    credentials: Credentials, server: LocalServer, env: dict[str, str]
) -> None:
    """Nobody signed in to a deployed project: no local user, a NotAuthenticated naming the
    command to run."""
    env = {**env, "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{server.port}"}
    with pytest.raises(NotAuthenticated) as caught:
        Session("acme-prod", credentials, env).token()
    assert str(caught.value) == "not signed in to acme-prod: run `buddy login --project acme-prod`"
    assert server.requests == []


# The local user


def local_env(env: dict[str, str], server: LocalServer, uid: str) -> dict[str, str]:
    return {
        **env,
        "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{server.port}",
        "BUDDY_LOCAL_UID": uid,
    }


def signed_in_custom(received: Received) -> Reply:
    """The Auth emulator's answer to a fake custom token: tokens for the uid in it."""
    uid = json.loads(received.json()["token"])["uid"]
    body = {"idToken": jwt(user_id=uid), "refreshToken": f"r-{uid}", "expiresIn": "3600"}
    return Reply(200, json.dumps({"kind": "x", "isNewUser": True, **body}), "application/json")


def test_locally_nobody_signed_in_means_the_local_user_kept_for_later(
    credentials: Credentials, server: LocalServer, env: dict[str, str]
) -> None:
    """A demo- project with no account signs in BUDDY_LOCAL_UID with a fake custom token
    ({"uid": …}) and stores it, so that the next command is the same user, with no call."""
    server.route(CUSTOM_TOKEN, signed_in_custom)
    env = local_env(env, server, "u-1")
    assert Session("demo-x", credentials, env).token() == jwt(user_id="u-1")
    assert Session("demo-x", credentials, env).token() == jwt(user_id="u-1")
    [call] = server.requests
    assert call.json() == {"token": '{"uid": "u-1"}', "returnSecureToken": True}
    stored = credentials.account("demo-x")
    assert stored is not None
    assert (stored.uid, stored.provider, stored.auth_emulator) == ("u-1", "custom", server.base_url)
    me = accounts.identity("demo-x", credentials, env)
    assert (me.uid, me.name, me.source) == ("u-1", "the local user", "local user")


def test_the_local_user_is_made_again_for_another_uid_or_a_refused_refresh(
    credentials: Credentials, server: LocalServer, env: dict[str, str]
) -> None:
    """The stored local user is replaced when BUDDY_LOCAL_UID names another, and when its
    refresh is refused (an emulator restarted without its users)."""
    server.route(CUSTOM_TOKEN, signed_in_custom)
    server.route(REFRESH, refused("INVALID_REFRESH_TOKEN"))
    Session("demo-x", credentials, local_env(env, server, "u-1")).token()
    assert Session("demo-x", credentials, local_env(env, server, "u-2")).token() == jwt(
        user_id="u-2"
    )
    stored = credentials.account("demo-x")
    assert stored is not None
    credentials.save("demo-x", replace(stored, expires_at=0.0, id_token="stale"))
    assert Session("demo-x", credentials, local_env(env, server, "u-2")).token() == jwt(
        user_id="u-2"
    )
    assert server.paths == [
        "/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken",
        "/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken",
        "/securetoken.googleapis.com/v1/token",
        "/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken",
    ]


def test_a_signed_in_account_of_a_demo_project_is_kept_whatever_the_local_uid(
    credentials: Credentials, server: LocalServer, env: dict[str, str]
) -> None:
    """Only the local user is replaced: someone who signed in with `buddy login` stays, also
    a custom-token user of the dashboard (after `buddy open` signed the page in as a uid)."""
    credentials.save("demo-x", alice(server))
    assert Session("demo-x", credentials, local_env(env, server, "u-9")).token() == alice().id_token
    bob = replace(alice(server), uid="bob", provider="custom", email="", id_token=jwt(user_id="b"))
    credentials.save("demo-x", bob)
    me = accounts.identity("demo-x", credentials, local_env(env, server, "u-9"))
    assert (me.uid, me.name, me.source) == ("bob", "user bob", "buddy login")
    assert server.requests == []


def test_an_unreachable_auth_emulator_says_how_to_start_it(
    credentials: Credentials, env: dict[str, str]
) -> None:
    """Nothing listening where the Auth emulator should be: ApiUnreachable (exit 3), saying
    where and how to start it."""
    port = closed_port()
    env = {**env, "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{port}"}
    with pytest.raises(ApiUnreachable) as caught:
        Session("demo-x", credentials, env).token()
    assert str(caught.value) == (
        f"cannot reach the Auth emulator at http://127.0.0.1:{port} — start it with scripts/run.sh"
    )


def test_the_listener_reads_the_emulator_locally_and_firestore_as_the_user_elsewhere(
    credentials: Credentials, env: dict[str, str], server: LocalServer
) -> None:
    """A local account's Firestore emulator for a watch; for a deployed one, none (the
    listener then reads Firestore with the user's ID token)."""
    credentials.save("demo-x", alice(server))
    credentials.save("acme-prod", alice())
    assert BuddyClient.from_env(env, project="demo-x").firestore_emulator == "127.0.0.1:8181"
    assert BuddyClient.from_env(env, project="acme-prod").firestore_emulator is None
    assert BuddyClient.from_env(env, project="demo-y").firestore_emulator == "127.0.0.1:8080"


# whoami, logout, open


def test_whoami_names_the_stored_account_its_api_and_dashboard(
    credentials: Credentials, env: dict[str, str]
) -> None:
    """`buddy whoami` says who, on which project, through what; --json the same, no tokens."""
    credentials.save("acme-prod", alice(), current=True)
    shown = CliRunner().invoke(cli.app, ["whoami"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == [
        "Signed in as alice@example.com (uid alice-uid) to project acme-prod",
        "  through    buddy login (password)",
        "  API        http://api.alice.test",
        "  dashboard  http://dash.alice.test/",
    ]
    as_json = CliRunner().invoke(cli.app, ["whoami", "--json"])
    assert json.loads(as_json.output) == {
        "project": "acme-prod",
        "uid": "alice-uid",
        "name": "alice@example.com",
        "email": "alice@example.com",
        "display_name": "",
        "provider": "password",
        "source": "buddy login",
        "api_url": "http://api.alice.test",
        "dashboard_url": "http://dash.alice.test/",
    }


def test_whoami_with_buddy_id_token_names_the_token_s_user(
    credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BUDDY_ID_TOKEN wins in whoami too: its uid and email, read from the token."""
    credentials.save("acme-prod", alice(), current=True)
    monkeypatch.setenv("BUDDY_ID_TOKEN", jwt(user_id="bob-uid", email="bob@example.com"))
    shown = CliRunner().invoke(cli.app, ["whoami"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[:2] == [
        "Signed in as bob@example.com (uid bob-uid) to project acme-prod",
        "  through    the ID token in BUDDY_ID_TOKEN",
    ]


def test_logout_then_a_command_on_a_deployed_project_says_to_run_buddy_login(
    credentials: Credentials, env: dict[str, str]
) -> None:
    """After `buddy logout`, the file no longer holds the account, and `buddy list` on that
    project exits 1 saying to run buddy login."""
    credentials.save("acme-prod", alice(), current=True)
    out = CliRunner().invoke(cli.app, ["--project", "acme-prod", "logout"])
    assert out.exit_code == 0, out.output
    assert out.output == "Signed out of acme-prod (alice@example.com).\n"
    assert json.loads(credentials.path.read_text())["accounts"] == {}
    listed = CliRunner().invoke(
        cli.app, ["--project", "acme-prod", "--api-url", "http://x", "list"]
    )
    assert listed.exit_code == 1
    assert "error: not signed in to acme-prod: run `buddy login --project acme-prod`" in (
        listed.output
    )


def test_open_prints_the_dashboard_link_as_the_account(
    credentials: Credentials, env: dict[str, str]
) -> None:
    """`buddy open --no-browser` prints <dashboard>/?as=<uid> (and #m=<id> for a mission)."""
    credentials.save("acme-prod", alice(), current=True)
    shown = CliRunner().invoke(cli.app, ["open", "--no-browser"])
    assert shown.exit_code == 0, shown.output
    assert shown.output == "http://dash.alice.test/?as=alice-uid\n"
    assert cli.dashboard_link("http://d.test", "a b", "m_1") == "http://d.test/?as=a+b#m=m_1"
    with_api = "http://d.test/?api=http://a.test#old"
    assert cli.dashboard_link(with_api, "u", "m_1") == (
        "http://d.test/?api=http%3A%2F%2Fa.test&as=u#m=m_1"
    )
    assert cli.dashboard_link(with_api, "") == "http://d.test/?api=http%3A%2F%2Fa.test#old"
