"""Verifying Firebase ID tokens with firebase-admin."""

from __future__ import annotations

import firebase_admin
import google.auth.credentials
from firebase_admin import auth, credentials, exceptions

from buddy.errors import DependencyUnavailable, Unauthenticated

INVALID = "The ID token is invalid, expired or revoked; sign in again"


class _PublicKeysOnly(credentials.Base):
    """Checking an ID token needs only Google's public keys, never this service's identity."""

    def get_credential(self) -> google.auth.credentials.Credentials:
        return google.auth.credentials.AnonymousCredentials()


class FirebaseTokenVerifier:
    """Checks ID tokens; with check_revoked, also asks Auth whether the user revoked their
    tokens or was disabled since (one call per request, with this service's identity)."""

    def __init__(self, project_id: str, check_revoked: bool = False) -> None:
        name = f"buddy-{project_id}" + ("-revocations" if check_revoked else "")
        self._check_revoked = check_revoked
        try:
            self._app = firebase_admin.get_app(name)
        except ValueError:
            credential = credentials.ApplicationDefault() if check_revoked else _PublicKeysOnly()
            self._app = firebase_admin.initialize_app(
                credential, options={"projectId": project_id}, name=name
            )

    def verify(self, token: str) -> str:
        """Returns the token's uid."""
        try:
            claims = auth.verify_id_token(token, app=self._app, check_revoked=self._check_revoked)
        except auth.CertificateFetchError as e:
            # Google's signing keys are out of reach: not the caller's fault, so not a 401.
            raise DependencyUnavailable("Cannot fetch the keys that verify ID tokens") from e
        except (
            ValueError,
            auth.InvalidIdTokenError,
            auth.ExpiredIdTokenError,
            auth.RevokedIdTokenError,
            auth.UserDisabledError,
            auth.UserNotFoundError,
        ) as e:
            raise Unauthenticated(INVALID) from e
        except exceptions.FirebaseError as e:
            # The revocation check could not reach Auth.
            raise DependencyUnavailable("Cannot reach Firebase Auth to check the token") from e
        return str(claims["uid"])
