"""Sign in with the fake Discord over real HTTP: the fake on a loop thread, settings, one flow."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.fakes.discord import FakeDiscord

CLIENT_ID = "500000000000000001"
CLIENT_SECRET = "fake-client-secret"
SECRET_ENV = {"IMAGINE_DISCORD_CLIENT_SECRET": CLIENT_SECRET}
PUBLIC_URL = "http://gallery.test"


@dataclass
class Discord:
    """A fake Discord served from its own loop thread, for synchronous Flask tests."""

    fake: FakeDiscord
    loop: asyncio.AbstractEventLoop

    def web_section(self, public_url: str = PUBLIC_URL, **values: Any) -> dict[str, Any]:
        """Return a [web] table that signs in here, and register its redirect URI."""
        self.fake.rest.oauth.register(CLIENT_ID, CLIENT_SECRET, public_url + "/auth/callback")
        return {
            "discord_client_id": CLIENT_ID,
            "guild_id": str(self.fake.guild.id),
            "public_url": public_url,
            "oauth_base": self.fake.origin,
            **values,
        }

    def bot_section(self) -> dict[str, Any]:
        """Return a [bot] table whose REST base is the fake (for reading role permissions)."""
        return {"api_base": self.fake.api_base}


@contextlib.contextmanager
def running_discord() -> Iterator[Discord]:
    """Start a fake Discord on a background loop; stop it after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-discord", daemon=True)
    thread.start()
    fake = FakeDiscord(point_discord_py=False)
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield Discord(fake, loop)
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def local(url: str) -> str:
    """Return the path and query of a URL (what the Flask test client asks for)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def authorize(client: FlaskClient, next_path: str = "/") -> str:
    """Start signing in; let the fake Discord approve; return the callback URL it sent back."""
    start = client.get("/auth/login", query_string={"next": next_path})
    assert start.status_code == 302, start.status_code
    answer = requests.get(start.headers["Location"], allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def sign_in(fake: FakeDiscord, client: FlaskClient, user: str = "alice", next_path: str = "/"):
    """Sign `user` in through the whole flow; return the callback's response."""
    fake.rest.oauth.signed_in = fake.user(user)
    response: TestResponse = client.get(local(authorize(client, next_path)))
    return response
