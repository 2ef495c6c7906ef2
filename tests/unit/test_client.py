"""BuddyClient and the `buddy` CLI without emulators: httpx.MockTransport for the API and a fake
Firestore whose listener replays mission documents from a thread."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from buddy import cli
from buddy.client import (
    ApiUnreachable,
    BuddyClient,
    BuddyError,
    Conflict,
    EmulatorAuth,
    InvalidRequest,
    MissionNotFound,
    NotAuthenticated,
    RateLimited,
    ServiceUnavailable,
    credentials_path,
)

Handler = Callable[[httpx.Request], httpx.Response]
API = "http://api.test"


def client_with(handler: Handler, **kwargs: Any) -> BuddyClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return BuddyClient(API, kwargs.pop("token", "t0"), http=http, **kwargs)


def error(status: int, code: str, message: str) -> Handler:
    return lambda _: httpx.Response(status, json={"error": {"code": code, "message": message}})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --input


def test_inputs_are_json_when_they_parse_else_strings() -> None:
    """--input values that parse as JSON are typed; anything else stays the string given."""
    pairs = ["max_pages=3", "url=http://x.test/a?b=c", "strict=true", 'name="3"', "ids=[1,2]"]
    assert cli.parse_inputs([*pairs, "expression=2*(3+4)", "empty="]) == {
        "max_pages": 3,
        "url": "http://x.test/a?b=c",
        "strict": True,
        "name": "3",
        "ids": [1, 2],
        "expression": "2*(3+4)",
        "empty": "",
    }


@pytest.mark.parametrize("pair", ["novalue", "=3"])
def test_input_without_key_and_value_is_a_usage_error(pair: str) -> None:
    """An --input that is not key=value is refused as a bad parameter."""
    with pytest.raises(typer.BadParameter):
        cli.parse_inputs([pair])


# Errors


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (401, NotAuthenticated, "not signed in: Missing or invalid ID token"),
        (404, MissionNotFound, "Mission m_x not found"),
        (409, Conflict, "Mission m_x can't do that now: Cannot approve a mission that is running"),
        (400, InvalidRequest, "invalid request: Body is not valid JSON"),
        (413, InvalidRequest, "invalid request: Body over 64 KiB"),
        (415, InvalidRequest, "invalid request: Send application/json"),
        (422, InvalidRequest, "invalid request: budget_usd: must be > 0"),
        (429, RateLimited, "too many missions at once: You already have 10 missions queued"),
        (
            503,
            ServiceUnavailable,
            "the service is unavailable, nothing was changed; try again shortly: Pub/Sub down",
        ),
    ],
)
def test_error_answers_become_typed_errors_with_readable_messages(
    status: int, kind: type[BuddyError], message: str
) -> None:
    """Each API error status maps to one BuddyError subclass carrying the API's message."""
    api_message = message.split(": ", 1)[1] if status not in (404,) else message
    client = client_with(error(status, "some_code", api_message))
    with pytest.raises(kind) as caught:
        client.approve("m_x")
    assert str(caught.value) == message
    assert (caught.value.status, caught.value.code) == (status, "some_code")


