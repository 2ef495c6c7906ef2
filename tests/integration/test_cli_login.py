"""`buddy login` end to end: the CLI (a subprocess) waits on 127.0.0.1, the dashboard in
Chromium signs up an email user and allows the CLI, and from then on the CLI and the dashboard
are one identity: a mission run from the CLI shows live in that user's dashboard, `buddy open`
links to it, and the stored token is refreshed when it expires."""

from __future__ import annotations

import json
import queue
import re
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect

from buddy.config import PROJECT_ID

from .conftest import DASHBOARD, Stack, User, shell_env, sign_up

PASSWORD = "correct-horse-9"
REFUSED = "Refused: this sign-in did not come from your `buddy login` (state mismatch)"


class Running:
    """A `buddy` command still running: its output lines as they come, then how it ended."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "buddy.cli", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Waits for a line of stdout matching pattern."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        self.process.kill()
        self.process.wait(10)
        raise AssertionError(f"no line matching {pattern!r}: {self.lines}, {self.stderr()}")

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Its exit status, all of its stdout and its stderr."""
        code = self.process.wait(timeout)
        while (line := self._new.get(timeout=5)) is not None:
            self.lines.append(line)
        return code, "\n".join(self.lines), self.stderr()

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read() if self.process.poll() is not None else ""


@dataclass
class Cli:
    """`buddy` as one person's shell runs it: a config directory and a local uid of the
    test's own, no BUDDY_API_URL (the account says where its API is), no emulator variables."""

    env: dict[str, str]
    config: Path

    def __call__(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "buddy.cli", *args],
            env={**self.env, **extra},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def start(self, *args: str) -> Running:
        return Running(self.env, *args)

    @property
    def credentials(self) -> Path:
        return self.config / "buddy" / "credentials.json"

    def stored(self) -> dict:
        """The account stored for the local project."""
        return dict(json.loads(self.credentials.read_text())["accounts"][PROJECT_ID])


@pytest.fixture
def cli(stack: Stack, tmp_path: Path) -> Cli:
    env = shell_env(tmp_path, f"cli-login-{uuid.uuid4().hex[:12]}")
    env["NO_COLOR"] = "1"
    return Cli(env, tmp_path)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: nobody signed in to the dashboard yet."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def email() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}@example.com"


def with_api(url: str, stack: Stack) -> str:
    """The URL with ?api= pointing the dashboard at this test stack's API (before any #)."""
    base, hash_, fragment = url.partition("#")
    return f"{base}{'&' if '?' in base else '?'}api={stack.api_url}{hash_}{fragment}"


def allow_in_the_dashboard(context: BrowserContext, url: str, email: str, stack: Stack) -> Page:
    """Opens the CLI's sign-in URL, switches from the local user to a new email account
    (Create account), and allows the CLI; the page then shows the CLI's answer."""
    page = context.new_page()
    page.goto(with_api(url, stack))
    # Locally the page signs in as the local user first: that is who it offers.
    text = page.locator("#cli-login-text")
    expect(text).to_contain_text("asks to act as the local user", timeout=20_000)
    page.click("#cli-login-switch")
    expect(page.locator("#signin")).to_be_visible(timeout=10_000)
    page.fill("#signin-email", email)
    page.fill("#signin-password", PASSWORD)
    page.click("#signup-email-submit")
    expect(text).to_contain_text(f"The Buddy CLI on this computer asks to act as {email}.")
    page.click("#cli-login-allow")
    return page


def log_in(cli: Cli, context: BrowserContext, email: str, stack: Stack) -> tuple[str, Page]:
    """`buddy login --no-browser` signed in as `email` in the dashboard; the uid, and the page
    that shows the CLI's answer."""
    login = cli.start("login", "--no-browser", "--timeout", "60")
    url = login.line(r"^Open this URL to sign in: (\S+)$").group(1)
    page = allow_in_the_dashboard(context, url, email, stack)
    code, out, err = login.finish()
    assert code == 0, out + err
    said = re.search(
        rf"^Signed in as {re.escape(email)} \(uid (\S+)\) to project (\S+)\.$", out, re.M
    )
    assert said, out
    assert said.group(2) == PROJECT_ID
    return said.group(1), page


