"""Run-time checks on an interaction: who asks, whether they moderate, whether the bot can post."""

from __future__ import annotations

import discord

from engine import Engine, Requester

REQUIRED_PERMISSIONS = {
    "send_messages": "Send Messages",
    "attach_files": "Attach Files",
    "embed_links": "Embed Links",
}


class MissingBotPermissions(Exception):
    """The bot lacks permissions it needs to post results in a channel."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing permissions: {', '.join(missing)}")
        self.missing = missing


class NotModerator(Exception):
    """A moderator command was used by someone who is not one."""


def requester_of(interaction: discord.Interaction) -> Requester:
    """Return who asks, from where, with their roles and channel rules."""
    user = interaction.user
    roles = tuple(str(role.id) for role in getattr(user, "roles", ()) if not role.is_default())
    return Requester(
        source="discord",
        user_id=str(user.id),
        name=user.display_name,
        guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        channel_id=str(interaction.channel_id) if interaction.channel_id else None,
        role_ids=roles,
        is_nsfw_channel=is_nsfw_channel(interaction),
        is_moderator=interaction.permissions.manage_messages,
    )


def is_nsfw_channel(interaction: discord.Interaction) -> bool:
    """Return whether the interaction's channel is age-restricted."""
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def require_bot_permissions(interaction: discord.Interaction) -> None:
    """Raise MissingBotPermissions unless the bot can send, attach and embed here."""
    granted = interaction.app_permissions
    missing = [label for name, label in REQUIRED_PERMISSIONS.items() if not getattr(granted, name)]
    if missing:
        raise MissingBotPermissions(missing)


def require_moderator(interaction: discord.Interaction, engine: Engine) -> Requester:
    """Return the requester, or raise NotModerator (Discord's permission defaults are a hint)."""
    requester = requester_of(interaction)
    if not engine.moderator.is_moderator(requester):
        raise NotModerator()
    return requester