def test_an_unexpected_error_body_is_still_one_readable_error() -> None:
    """An answer that is not the API's error shape (a proxy page) still becomes a BuddyError."""
    client = client_with(lambda _: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(BuddyError, match=r"^the API answered 502: <html>Bad Gateway</html>$"):
        client.list()


def test_a_closed_port_is_api_unreachable_with_the_actionable_message() -> None:
    """Connection refused becomes ApiUnreachable telling how to start the API."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiUnreachable) as caught:
        BuddyClient(url, token="t").list()
    assert str(caught.value) == f"cannot reach the API at {url} — start it with scripts/run.sh"


def test_cli_with_the_api_down_prints_one_line_and_exits_3(tmp_path: Path) -> None:
    """`buddy list` with nothing listening prints one error line, no traceback, exit 3."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "BUDDY_API_URL": url, "BUDDY_ID_TOKEN": "t", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "buddy.cli", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == cli.EXIT_UNREACHABLE
    assert done.stderr == f"error: cannot reach the API at {url} — start it with scripts/run.sh\n"
    assert done.stdout == ""


# Requests and auth


def test_create_sends_the_documented_body() -> None:
    """create() posts objective, scope.allowed_domains, budget_usd, tool and inputs."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"mission_id": "m_1", "status": "proposed"})

    mission = client_with(handler).create(
        "extract", ["example.com"], 0.5, "web_extract", {"max_pages": 2}
    )
    assert mission == {"mission_id": "m_1", "status": "proposed"}
    assert (seen[0].method, seen[0].url) == ("POST", httpx.URL(f"{API}/missions"))
    assert seen[0].headers["Authorization"] == "Bearer t0"
    assert json.loads(seen[0].content) == {
        "objective": "extract",
        "scope": {"allowed_domains": ["example.com"]},
        "budget_usd": 0.5,
        "tool": "web_extract",
        "inputs": {"max_pages": 2},
    }


class FakeAuth(EmulatorAuth):
    def __init__(self) -> None:
        self.renewals = 0

    def token(self) -> str:
        return "old"

    def renew(self) -> str:
        self.renewals += 1
        return f"new{self.renewals}"


def test_a_rejected_cached_token_is_renewed_once() -> None:
    """A 401 makes the client sign in again once and retry; a second 401 is NotAuthenticated."""
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer new1":
            return httpx.Response(200, json={"missions": []})
        return httpx.Response(401, json={"error": {"code": "unauthenticated", "message": "no"}})

    auth = FakeAuth()
    client = client_with(handler, token=None, auth=auth)
    assert client.list() == []
    assert tokens == ["Bearer old", "Bearer new1"]
    with pytest.raises(NotAuthenticated, match=r"^not signed in: no$"):
        client_with(handler, token="fixed").list()  # a given token is not renewed
    assert tokens[2:] == ["Bearer fixed"]


def test_emulator_sign_in_is_cached_0600_and_refreshed_for_the_same_user(tmp_path: Path) -> None:
    """Sign-up happens once; the cache file is private; renew() refreshes the same user."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("accounts:signUp"):
            assert json.loads(request.content) == {"returnSecureToken": True}
            return httpx.Response(200, json={"idToken": "i1", "refreshToken": "r1", "localId": "u"})
        assert request.content == b"grant_type=refresh_token&refresh_token=r1"
        return httpx.Response(200, json={"id_token": "i2", "refresh_token": "r2", "user_id": "u"})

    path = credentials_path({"XDG_CONFIG_HOME": str(tmp_path)})
    assert path == tmp_path / "buddy" / "credentials.json"
    http = httpx.Client(transport=httpx.MockTransport(handler))
    assert EmulatorAuth("auth.test", path, http=http).token() == "i1"
    assert EmulatorAuth("auth.test", path, http=http).token() == "i1"  # from the cache
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert EmulatorAuth("auth.test", path, http=http).renew() == "i2"
    assert json.loads(path.read_text()) == {"idToken": "i2", "refreshToken": "r2", "localId": "u"}
    assert calls == [
        "/identitytoolkit.googleapis.com/v1/accounts:signUp",
        "/securetoken.googleapis.com/v1/token",
    ]


def test_from_env_reads_the_documented_variables(tmp_path: Path) -> None:
    """from_env takes the URL, token and project from the environment, else local defaults."""
    given = BuddyClient.from_env(
        {"BUDDY_API_URL": "http://x:1/", "BUDDY_ID_TOKEN": "tok", "GCLOUD_PROJECT": "p"}
    )
    assert (given.api_url, given._current_token(), given.project_id) == ("http://x:1", "tok", "p")
    local = BuddyClient.from_env({"XDG_CONFIG_HOME": str(tmp_path)})
    assert (local.api_url, local.project_id) == ("http://127.0.0.1:5001", "demo-buddy")
    assert local._auth is not None and local._auth.host == "127.0.0.1:9099"


# Rendering


def step(index: int, name: str, percent: int, status: str, message: str, **extra: Any) -> dict:
    return {
        "step_name": name,
        "step_index": index,
        "total_steps": 7,
        "progress_percent": percent,
        "status": status,
        "message": message,
        "timestamp": "2025-01-01T00:00:00Z",
        "duration_seconds": 0.0,
        **extra,
    }


def snapshot(status: str, percent: int, current: dict | None, done: int = 0, **extra: Any) -> dict:
    names = ["verification", "intent_classification", "budget_check", "tool_selection"]
    names += ["tool_execution", "artifact_creation", "finalize"]
    ends = [10, 30, 40, 55, 80, 90, 100]
    completed = [
        step(i + 1, names[i], ends[i], "completed", f"{names[i]} done") for i in range(done)
    ]
    return {
        "mission_id": "m_1",
        "status": status,
        "progress_percent": percent,
        "current_step": current,
        "completed_steps": completed,
        "elapsed_seconds": 1.5,
        "estimated_time_remaining": 2.0,
        "attempt": 1,
        "error": None,
        "result_summary": None,
        "artifact_reference": None,
        "cancel_requested": False,
        "event_seq": 1,
        **extra,
    }


def test_progress_line_renders_percent_step_and_message() -> None:
    """A snapshot renders as `[ 55%] Step 5/7 tool_execution — message`."""
    running = snapshot("running", 55, step(5, "tool_execution", 55, "started", "Running calculate"))
    assert cli.progress_line(running) == "[ 55%] Step 5/7 tool_execution — Running calculate"


def test_progress_line_shows_sub_step_detail_and_retries() -> None:
    """In-step detail (pages 3/5) and a retry's attempt number are part of the line."""
    detail = {"done": 3, "total": 5, "unit": "pages"}
    current = step(5, "tool_execution", 64, "started", "Fetching", detail=detail)
    line = cli.progress_line(snapshot("running", 64, current, 4, attempt=2))
    assert line == "[ 64%] Step 5/7 tool_execution — Fetching · pages 3/5 · attempt 2"
    assert cli.progress_line(snapshot("queued", 0, None)) == "[  0%] queued — waiting for a worker"


def test_step_lines_show_each_step_once_including_ones_the_listener_skipped() -> None:
    """Every step is printed once, skipped ones included, and a failure is printed again."""
    seen: set[Any] = set()
    first = snapshot(
        "running", 20, step(2, "intent_classification", 20, "started", "Classifying"), 1
    )
    assert cli.step_lines(first, seen) == [
        "[ 10%] Step 1/7 verification — verification done",
        "[ 20%] Step 2/7 intent_classification — Classifying",
    ]
    assert cli.step_lines(first, seen) == []
    failed = step(4, "tool_selection", 40, "failed", "No tool fits")
    lines = cli.step_lines(snapshot("failed", 40, failed, 3), seen)
    assert lines == [
        "[ 40%] Step 3/7 budget_check — budget_check done",
        "[ 40%] Step 4/7 tool_selection — No tool fits",
    ]


@pytest.mark.parametrize(("status", "code"), [("completed", 0), ("failed", 1), ("cancelled", 2)])
def test_exit_code_follows_the_final_status(status: str, code: int) -> None:
    """Exit status: 0 completed, 1 failed, 2 cancelled."""
    assert cli.exit_code(status) == code


def test_outcome_lines_name_the_result_or_the_failed_step() -> None:
    """The end shows the result summary and artifact title, or where and why it failed."""
    artifact = {"artifact_id": "a_m_1", "title": "2*(3+4) = 14", "type": "calculation"}
    done = snapshot("completed", 100, None, 7, result_summary="2*(3+4) = 14")
    assert cli.outcome_lines({**done, "artifact_reference": artifact}) == [
        "Completed in 1.5s: 2*(3+4) = 14",
        "Artifact: 2*(3+4) = 14 (buddy show m_1)",
    ]
    error = {"step_name": "budget_check", "code": "step_failed", "message": "Budget exceeded: x"}
    failed = snapshot("failed", 40, None, 2, error=error)
    assert cli.outcome_lines(failed) == ["Failed at budget_check: Budget exceeded: x"]


# watch, over a fake listener


class FakeSubscription:
    def __init__(self, docs: list[dict | None], on_change: Callable[..., None]) -> None:
        self.is_active = True
        self.unsubscribed = threading.Event()
        # Firestore calls back on its own thread.
        self._thread = threading.Thread(target=self._play, args=(docs, on_change), daemon=True)
        self._thread.start()

    def _play(self, docs: list[dict | None], on_change: Callable[..., None]) -> None:
        for data in docs:
            on_change(data)

    def unsubscribe(self) -> None:
        self.is_active = False
        self.unsubscribed.set()


class FakeListener:
    """The client's listener port: plays the given documents to each subscription."""

    def __init__(self, docs: list[dict | None]) -> None:
        self.docs = docs
        self.subscriptions: list[FakeSubscription] = []
        self.watched: list[str] = []

    def listen(self, mission_id: str, on_change: Callable[..., None]) -> FakeSubscription:
        self.watched.append(mission_id)
        self.subscriptions.append(FakeSubscription(self.docs, on_change))
        return self.subscriptions[-1]


def mission_doc(status: str, percent: int, current: dict | None, done: int, **record: Any) -> dict:
    snap = snapshot(status, percent, current, done)
    tracker = {
        "progress_percent": percent,
        "current_step": current,
        "completed_steps": snap["completed_steps"],
        "elapsed_seconds": 1.5,
        "estimated_time_remaining": 2.0,
    }
    return {
        "mission_id": "m_1",
        "status": status,
        "event_seq": done + 3,
        "execution_record": {"progress_tracker": tracker, "attempt": 1, **record},
    }


CALCULATE_RUN = [
    {"mission_id": "m_1", "status": "approved", "event_seq": 2},
    mission_doc("running", 5, step(1, "verification", 5, "started", "Verifying"), 0),
    mission_doc("running", 55, step(5, "tool_execution", 55, "started", "Running calculate"), 4),
    mission_doc(
        "completed",
        100,
        None,
        7,
        result_summary="2*(3+4) = 14",
        artifact_reference={"artifact_id": "a_m_1", "title": "2*(3+4) = 14", "type": "calc"},
    ),
]


def mission_api(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"mission_id": "m_1", "status": "approved"})


