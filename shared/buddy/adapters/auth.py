"""Verifying Firebase ID tokens with firebase-admin."""

from __future__ import annotations

import firebase_admin
import google.auth.credentials
from firebase_admin import auth, credentials

from buddy.service.ports import DependencyUnavailable


class InvalidToken(Exception):
    """The bearer token is missing, malformed, expired or forged."""


class _PublicKeysOnly(credentials.Base):
    """Checking an ID token needs only Google's public keys, never this service's identity."""

    def get_credential(self) -> google.auth.credentials.Credentials:
        return google.auth.credentials.AnonymousCredentials()


class FirebaseTokenVerifier:
    def __init__(self, project_id: str) -> None:
        name = f"buddy-{project_id}"
        try:
            self._app = firebase_admin.get_app(name)
        except ValueError:
            self._app = firebase_admin.initialize_app(
                _PublicKeysOnly(), options={"projectId": project_id}, name=name
            )

    def verify(self, token: str) -> str:
        """Returns the token's uid."""
        try:
            claims = auth.verify_id_token(token, app=self._app)
        except auth.CertificateFetchError as e:
            # Google's signing keys are out of reach: not the caller's fault, so not a 401.
            raise DependencyUnavailable("Cannot fetch the keys that verify ID tokens") from e
        except (
            ValueError,
            auth.InvalidIdTokenError,
            auth.ExpiredIdTokenError,
            auth.RevokedIdTokenError,
            auth.UserDisabledError,
        ) as e:
            raise InvalidToken(str(e)) from e
        return str(claims["uid"])
