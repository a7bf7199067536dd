"""The person signed in with Discord, as the signed session cookie keeps them.

The cookie is signed, not encrypted: it holds only what the pages show anyway (id, name, roles)
and, encrypted with a key derived from the app's secret key, the refresh token that lets the
server read the roles again every `web.roles_refresh_s` without asking the person to sign in.
No access token is ever kept: it is used to read the user and their member record, then dropped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from engine import Requester

PERSON_KEY = "person"
# Administrator (1 << 3) and Manage Messages (1 << 13): either makes a member a moderator.
MODERATING_PERMISSIONS = (1 << 3) | (1 << 13)


@dataclass(frozen=True)
class Person:
    """A Discord user signed in to the gallery, with their membership of `web.guild_id`."""

    user_id: str
    name: str
    is_member: bool
    role_ids: tuple[str, ...]
    may_manage_messages: bool
    checked_at: float

    def requester(self, guild_id: str) -> Requester:
        """Return the same Requester the bot builds for this user (minus the channel)."""
        return Requester(
            source="discord",
            user_id=self.user_id,
            name=self.name,
            guild_id=guild_id if self.is_member else None,
            role_ids=self.role_ids if self.is_member else (),
            is_moderator=self.is_member and self.may_manage_messages,
        )

    def to_session(self) -> dict[str, Any]:
        """Return what the session cookie keeps."""
        return {
            "id": self.user_id,
            "name": self.name,
            "member": self.is_member,
            "roles": list(self.role_ids),
            "mm": self.may_manage_messages,
            "at": self.checked_at,
        }

    @classmethod
    def from_session(cls, data: object) -> Person | None:
        """Rebuild a person from the session, or None when the value is not one."""
        if not isinstance(data, dict):
            return None
        try:
            user_id, name = str(data["id"]), str(data["name"])
            roles = tuple(str(r) for r in data["roles"])
            person = cls(user_id, name, bool(data["member"]), roles, bool(data["mm"]), data["at"])
        except (KeyError, TypeError):
            return None
        if not user_id.isdigit() or not isinstance(person.checked_at, int | float):
            return None
        return person


def current_person(session: MutableMapping[str, Any]) -> Person | None:
    """Return the person this session is signed in as, if any."""
    return Person.from_session(session.get(PERSON_KEY))


class TokenBox:
    """Encrypt refresh tokens for the session cookie (Fernet, keyed by the app's secret key)."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"imagine refresh token\0" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, token: str) -> str:
        """Return the token encrypted and authenticated."""
        return self._fernet.encrypt(token.encode()).decode("ascii")

    def open(self, sealed: object) -> str | None:
        """Return the token, or None when the value was not sealed by this key."""
        if not isinstance(sealed, str):
            return None
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError, ValueError):
            return None
