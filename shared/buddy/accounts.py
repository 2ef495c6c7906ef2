"""Who the CLI and BuddyClient act as: the accounts signed in to with `buddy login`, one per
Firebase project, their ID tokens kept fresh; locally, until someone signs in, the local user.

Stored in $XDG_CONFIG_HOME/buddy/credentials.json (default ~/.config), readable by its owner
only (0600 in a 0700 directory), replaced whole on every change:

    {"version": 2, "current": "<project>", "accounts": {"<project>": {uid, email, display_name,
     provider, refresh_token, id_token, expires_at, api_key, api_url, auth_emulator,
     firestore_emulator, dashboard_url}}}

The project: --project, else BUDDY_PROJECT_ID, GOOGLE_CLOUD_PROJECT or GCLOUD_PROJECT, else the
last one signed in to ("current"), else demo-buddy. A `demo-` project is local (the
emulators): with nobody signed in to it, commands act as the local user, the one the
dashboard signs in as locally too (BUDDY_LOCAL_UID, else buddy.config.LOCAL_USER_UID).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from buddy.client import ApiUnreachable, BuddyError, NotAuthenticated, ServiceUnavailable
from buddy.config import LOCAL_USER_UID, PROJECT_ID, LocalPorts

VERSION = 2
LOCAL_PREFIX = "demo-"  # the emulators' projects: never real services
# An ID token lives an hour; one that ends sooner than this is refreshed before it is sent.
REFRESH_MARGIN_SECONDS = 300.0
# What the sign-in service says of a refresh token that will never work again.
REFUSED = ("TOKEN_EXPIRED", "USER_NOT_FOUND", "INVALID_REFRESH_TOKEN", "USER_DISABLED")
SECURETOKEN = "https://securetoken.googleapis.com"
# The Firebase web config the hosting emulator serves demo projects; the Auth emulator takes
# any key.
LOCAL_API_KEY = "fake-api-key"
# Users signed in with a (fake) custom token: locally, the local user.
CUSTOM = "custom"
_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_TEXT_FIELDS = (
    "uid",
    "email",
    "display_name",
    "provider",
    "refresh_token",
    "id_token",
    "api_key",
    "api_url",
    "auth_emulator",
    "firestore_emulator",
    "dashboard_url",
)

Env = Mapping[str, str]
Clock = Callable[[], float]


class NotConfigured(BuddyError):
    """Nothing says where the project's API is."""


def is_local(project: str) -> bool:
    return project.startswith(LOCAL_PREFIX)


