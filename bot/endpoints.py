"""Point discord.py at another Discord API: an HTTP proxy or a test double (`[bot] api_base`)."""

from __future__ import annotations

from collections.abc import Callable

import discord
import discord.gateway
import discord.http
import yarl


def point_discord_py_at(api_base: str, gateway_url: str = "") -> Callable[[], None]:
    """Send discord.py's REST, webhook, gateway and CDN traffic to `api_base`; return the undo.

    discord.py 2.x builds every REST and interaction-webhook URL from `Route.BASE`; a client
    without shards connects to `DiscordWebSocket.DEFAULT_GATEWAY` (and resumes at READY's
    `resume_gateway_url`); asset URLs use `Asset.BASE`. These are class attributes, so this
    affects every client in the process.
    """
    origin = str(yarl.URL(api_base).origin())
    gateway = gateway_url or origin.replace("http", "ws", 1) + "/gateway"
    route, websocket, asset = discord.http.Route, discord.gateway.DiscordWebSocket, discord.Asset
    saved = (route.BASE, websocket.DEFAULT_GATEWAY, asset.BASE)
    route.BASE = api_base.rstrip("/")
    websocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    asset.BASE = f"{origin}/cdn"

    def restore() -> None:
        route.BASE, websocket.DEFAULT_GATEWAY, asset.BASE = saved

    return restore