def test_login_in_the_dashboard_signs_the_cli_in_as_that_account(
    cli: Cli, context: BrowserContext, email: str, stack: Stack
) -> None:
    """`buddy login` prints a dashboard URL; signing up there and choosing Allow ends the
    login (exit 0), the tab says so, and `buddy whoami` names the email account, stored in
    a private file."""
    uid, page = log_in(cli, context, email, stack)
    expect(page.locator("body")).to_contain_text(
        f"Signed in to the Buddy CLI as {email}. You can close this tab."
    )
    whoami = cli("whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.splitlines()[:2] == [
        f"Signed in as {email} (uid {uid}) to project {PROJECT_ID}",
        "  through    buddy login (password)",
    ]
    assert f"  API        {stack.api_url}" in whoami.stdout.splitlines()
    assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600
    stored = cli.stored()
    assert (stored["uid"], stored["email"], stored["api_url"]) == (uid, email, stack.api_url)
    listed = cli("--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"missions": []}  # a new account: nothing yet


def test_a_post_with_the_wrong_state_is_refused_and_the_login_goes_on(
    cli: Cli, context: BrowserContext, email: str, stack: Stack
) -> None:
    """Another page posting to the CLI's callback without the state gets 400 and the
    refusal; the CLI keeps waiting, and the real sign-in then succeeds."""
    login = cli.start("login", "--no-browser", "--timeout", "60")
    url = login.line(r"^Open this URL to sign in: (\S+)$").group(1)
    port = re.search(r"cli_port=(\d+)", url)
    assert port
    forged = {"state": "x" * 43, "refresh_token": "r", "id_token": "t", "uid": "mallory"}
    forged |= {"api_key": "k", "project_id": PROJECT_ID}
    answer = requests.post(f"http://127.0.0.1:{port.group(1)}/callback", data=forged, timeout=10)
    assert answer.status_code == 400
    assert REFUSED in answer.text
    assert login.process.poll() is None  # still waiting
    allow_in_the_dashboard(context, url, email, stack)
    code, out, err = login.finish()
    assert code == 0, out + err
    assert cli.stored()["email"] == email


def test_an_expired_or_rejected_token_is_refreshed_by_the_next_command(
    cli: Cli, context: BrowserContext, email: str, stack: Stack
) -> None:
    """A stored token past its expiry (and garbage besides) is refreshed before `buddy list`
    sends it; one the API rejects before its expiry is refreshed after the 401. Both times
    the command works and the file holds the new token."""
    log_in(cli, context, email, stack)
    data = json.loads(cli.credentials.read_text())
    for expires_at in (time.time() - 60, time.time() + 3000):
        data["accounts"][PROJECT_ID] |= {"id_token": "garbage", "expires_at": expires_at}
        cli.credentials.write_text(json.dumps(data))
        listed = cli("--json", "list")
        assert listed.returncode == 0, listed.stderr
        stored = cli.stored()
        assert stored["id_token"] != "garbage"
        assert stored["expires_at"] > time.time() + 3000
        assert stored["email"] == email
        data = json.loads(cli.credentials.read_text())


def test_a_mission_run_from_the_cli_shows_live_in_the_same_user_s_dashboard(
    cli: Cli, context: BrowserContext, email: str, stack: Stack
) -> None:
    """After `buddy login`, `buddy run` makes a mission of that account: the dashboard
    already open as the same user shows its card appear and reach completed, unreloaded."""
    log_in(cli, context, email, stack)
    page = context.new_page()
    page.goto(with_api(DASHBOARD, stack))
    expect(page.locator("#auth-status")).to_contain_text(f"Signed in as {email}", timeout=20_000)
    expect(page.locator("#connection")).to_contain_text("live", timeout=20_000)
    run = cli.start("run", "calculate 2*(3+4)")
    mission_id = run.line(r"^Mission (\S+) created$").group(1)
    card = page.locator(f"article.mission[data-mission-id='{mission_id}']").first
    expect(card).to_be_visible(timeout=20_000)
    expect(card).to_have_attribute("data-status", "completed", timeout=30_000)
    code, out, err = run.finish()
    assert code == 0, out + err
    assert "= 14" in out


def test_buddy_open_prints_a_link_that_shows_the_mission(
    cli: Cli, context: BrowserContext, email: str, stack: Stack
) -> None:
    """`buddy open ID --no-browser` prints <dashboard>/?as=<uid>#m=<id>; opened, the
    dashboard shows that mission's details, as the same account."""
    uid, _ = log_in(cli, context, email, stack)
    made = cli("--json", "create", "calculate 11*13")
    assert made.returncode == 0, made.stderr
    mission_id = json.loads(made.stdout)["mission_id"]
    opened = cli("open", mission_id, "--no-browser")
    assert opened.returncode == 0, opened.stderr
    url = opened.stdout.strip()
    assert url == f"{DASHBOARD}?as={uid}#m={mission_id}"
    page = context.new_page()
    page.goto(with_api(url, stack))
    expect(page.locator("#auth-status")).to_contain_text(f"Signed in as {email}", timeout=20_000)
    expect(page.locator("#detail-heading")).to_have_text("calculate 11*13", timeout=20_000)
    expect(page.locator("#detail-meta")).to_contain_text("proposed")
    gone = cli("open", "m_does_not_exist", "--no-browser")
    assert gone.returncode == 1
    assert "not found" in gone.stderr and gone.stdout == ""


def test_buddy_id_token_of_another_user_wins_over_the_login(
    cli: Cli, context: BrowserContext, email: str, stack: Stack
) -> None:
    """With BUDDY_ID_TOKEN set, commands act as its user, not the account signed in."""
    log_in(cli, context, email, stack)
    bob_uid, bob_token = sign_up()
    bob = User(bob_uid, bob_token, stack.api_url)
    bobs = bob.create("calculate 5*5")["mission_id"]
    as_bob = cli("--json", "list", BUDDY_ID_TOKEN=bob_token)
    assert as_bob.returncode == 0, as_bob.stderr
    assert [m["mission_id"] for m in json.loads(as_bob.stdout)["missions"]] == [bobs]
    who = json.loads(cli("whoami", "--json", BUDDY_ID_TOKEN=bob_token).stdout)
    assert (who["uid"], who["source"]) == (bob_uid, "BUDDY_ID_TOKEN")
    mine = cli("--json", "list")
    assert json.loads(mine.stdout) == {"missions": []}


def test_after_logout_deployed_projects_want_a_login_and_local_ones_the_local_user(
    cli: Cli, context: BrowserContext, email: str, stack: Stack
) -> None:
    """`buddy logout` forgets the account: on a deployed-looking project a command says to
    run buddy login (exit 1); locally the CLI acts as the local user again, who does not see
    the account's missions."""
    log_in(cli, context, email, stack)
    made = cli("--json", "create", "calculate 1+1")
    assert made.returncode == 0, made.stderr
    out = cli("logout")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"Signed out of {PROJECT_ID} ({email})."
    deployed = cli("--project", "acme-prod", "--api-url", stack.api_url, "list")
    assert deployed.returncode == 1
    assert deployed.stderr.strip() == (
        "error: not signed in to acme-prod: run `buddy login --project acme-prod`"
    )
    no_api = cli("--project", "acme-prod", "list")
    assert no_api.returncode == 1
    assert "run buddy login --project acme-prod or pass --api-url" in no_api.stderr
    local_uid = cli.env["BUDDY_LOCAL_UID"]
    who = cli("whoami")
    assert who.returncode == 0, who.stderr
    assert who.stdout.splitlines()[0] == (
        f"Signed in as the local user (uid {local_uid}) to project {PROJECT_ID}"
    )
    listed = cli("--api-url", stack.api_url, "--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"missions": []}