def credentials_path(env: Env = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "buddy" / "credentials.json"


def local_uid(env: Env = os.environ) -> str:
    return env.get("BUDDY_LOCAL_UID") or LOCAL_USER_UID


def claims(id_token: str) -> dict[str, Any]:
    """An ID token's payload, unverified: for showing whom it names and when it ends, never for
    trusting it (the API verifies it). Empty when it is not a JWT."""
    try:
        payload = id_token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def expiry(id_token: str) -> float:
    """When an ID token ends (epoch seconds); 0 when it does not say, so it is refreshed."""
    exp = claims(id_token).get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else 0.0


@dataclass(frozen=True)
class Account:
    """One signed-in user of one project, and where that project's services are."""

    uid: str
    refresh_token: str
    id_token: str
    expires_at: float  # epoch seconds
    api_key: str  # the project's Firebase web API key, which the token endpoints want
    provider: str = ""  # anonymous, password, google.com, custom
    email: str = ""
    display_name: str = ""
    api_url: str = ""
    auth_emulator: str = ""  # "http://127.0.0.1:9099", or "" for Google's services
    firestore_emulator: str = ""  # "127.0.0.1:8080", or ""
    dashboard_url: str = ""
    # Made by the CLI itself for the local stack's shared user, never by `buddy login` (a
    # login locally can be a custom-token user too: another uid the dashboard signed in as).
    local_user: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Account | None:
        """The stored entry, or None when it is not a usable one (cut short, edited by hand)."""
        if not isinstance(data, dict):
            return None
        text = {name: data.get(name) or "" for name in _TEXT_FIELDS}
        expires_at = data.get("expires_at", 0)
        local_user = data.get("local_user", False)
        if not all(isinstance(value, str) for value in text.values()):
            return None
        if not isinstance(local_user, bool):
            return None
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            return None
        if not (text["uid"] and text["refresh_token"] and text["id_token"]):
            return None
        return cls(expires_at=float(expires_at), local_user=local_user, **text)

    @property
    def name(self) -> str:
        """How a person tells this account: its email, its name, or what kind it is."""
        if self.email or self.display_name:
            return self.email or self.display_name
        if self.local_user:
            return "the local user"
        if self.provider == "anonymous":
            return "an anonymous user"
        return f"user {self.uid}"


class Credentials:
    """The credentials file: an account per project, and the project signed in to last."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def current(self) -> str | None:
        current = self._read().get("current")
        return current if isinstance(current, str) and current else None

    def account(self, project: str) -> Account | None:
        return Account.from_json(self._read()["accounts"].get(project))

    def save(self, project: str, account: Account, current: bool = False) -> Account:
        with self._changing() as data:
            data["accounts"][project] = dataclasses.asdict(account)
            if current:
                data["current"] = project
        return account

    def remove(self, project: str) -> Account | None:
        """Forgets the project's account; the account forgotten, or None if there was none."""
        with self._changing() as data:
            if project not in data["accounts"]:
                return None
            removed = Account.from_json(data["accounts"].pop(project))
            if data["current"] == project:
                data["current"] = None
        return removed

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """The file's contents to change, written back whole; one command at a time, so that
        two refreshing at once (two projects, or two terminals) lose neither change."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(".credentials.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(lock) as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            data = self._read()
            yield data
            self._write(data)

    def _read(self) -> dict[str, Any]:
        empty: dict[str, Any] = {"version": VERSION, "current": None, "accounts": {}}
        try:
            text = self.path.read_text()
        except OSError:
            return empty
        try:
            data = json.loads(text)
        except ValueError:
            # Not ours to throw away: it may hold other projects' sign-ins.
            raise BuddyError(
                f"{self.path} is not valid JSON: fix it, or delete it and run buddy login again"
            ) from None
        # The first format (one anonymous emulator user, a top-level idToken) counts as nobody
        # signed in; the next save replaces it.
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return empty
        if not isinstance(data.get("accounts"), dict):
            return empty
        return {**empty, **data}

    def _write(self, data: dict[str, Any]) -> None:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # also when it was made before, or under a loose umask
        # mkstemp makes the file 0600 from the start (tokens), and a name of its own, so that
        # two commands saving at once don't write into one temporary file.
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".credentials-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=2)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def target_project(
    credentials: Credentials, env: Env = os.environ, given: str | None = None
) -> str:
    return (
        given
        or env.get("BUDDY_PROJECT_ID")
        or env.get("GOOGLE_CLOUD_PROJECT")
        or env.get("GCLOUD_PROJECT")
        or credentials.current
        or PROJECT_ID
    )


def api_url(
    project: str, account: Account | None, env: Env = os.environ, given: str | None = None
) -> str:
    url = given or env.get("BUDDY_API_URL") or (account.api_url if account else "")
    if url:
        return url
    if is_local(project):
        return LocalPorts.from_env(env).url("api")
    raise NotConfigured(
        f"no API URL for project {project}: run buddy login --project {project} or pass --api-url"
    )


def dashboard_url(
    project: str, account: Account | None, env: Env = os.environ, given: str | None = None
) -> str:
    url = given or env.get("BUDDY_DASHBOARD_URL") or (account.dashboard_url if account else "")
    if url:
        return url
    if is_local(project):
        return LocalPorts.from_env(env).url("hosting") + "/"
    return f"https://{project}.web.app/"


def firestore_emulator(project: str, account: Account | None, env: Env = os.environ) -> str | None:
    """Where the mission listener reads: an emulator (as its admin), or None for Firestore
    itself, read with the user's ID token so that the security rules apply."""
    return (
        env.get("FIRESTORE_EMULATOR_HOST")
        or (account.firestore_emulator if account else "")
        or (LocalPorts.from_env(env).address("firestore") if is_local(project) else None)
    )


class Session:
    """The ID tokens one project's commands send: the stored account's, refreshed before they
    expire; locally, with nobody signed in, the local user's (stored as the project's account,
    so that every command is the same user)."""

    def __init__(
        self,
        project: str,
        credentials: Credentials,
        env: Env = os.environ,
        clock: Clock = time.time,
    ) -> None:
        self.project = project
        self.credentials = credentials
        self.env = env
        self.clock = clock

    def account(self) -> Account:
        """The account commands act as, its ID token good for five minutes at least."""
        stored = self.credentials.account(self.project)
        if stored is None or (self._is_local_user(stored) and stored.uid != local_uid(self.env)):
            return self._sign_in_local_user()
        if stored.expires_at - self.clock() > REFRESH_MARGIN_SECONDS:
            return stored
        return self._refreshed(stored)

    def token(self) -> str:
        return self.account().id_token

    def renew(self) -> str:
        """A new ID token after the API refused the one sent (it can be revoked, or outlive
        the emulator that issued it)."""
        stored = self.credentials.account(self.project)
        return self._refreshed(stored).id_token if stored else self.token()

    def _is_local_user(self, account: Account) -> bool:
        return is_local(self.project) and account.local_user

    def _refreshed(self, stored: Account) -> Account:
        try:
            fresh = refresh(stored, self.project, self.clock)
        except NotAuthenticated:
            if self._is_local_user(stored):
                return self._sign_in_local_user()  # an emulator restarted without its users
            raise
        return self.credentials.save(self.project, fresh)

    def _sign_in_local_user(self) -> Account:
        if not is_local(self.project):
            raise NotAuthenticated(
                f"not signed in to {self.project}: run `buddy login --project {self.project}`"
            )
        ports = LocalPorts.from_env(self.env)
        host = self.env.get("FIREBASE_AUTH_EMULATOR_HOST") or ports.address("auth")
        emulator, uid = f"http://{host}", local_uid(self.env)
        # The Auth emulator takes strict JSON as a custom token, and makes the user if missing.
        body = _post(
            f"{emulator}/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken",
            LOCAL_API_KEY,
            emulator,
            f"the Auth emulator refused to sign in the local user ({uid})",
            json={"token": json.dumps({"uid": uid}), "returnSecureToken": True},
        )
        try:
            account = Account(
                uid=uid,
                refresh_token=str(body["refreshToken"]),
                id_token=str(body["idToken"]),
                expires_at=self.clock() + float(body["expiresIn"]),
                api_key=LOCAL_API_KEY,
                provider=CUSTOM,
                local_user=True,
                auth_emulator=emulator,
                firestore_emulator=self.env.get("FIRESTORE_EMULATOR_HOST")
                or ports.address("firestore"),
            )
        except (KeyError, TypeError, ValueError):
            # Not the body: it holds tokens.
            raise BuddyError("the Auth emulator answered a sign-in without its tokens") from None
        return self.credentials.save(self.project, account)


def refresh(account: Account, project: str, clock: Clock = time.time) -> Account:
    """The account with a new ID token from the sign-in service (Google's, or the emulator's
    stand-in for it); NotAuthenticated when it refuses the refresh token."""
    base = f"{account.auth_emulator}/securetoken.googleapis.com" if account.auth_emulator else None
    body = _post(
        f"{base or SECURETOKEN}/v1/token",
        account.api_key,
        account.auth_emulator or None,
        f"your sign-in to {project} was refused",
        data={"grant_type": "refresh_token", "refresh_token": account.refresh_token},
        expired=f"your sign-in to {project} has expired or was revoked: run `buddy login`",
    )
    try:
        return dataclasses.replace(
            account,
            id_token=str(body["id_token"]),
            refresh_token=str(body["refresh_token"]),
            expires_at=clock() + float(body["expires_in"]),
        )
    except (KeyError, TypeError, ValueError):
        raise BuddyError("the sign-in service answered a refresh without its tokens") from None


def _post(
    url: str,
    key: str,
    emulator: str | None,
    refused: str,
    expired: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """A call to Firebase Auth's REST API; its failures as the CLI's errors, for a person."""
    try:
        response = httpx.post(url, params={"key": key}, timeout=_TIMEOUT, **kwargs)
    except httpx.TransportError:
        where = (
            f"the Auth emulator at {emulator} — start it with scripts/run.sh"
            if emulator
            else "Google's sign-in service (securetoken.googleapis.com): check your connection"
        )
        raise ApiUnreachable(f"cannot reach {where}") from None
    if response.status_code >= 500:
        raise ServiceUnavailable(
            f"the sign-in service answered {response.status_code}; try again shortly"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    code = _error_code(body) or response.text.strip()[:200] or str(response.status_code)
    if expired and code in REFUSED:
        raise NotAuthenticated(expired)
    raise NotAuthenticated(f"{refused}: {code}")


def _error_code(body: Any) -> str:
    """`INVALID_REFRESH_TOKEN` from {"error": {"message": "INVALID_REFRESH_TOKEN : …"}}."""
    try:
        message = str(body["error"]["message"])
    except (KeyError, TypeError):
        return ""
    return message.split(":")[0].strip()


@dataclass(frozen=True)
class Identity:
    """Whom commands act as, for `buddy whoami` and `buddy open` (no tokens in it)."""

    project: str
    uid: str
    name: str
    email: str
    display_name: str
    provider: str
    source: str  # "BUDDY_ID_TOKEN", "buddy login" or "local user"


def identity(project: str, credentials: Credentials, env: Env = os.environ) -> Identity:
    """Who commands on the project act as, found as they find their token (BUDDY_ID_TOKEN,
    else the stored account, refreshed if due, else locally the local user)."""
    token = env.get("BUDDY_ID_TOKEN")
    if token:
        said = claims(token)
        uid = str(said.get("user_id") or said.get("sub") or "")
        email = str(said.get("email") or "")
        name = str(said.get("name") or "")
        firebase = said.get("firebase")
        provider = str(firebase.get("sign_in_provider") or "") if isinstance(firebase, dict) else ""
        shown = email or name or f"user {uid or '(unknown)'}"
        return Identity(project, uid, shown, email, name, provider, "BUDDY_ID_TOKEN")
    account = Session(project, credentials, env).account()
    source = "local user" if is_local(project) and account.local_user else "buddy login"
    return Identity(
        project,
        account.uid,
        account.name,
        account.email,
        account.display_name,
        account.provider,
        source,
    )
