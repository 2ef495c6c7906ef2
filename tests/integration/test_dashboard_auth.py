"""Signing in to the dashboard, in a real Chromium against the Auth emulator: email and
password, Google (the emulator's fake provider), anonymous and its upgrade, the local user,
`?as=` links and the page that hands a sign-in to the Buddy CLI."""

from __future__ import annotations

import json
import os
import re
import secrets
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, Route, expect

from ..localserver import LocalServer, Reply
from .conftest import DASHBOARD, Stack, User, sign_up, without_local_user

AUTH_HOST = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
PASSWORD = "correct horse battery"
SIGNED_IN = 20_000  # ms: the first load bundles the SDK and asks the emulator

# This machine is offline, and Firebase's popup sign-in (the SDK in the page, and the Auth
# emulator's helper iframe) loads Google's gapi from https://apis.google.com/js/api.js to talk
# across frames. This stand-in gives both sides that one channel, gapi.iframes over
# postMessage, and nothing more: the SDK, the emulator's popup and its iframe run unchanged.
GAPI_STAND_IN = """
(() => {
  const handlers = {};
  const queued = {};
  const callbacks = new Map();
  let sent = 0;

  function answer(source, message) {
    let result;
    try { result = handlers[message.type](message.data); } catch (error) { console.warn(error); }
    source.postMessage({ gapiStandIn: "reply", id: message.id, responses: [result] }, "*");
  }

  window.addEventListener("message", (event) => {
    const message = event.data;
    if (!message || typeof message !== "object") return;
    if (message.gapiStandIn === "send") {
      if (handlers[message.type]) answer(event.source, message);
      else (queued[message.type] ||= []).push([event.source, message]);
    } else if (message.gapiStandIn === "reply") {
      const callback = callbacks.get(message.id);
      callbacks.delete(message.id);
      try { callback?.(message.responses); } catch (error) { console.warn(error); }
    }
  });

  function channel(target, ready) {
    return {
      register(type, handler) {
        handlers[type] = handler;
        for (const [source, message] of queued[type] || []) answer(source, message);
        delete queued[type];
      },
      send(type, data, callback) {
        const id = `${Math.random()}:${sent++}`;
        callbacks.set(id, callback);
        target().postMessage({ gapiStandIn: "send", id, type, data }, "*");
      },
      restyle: () => Promise.resolve(),
      ping: (callback) => ready.then(() => callback && callback()),
    };
  }

  const context = {
    open(options, onOpen) {
      const frame = document.createElement("iframe");
      const { style = {}, ...attributes } = options.attributes || {};
      Object.assign(frame.style, style);
      for (const [name, value] of Object.entries(attributes)) frame.setAttribute(name, value);
      const loaded = new Promise((resolve) => {
        frame.addEventListener("load", resolve, { once: true });
      });
      frame.src = options.url;
      options.where.appendChild(frame);
      const iframe = channel(() => frame.contentWindow, loaded);
      return onOpen ? onOpen(iframe) : Promise.resolve(iframe);
    },
    getParentIframe: () => channel(() => window.parent, Promise.resolve()),
  };
  window.gapi = {
    load: (name, options) => setTimeout(() => (options.callback || options)(), 0),
    iframes: {
      getContext: () => context,
      Iframe: function Iframe() {},
      CROSS_ORIGIN_IFRAMES_FILTER: "any",
    },
  };
  const onload = new URL(document.currentScript.src).searchParams.get("onload");
  setTimeout(() => {
    if (onload) window[onload]();
    if (window.gapi_onload) window.gapi_onload();
  }, 0);
})();
"""
# The emulator's popup styles itself from a CDN: refused at once instead of timing out.
CDN = re.compile(r"^https://(unpkg\.com|fonts\.googleapis\.com|fonts\.gstatic\.com)/")

CLI_FIELDS = {
    "state",
    "refresh_token",
    "id_token",
    "uid",
    "email",
    "display_name",
    "provider",
    "api_key",
    "project_id",
    "api_url",
    "auth_emulator",
    "firestore_emulator",
    "dashboard_url",
}


def serve_gapi(route: Route) -> None:
    route.fulfill(body=GAPI_STAND_IN, content_type="text/javascript")