def test_watch_yields_listener_snapshots_until_terminal_and_unsubscribes() -> None:
    """watch() yields what the listener delivers, stops after the terminal one, unsubscribes."""
    listener = FakeListener(CALCULATE_RUN)
    client = client_with(mission_api, listener=listener)
    snapshots = list(client.watch("m_1", timeout=5))
    assert [s["progress_percent"] for s in snapshots] == [0, 5, 55, 100]
    assert snapshots[-1]["status"] == "completed"
    assert snapshots[-1]["result_summary"] == "2*(3+4) = 14"
    assert listener.watched == ["m_1"]
    assert listener.subscriptions[0].unsubscribed.is_set()


def test_watch_of_a_vanished_mission_raises_and_unsubscribes() -> None:
    """A listener reporting no document ends the watch with MissionNotFound."""
    listener = FakeListener([None])
    with pytest.raises(MissionNotFound):
        list(client_with(mission_api, listener=listener).watch("m_1", timeout=5))
    assert listener.subscriptions[0].unsubscribed.is_set()


def test_cli_watch_prints_every_step_and_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy watch` off a terminal prints one line per step, the result, and exits 0."""
    client = client_with(mission_api, listener=FakeListener(CALCULATE_RUN))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["watch", "m_1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "[  0%] approved — waiting to be executed"
    steps = [line for line in lines if "] Step " in line]
    assert [s.split("Step ")[1][:3] for s in steps] == [f"{i}/7" for i in range(1, 8)]
    assert lines[-2:] == [
        "Completed in 1.5s: 2*(3+4) = 14",
        "Artifact: 2*(3+4) = 14 (buddy show m_1)",
    ]


def test_cli_watch_json_prints_one_line_per_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """`buddy --json watch` prints JSON lines, one per snapshot."""
    client = client_with(mission_api, listener=FakeListener(CALCULATE_RUN))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["--json", "watch", "m_1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["progress_percent"] for r in rows] == [0, 5, 55, 100]


def test_cli_watch_of_a_failed_mission_names_the_step_and_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed mission ends with `Failed at <step>: <message>` and exit status 1."""
    message = "Budget exceeded: $0.01 > $0.005 limit"
    failing = step(3, "budget_check", 30, "failed", message)
    error = {"step_name": "budget_check", "code": "step_failed", "message": message}
    docs = [mission_doc("failed", 30, failing, 2, error=error)]
    client = client_with(mission_api, listener=FakeListener(docs))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["watch", "m_1"])
    assert result.exit_code == 1
    assert f"[ 30%] Step 3/7 budget_check — {message}" in result.output
    assert result.output.splitlines()[-1] == f"Failed at budget_check: {message}"


def test_cli_turns_a_conflict_into_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BuddyError in a command is one `error:` line and exit status 1."""
    client = client_with(error(409, "conflict", "Cannot approve a mission that is completed"))
    monkeypatch.setattr(cli, "_client", lambda: client)
    result = CliRunner().invoke(cli.app, ["approve", "m_1"])
    assert result.exit_code == 1
    expected = "error: Mission m_1 can't do that now: Cannot approve a mission that is completed"
    assert result.output.strip() == expected
