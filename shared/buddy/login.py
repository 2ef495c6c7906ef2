"""`buddy login`: sign in in the dashboard, then hand that sign-in to the CLI.

The CLI listens on 127.0.0.1 (a free port, for one sign-in) and opens the dashboard at
`?cli_port=<port>&cli_state=<state>`. Once the person has signed in there and chosen Allow,
the page posts the account as a form to http://127.0.0.1:<port>/callback: state,
refresh_token, id_token, uid, email, display_name, provider, api_key, project_id, api_url,
auth_emulator, firestore_emulator, dashboard_url (Cancel posts state and
error=access_denied). The state is random and reaches only the browser it was given to: a post
without it, from any other page, is refused, and the CLI keeps waiting for the real one.
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
import threading
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from buddy.accounts import Account, Credentials, expiry
from buddy.client import BuddyError
from buddy.config import LOCAL_HOST

CALLBACK_PATH = "/callback"
DEFAULT_TIMEOUT_SECONDS = 300.0
# Two tokens and a few names: a form much bigger than this is not the dashboard's.
MAX_FORM_BYTES = 64 * 1024
# A Firebase project id (it becomes a key of the credentials file and part of URLs).
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{1,61}[a-z0-9]")


class SignInCancelled(BuddyError):
    """The person chose Cancel in the dashboard."""


class SignInTimedOut(BuddyError):
    """Nobody signed in before the deadline."""


@dataclass(frozen=True)
class SignedIn:
    project: str
    account: Account


Outcome = SignedIn | BuddyError


def sign_in_url(dashboard: str, port: int, state: str) -> str:
    return dashboard_page(dashboard, {"cli_port": str(port), "cli_state": state})


def dashboard_page(dashboard: str, query: Mapping[str, str], fragment: str = "") -> str:
    """The dashboard's page with `query` added to what its URL asks already (an `?api=…`
    stays; a parameter named in `query` is replaced), and `fragment` when given."""
    parts = urlsplit(dashboard)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in query]
    path = parts.path.rstrip("/") + "/"
    pairs = urlencode([*kept, *query.items()])
    return urlunsplit((parts.scheme, parts.netloc, path, pairs, fragment or parts.fragment))


def account_from(form: Mapping[str, str]) -> SignedIn | None:
    """The account the dashboard posted; None when the post lacks what a sign-in needs."""
    # Whatever the form says, a login is never the CLI's own local user.
    posted = {**form, "expires_at": expiry(form.get("id_token", "")), "local_user": False}
    account = Account.from_json(posted)
    project = form.get("project_id", "")
    if account is None or not account.api_key or not _PROJECT_ID.fullmatch(project):
        return None
    return SignedIn(project, account)


def _page(title: str, message: str) -> str:
    return (
        f"<!doctype html><meta charset=utf-8><title>Buddy CLI: {html.escape(title)}</title>"
        '<body style="font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto">'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
    )


REFUSED_PAGE = _page(
    "Refused", "Refused: this sign-in did not come from your `buddy login` (state mismatch)"
)
INCOMPLETE_PAGE = _page(
    "Refused", "Refused: this sign-in is incomplete (no tokens or no project); the CLI waits on."
)
USED_PAGE = _page("Refused", "Refused: this sign-in link was used already.")
CANCELLED_PAGE = _page("Sign-in cancelled", "Sign-in cancelled: the Buddy CLI was not signed in.")
NOT_FOUND_PAGE = _page("Not found", "Only the dashboard's sign-in form posts here.")


class CallbackServer:
    """One sign-in's HTTP server on 127.0.0.1: answers the dashboard's post, once."""

    def __init__(self, state: str) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._claimed = False
        self._outcome: Outcome | None = None
        self._done = threading.Event()
        self._httpd = ThreadingHTTPServer((LOCAL_HOST, 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def __enter__(self) -> CallbackServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def wait(self, timeout: float) -> SignedIn:
        """The account signed in; SignInCancelled, or SignInTimedOut after `timeout` seconds."""
        if not self._done.wait(timeout):
            raise SignInTimedOut(f"nobody signed in within {timeout:g}s: run buddy login again")
        if isinstance(self._outcome, BuddyError):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def answer(self, form: Mapping[str, str]) -> tuple[int, str, Outcome | None]:
        """What a post to the callback gets: its status and page, and the login's outcome when
        it is the post that settles it."""
        given = form.get("state", "").encode()
        if not hmac.compare_digest(given, self.state.encode()):
            return 400, REFUSED_PAGE, None
        with self._lock:
            if self._claimed:
                return 400, USED_PAGE, None
            error = form.get("error")
            if error:
                self._claimed = True
                said = "" if error == "access_denied" else f" ({error})"
                cancelled = SignInCancelled(f"sign-in cancelled in the browser{said}")
                return 200, CANCELLED_PAGE, cancelled
            signed_in = account_from(form)
            if signed_in is None:
                return 400, INCOMPLETE_PAGE, None
            self._claimed = True
        name = signed_in.account.name
        done = _page("Signed in", f"Signed in to the Buddy CLI as {name}. You can close this tab.")
        return 200, done, signed_in

    def settle(self, outcome: Outcome) -> None:
        self._outcome = outcome
        self._done.set()


def _handler_for(server: CallbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # A connection that sends nothing (a browser's spare one) is let go after this.
        timeout = 10

        def do_POST(self) -> None:
            if urlsplit(self.path).path != CALLBACK_PATH:
                self._send(404, NOT_FOUND_PAGE)
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_FORM_BYTES:
                self._send(413, INCOMPLETE_PAGE)
                return
            body = self.rfile.read(length).decode("utf-8", "replace")
            status, page, outcome = server.answer(dict(parse_qsl(body, keep_blank_values=True)))
            self._send(status, page)
            if outcome is not None:
                server.settle(outcome)  # once the page is sent: the CLI may exit right away

        def do_GET(self) -> None:
            if urlsplit(self.path).path == CALLBACK_PATH:
                self._send(405, NOT_FOUND_PAGE, {"Allow": "POST"})
            else:
                self._send(404, NOT_FOUND_PAGE)

        def _send(self, status: int, page: str, headers: Mapping[str, str] | None = None) -> None:
            body = page.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the terminal shows the CLI's own lines, not an access log

    return Handler


def login(
    credentials: Credentials,
    dashboard: str,
    say: Callable[[str], None],
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    open_browser: bool = True,
) -> SignedIn:
    """Waits for the dashboard's sign-in, then stores it as its project's account, the current
    one."""
    state = secrets.token_urlsafe(32)
    with CallbackServer(state) as server:
        url = sign_in_url(dashboard, server.port, state)
        # Printed always: the browser may open on another screen, or not at all.
        say(f"Open this URL to sign in: {url}")
        if open_browser and not webbrowser.open(url):
            say("No browser could be opened here: open the URL yourself.")
        signed_in = server.wait(timeout)
    credentials.save(signed_in.project, signed_in.account, current=True)
    return signed_in