def auth_emulator(operation: str, body: dict[str, object]) -> dict[str, object]:
    """One call to the Auth emulator's REST API, as a script or another client would make."""
    response = requests.post(
        f"http://{AUTH_HOST}/identitytoolkit.googleapis.com/v1/accounts:{operation}?key=any",
        json={**body, "returnSecureToken": True},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def new_email() -> str:
    return f"person-{uuid.uuid4().hex[:10]}@example.com"


def make_account(email: str, password: str = PASSWORD) -> str:
    """An email and password account made elsewhere (another browser, say); its uid."""
    return str(auth_emulator("signUp", {"email": email, "password": password})["localId"])


def as_person(stack: Stack, email: str, password: str = PASSWORD) -> User:
    """The API as the owner of this email account."""
    body = auth_emulator("signInWithPassword", {"email": email, "password": password})
    return User(str(body["localId"]), str(body["idToken"]), stack.api_url)


def as_uid(stack: Stack, uid: str) -> User:
    """The API as this uid, signed in with the emulator's fake custom token."""
    body = auth_emulator("signInWithCustomToken", {"token": json.dumps({"uid": uid})})
    return User(uid, str(body["idToken"]), stack.api_url)


def uid_on(page: Page) -> str:
    title = page.locator("#auth-status").get_attribute("title") or ""
    assert title.startswith("uid "), title
    return title.removeprefix("uid ")


def mission_on(page: Page, objective: str) -> Locator:
    return page.locator("#pipeline article.mission").filter(has_text=objective)


def propose(page: Page, objective: str) -> None:
    page.fill("#objective", objective)
    page.get_by_role("button", name="Propose mission").click()
    expect(mission_on(page, objective)).to_have_count(1, timeout=10_000)


def fill_email_form(page: Page, email: str, password: str) -> None:
    page.fill("#signin-email", email)
    page.fill("#signin-password", password)


def create_account(page: Page, email: str, password: str = PASSWORD) -> None:
    fill_email_form(page, email, password)
    page.click("#signup-email-submit")


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    fill_email_form(page, email, password)
    page.click("#signin-email-submit")


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#auth-status")).to_have_text("Signed out")


@pytest.fixture
def open_page(browser: Browser, stack: Stack) -> Iterator[Callable[..., Page]]:
    """Opens the dashboard in a fresh profile, by default with nobody signed in (the config
    without its local user); `local_user=True` serves the real config."""
    contexts = []

    def open_(query: str = "", *, local_user: bool = False) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        if not local_user:
            context.route("**/buddy-config.json", without_local_user)
        context.route("https://apis.google.com/js/api.js*", serve_gapi)
        context.route(CDN, lambda route: route.abort())
        page = context.new_page()
        page.goto(f"{DASHBOARD}?api={stack.api_url}{query}")
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def cli() -> Iterator[LocalServer]:
    """Stands where `buddy login` listens: records the dashboard's POST and answers a page."""
    server = LocalServer()
    server.route(
        "POST /callback",
        Reply(body="<title>Buddy CLI</title><p>Signed in to the Buddy CLI. Close this tab.</p>"),
    )
    server.start()
    yield server
    server.stop()


def test_email_account_sign_up_sign_out_and_back_shows_its_missions(
    open_page: Callable[..., Page], stack: Stack
) -> None:
    """A new email account is made from the panel; signed out, its missions are gone from the
    page; signed in again, they are listed again."""
    page = open_page()
    expect(page.locator("#signin")).to_be_visible(timeout=SIGNED_IN)
    expect(page.locator("#main")).to_be_hidden()
    email = new_email()
    create_account(page, email)
    expect(page.locator("#auth-status")).to_have_text(f"Signed in as {email}", timeout=SIGNED_IN)
    expect(page.locator("#upgrade")).to_be_hidden()
    objective = f"calculate 6*7 for {email}"
    as_person(stack, email).create(objective)
    expect(mission_on(page, objective)).to_have_count(1, timeout=10_000)

    sign_out(page)
    expect(page.locator("#main")).to_be_hidden()
    expect(page.locator("article.mission")).to_have_count(0)

    sign_in(page, email)
    expect(page.locator("#auth-status")).to_have_text(f"Signed in as {email}", timeout=SIGNED_IN)
    expect(mission_on(page, objective)).to_have_count(1, timeout=10_000)
    expect(page.locator("#connection")).to_have_text("live")


@pytest.mark.parametrize(
    ("existing", "action", "typed", "message"),
    [
        (True, "#signin-email-submit", "not the password", "That password is not right"),
        (False, "#signin-email-submit", PASSWORD, "There is no account with this email"),
        (True, "#signup-email-submit", PASSWORD, "An account with this email already exists"),
        (False, "#signup-email-submit", "short", "Choose a longer password"),
    ],
    ids=["wrong-password", "no-such-account", "email-in-use", "weak-password"],
)
def test_refused_sign_in_is_told_in_words(
    open_page: Callable[..., Page], existing: bool, action: str, typed: str, message: str
) -> None:
    """A refused sign-in or sign-up says what went wrong in a sentence, never Firebase's
    error text, and nobody is signed in."""
    email = new_email()
    if existing:
        make_account(email)
    page = open_page()
    fill_email_form(page, email, typed)
    page.click(action)
    error = page.locator("#signin-error")
    expect(error).to_contain_text(message, timeout=SIGNED_IN)
    expect(error).not_to_contain_text("Firebase")
    expect(error).not_to_contain_text("auth/")
    expect(page.locator("#auth-status")).to_have_text("Signed out")
    expect(page.locator("#main")).to_be_hidden()


def test_forgot_password_says_a_link_was_sent(open_page: Callable[..., Page]) -> None:
    """The "Forgot password?" button says a reset link went out, with the same words whether or not
    the email has an account."""
    page = open_page()
    expect(page.locator("#signin")).to_be_visible(timeout=SIGNED_IN)
    with_account = new_email()
    make_account(with_account)
    for email in (new_email(), with_account):
        page.fill("#signin-email", email)
        page.get_by_role("button", name="Forgot password?").click()
        expect(page.locator("#signin-status")).to_have_text(
            f"If an account exists for {email}, a link to reset its password was sent to it."
        )
        expect(page.locator("#signin-error")).to_have_text("")


def google_popup(page: Page, email: str, name: str) -> None:
    """Goes through the Auth emulator's fake Google sign-in window as a person would."""
    with page.expect_popup() as opening:
        page.get_by_role("button", name="Continue with Google").click()
    popup = opening.value
    popup.get_by_text("Add new account").click()
    popup.fill("#email-input", email)
    popup.fill("#display-name-input", name)
    popup.click("#sign-in")
    popup.wait_for_event("close", timeout=SIGNED_IN)


def test_google_sign_in_through_the_emulators_popup(open_page: Callable[..., Page]) -> None:
    """The "Continue with Google" button opens the provider's window; once an account is
    chosen there, the dashboard shows that Google identity."""
    page = open_page()
    expect(page.locator("#signin")).to_be_visible(timeout=SIGNED_IN)
    email = new_email()
    google_popup(page, email, "Grace Hopper")
    expect(page.locator("#auth-status")).to_have_text(f"Signed in as {email}", timeout=SIGNED_IN)
    expect(page.locator("#main")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("live", timeout=SIGNED_IN)


def test_anonymous_user_upgrades_with_email_and_keeps_missions(
    open_page: Callable[..., Page], stack: Stack
) -> None:
    """An anonymous user makes a mission, then creates an account from the upgrade panel:
    same uid, the mission still listed, and still there after signing out and back in."""
    page = open_page()
    page.click("#signin-anonymous", timeout=SIGNED_IN)
    expect(page.locator("#auth-status")).to_have_text("Signed in anonymously", timeout=SIGNED_IN)
    uid = uid_on(page)
    objective = f"calculate 2+2 before an account {uuid.uuid4().hex[:6]}"
    propose(page, objective)

    page.get_by_role("button", name="Create an account to keep your missions").click()
    expect(page.locator("#signin-heading")).to_have_text("Create an account to keep your missions")
    expect(page.locator("#signin-anonymous")).to_be_hidden()
    email = new_email()
    create_account(page, email)
    expect(page.locator("#auth-status")).to_have_text(f"Signed in as {email}", timeout=SIGNED_IN)
    expect(page.locator("#upgrade")).to_be_hidden()
    assert uid_on(page) == uid
    assert as_person(stack, email).uid == uid
    expect(mission_on(page, objective)).to_have_count(1)

    sign_out(page)
    sign_in(page, email)
    expect(page.locator("#auth-status")).to_have_text(f"Signed in as {email}", timeout=SIGNED_IN)
    expect(mission_on(page, objective)).to_have_count(1, timeout=10_000)


def test_anonymous_user_upgrades_with_google_and_keeps_uid(
    open_page: Callable[..., Page],
) -> None:
    """The upgrade panel's "Continue with Google" links the Google account: same uid."""
    page = open_page()
    page.click("#signin-anonymous", timeout=SIGNED_IN)
    expect(page.locator("#auth-status")).to_have_text("Signed in anonymously", timeout=SIGNED_IN)
    uid = uid_on(page)
    page.click("#upgrade")
    email = new_email()
    google_popup(page, email, "Ada Lovelace")
    expect(page.locator("#auth-status")).to_have_text(f"Signed in as {email}", timeout=SIGNED_IN)
    assert uid_on(page) == uid
    expect(page.locator("#main")).to_be_visible()


def test_upgrade_with_an_email_that_has_an_account_says_so(
    open_page: Callable[..., Page],
) -> None:
    """Upgrading with an email that already has an account says to sign in to it instead,
    and the anonymous session stays as it was."""
    email = new_email()
    make_account(email)
    page = open_page()
    page.click("#signin-anonymous", timeout=SIGNED_IN)
    expect(page.locator("#auth-status")).to_have_text("Signed in anonymously", timeout=SIGNED_IN)
    uid = uid_on(page)
    page.click("#upgrade")
    create_account(page, email)
    expect(page.locator("#signin-error")).to_have_text(
        "That account already exists. Sign in to it instead; the missions of this anonymous "
        "session stay with it."
    )
    page.get_by_role("button", name="Back to my missions").click()
    expect(page.locator("#main")).to_be_visible()
    expect(page.locator("#auth-status")).to_have_text("Signed in anonymously")
    assert uid_on(page) == uid


def test_local_user_by_default_sees_cli_missions_live(
    open_page: Callable[..., Page], stack: Stack
) -> None:
    """With the local stack's config, a fresh browser is the local user at once, and a
    mission that user makes through the API (as the CLI does) appears live."""
    page = open_page(local_user=True)
    expect(page.locator("#auth-status")).to_have_text(
        "Signed in as the local user (shared with the CLI)", timeout=SIGNED_IN
    )
    assert uid_on(page) == "local-user"
    expect(page.locator("#connection")).to_have_text("live", timeout=SIGNED_IN)
    local = as_uid(stack, "local-user")
    objective = f"calculate 3*3 from the CLI {uuid.uuid4().hex[:6]}"
    mission_id = local.create(objective)["mission_id"]
    try:
        expect(mission_on(page, objective)).to_have_count(1, timeout=10_000)
    finally:
        local.call("POST", f"/missions/{mission_id}/cancel")


def test_as_link_switches_to_that_uid(open_page: Callable[..., Page], stack: Stack) -> None:
    """A `buddy open` link (?as=<uid>) against the emulators signs in as that uid and lists
    its missions."""
    uid, token = sign_up()
    objective = f"calculate 5+5 opened by link {uuid.uuid4().hex[:6]}"
    User(uid, token, stack.api_url).create(objective)
    page = open_page(f"&as={uid}", local_user=True)
    expect(page.locator("#auth-status")).to_have_text(f"Signed in as uid {uid}", timeout=SIGNED_IN)
    assert uid_on(page) == uid
    expect(page.locator("#auth-notice")).to_be_hidden()
    expect(mission_on(page, objective)).to_have_count(1, timeout=10_000)


@pytest.mark.parametrize(
    ("port", "state"),
    [
        ("80", "a" * 32),
        ("65536", "a" * 32),
        ("12x45", "a" * 32),
        ("45678", "too-short"),
        ("45678", "has spaces and +" * 2),
    ],
    ids=["low-port", "high-port", "not-a-number", "short-state", "bad-characters"],
)
def test_malformed_cli_link_says_so_and_posts_nothing(
    open_page: Callable[..., Page], cli: LocalServer, port: str, state: str
) -> None:
    """A CLI sign-in link with a bad port or state shows that it is malformed, with no
    button that would send anything."""
    page = open_page(f"&cli_port={port}&cli_state={state}", local_user=True)
    panel = page.locator("#cli-login")
    expect(panel).to_contain_text("This sign-in link is malformed", timeout=SIGNED_IN)
    expect(page.locator("#cli-login-allow")).to_be_hidden()
    expect(page.locator("#cli-login-deny")).to_be_hidden()
    assert cli.requests == []


def test_cli_allow_posts_the_email_accounts_sign_in(
    open_page: Callable[..., Page], stack: Stack, cli: LocalServer
) -> None:
    """Signed in with email on the CLI's page, Allow posts that account's tokens and where
    its services are to the CLI, and the browser shows the CLI's answer; the tokens work."""
    state = secrets.token_urlsafe(32)
    page = open_page(f"&cli_port={cli.port}&cli_state={state}")
    expect(page.locator("#signin")).to_be_visible(timeout=SIGNED_IN)
    expect(page.locator("#cli-login")).to_be_hidden()
    email = new_email()
    create_account(page, email)
    expect(page.locator("#cli-login-text")).to_have_text(
        f"The Buddy CLI on this computer asks to act as {email}.", timeout=SIGNED_IN
    )
    uid = uid_on(page)
    page.get_by_role("button", name="Allow").click()
    expect(page.locator("body")).to_contain_text("Signed in to the Buddy CLI", timeout=SIGNED_IN)

    [request] = cli.requests
    assert (request.method, request.path) == ("POST", "/callback")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = request.form()
    assert set(form) == CLI_FIELDS
    init = requests.get(f"{DASHBOARD}__/firebase/init.json", timeout=10).json()
    assert form | {"refresh_token": "", "id_token": ""} == {
        "state": state,
        "refresh_token": "",
        "id_token": "",
        "uid": uid,
        "email": email,
        "display_name": "",
        "provider": "password",
        "api_key": init["apiKey"],
        "project_id": init["projectId"],
        "api_url": stack.api_url,
        "auth_emulator": f"http://{AUTH_HOST}",
        "firestore_emulator": os.environ["FIRESTORE_EMULATOR_HOST"],
        "dashboard_url": DASHBOARD,
    }
    # What the CLI will do with them: call the API as this person, and refresh.
    assert User(uid, form["id_token"], stack.api_url).call("GET", "/missions").status_code == 200
    refreshed = requests.post(
        f"http://{AUTH_HOST}/securetoken.googleapis.com/v1/token?key={form['api_key']}",
        data={"grant_type": "refresh_token", "refresh_token": form["refresh_token"]},
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["user_id"] == uid


def test_cli_cancel_posts_access_denied(open_page: Callable[..., Page], cli: LocalServer) -> None:
    """Locally the CLI's page asks for the local user at once; Cancel tells the CLI the
    person refused, and nothing else."""
    state = secrets.token_urlsafe(32)
    page = open_page(f"&cli_port={cli.port}&cli_state={state}", local_user=True)
    expect(page.locator("#cli-login-text")).to_have_text(
        "The Buddy CLI on this computer asks to act as the local user (shared with the CLI).",
        timeout=SIGNED_IN,
    )
    expect(page.locator("#main")).to_be_hidden()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("body")).to_contain_text("Signed in to the Buddy CLI", timeout=SIGNED_IN)
    [request] = cli.requests
    assert request.form() == {"state": state, "error": "access_denied"}


def test_cli_page_use_another_account(open_page: Callable[..., Page], cli: LocalServer) -> None:
    """On the CLI's page, "Use another account" signs out; after signing in another way the
    page asks again for the new identity, and Allow sends that one."""
    state = secrets.token_urlsafe(32)
    page = open_page(f"&cli_port={cli.port}&cli_state={state}", local_user=True)
    expect(page.locator("#cli-login-text")).to_contain_text("the local user", timeout=SIGNED_IN)
    page.get_by_role("button", name="Use another account").click()
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#cli-login")).to_be_hidden()
    page.click("#signin-anonymous")
    expect(page.locator("#cli-login-text")).to_have_text(
        "The Buddy CLI on this computer asks to act as an anonymous user.", timeout=SIGNED_IN
    )
    uid = uid_on(page)
    page.get_by_role("button", name="Allow").click()
    expect(page.locator("body")).to_contain_text("Signed in to the Buddy CLI", timeout=SIGNED_IN)
    form = cli.requests[0].form()
    assert (form["uid"], form["provider"], form["email"]) == (uid, "anonymous", "")
    assert uid != "local-user"
