"""The starboard extension: ⭐ on a result message is a favourite, and enough of them repost it.

Raw reaction events need only the guild message reactions intent (not privileged) and arrive
for messages from before a restart too. A member's ⭐ on one of the bot's result messages is a
favourite of its images (`discord:<id>`; taking the ⭐ back removes it); the requester's own ⭐
and bots' do not count. With `bot.starboard_channel` set, a message whose ⭐ from distinct
members reach `bot.starboard_threshold` is reposted there once: the stars are counted from
Discord itself (REST), so reactions made while the bot was away count, and the engine's claim
makes the repost happen once across races and restarts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import messages
from bot.delivery import DeliveryFailed, Outgoing, gallery_url
from engine import ImageRecord, StarredMessage

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

STAR = "⭐"
EMBED_COLOUR = discord.Colour.gold()
PROMPT_CHARS = 1000


def is_star(emoji: discord.PartialEmoji | discord.Emoji | str) -> bool:
    """Return whether an emoji is ⭐ (with or without the emoji presentation selector)."""
    return str(emoji).removesuffix("\ufe0f") == STAR


class StarboardCog(commands.Cog):
    """Stars on result messages: favourites in the gallery, and one repost to the starboard."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        """Count a member's ⭐ on a result message; repost the message once it has enough."""
        if not self._may_count(event):
            return
        message = await self.bot.engine.starboard.find(str(event.message_id), str(event.channel_id))
        if message is None or str(event.user_id) == message.author_id:
            return
        await self.bot.engine.starboard.star(message, f"discord:{event.user_id}", True)
        if self.bot.settings.bot.starboard_channel and not message.is_posted:
            await self._consider(message, event)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, event: discord.RawReactionActionEvent) -> None:
        """Take a member's ⭐ back: no longer a favourite (a repost stays)."""
        if event.guild_id is None or not is_star(event.emoji):
            return
        message = await self.bot.engine.starboard.known(str(event.message_id))
        if message is None or str(event.user_id) == message.author_id:
            return
        await self.bot.engine.starboard.star(message, f"discord:{event.user_id}", False)

    def _may_count(self, event: discord.RawReactionActionEvent) -> bool:
        """Return whether a reaction is a person's ⭐ on one of this bot's guild messages."""
        me = self.bot.user
        if event.guild_id is None or me is None or not is_star(event.emoji):
            return False
        if event.message_author_id is not None and event.message_author_id != me.id:
            return False
        user = event.member or self.bot.get_user(event.user_id)
        return event.user_id != me.id and not (user is not None and user.bot)

    async def _consider(
        self, message: StarredMessage, event: discord.RawReactionActionEvent
    ) -> None:
        settings = self.bot.settings.bot
        board_id = int(settings.starboard_channel)
        images = self._postable(message, board_id)
        if not images:
            return
        threshold = settings.starboard_threshold
        stars = await self._count_stars(event, message.author_id)
        if not await self.bot.engine.starboard.count(message.message_id, stars, threshold):
            return
        try:
            outgoing = await self._outgoing(message, images[0], stars, _jump_url(event))
            data = await self.bot.delivery.poster.send_to_channel(board_id, outgoing)
        except (DeliveryFailed, discord.HTTPException, discord.RateLimited) as error:
            log.warning("starboard post for message %s failed: %r", message.message_id, error)
            await self.bot.engine.starboard.release(message.message_id)
            return
        except Exception:
            log.exception("starboard post for message %s failed", message.message_id)
            await self.bot.engine.starboard.release(message.message_id)
            return
        await self.bot.engine.starboard.posted(message.message_id, str(data.get("id", "")))

    def _postable(self, message: StarredMessage, board_id: int) -> list[ImageRecord]:
        """Return the images the starboard may show: none that are flagged or from an
        age-restricted channel, unless the starboard channel is age-restricted too."""
        board = self.bot.get_channel(board_id)
        is_nsfw_board = isinstance(board, discord.TextChannel) and board.is_nsfw()
        return [
            image
            for image in message.images
            if is_nsfw_board or not (image.is_flagged or image.is_nsfw_channel)
        ]

    async def _count_stars(self, event: discord.RawReactionActionEvent, author_id: str) -> int:
        """Count the distinct members (not bots, not the requester) with a ⭐ on the message."""
        channel = self.bot.get_partial_messageable(event.channel_id, guild_id=event.guild_id)
        try:
            fetched = await channel.fetch_message(event.message_id)
            reaction = next((r for r in fetched.reactions if is_star(r.emoji)), None)
            if reaction is None:
                return 0
            # discord.py pages through the users 100 at a time (`after` the last one).
            users = [user async for user in reaction.users()]
        except discord.HTTPException as error:  # deleted, or no Read Message History there
            log.info("cannot count the stars of message %s: %r", event.message_id, error)
            return 0
        return len({u.id for u in users if not u.bot and str(u.id) != author_id})

    async def _outgoing(
        self, message: StarredMessage, image: ImageRecord, stars: int, jump_url: str
    ) -> Outgoing:
        gallery = gallery_url(self.bot.settings)
        embed = starboard_embed(image, stars, jump_url, messages.image_url(gallery, image.id))
        files: tuple[tuple[str, bytes], ...] = ()
        try:
            data = await asyncio.to_thread(self.bot.engine.library.read, image)
            files = ((f"{image.id}.png", data),)
            embed.set_image(url=f"attachment://{image.id}.png")
        except OSError as error:  # the file is gone: the post still links the original
            log.warning("starboard: image %s unreadable: %r", image.id, error)
        return Outgoing(
            content=f"{STAR} **{stars}** <#{message.channel_id}>",
            embeds=[embed],
            files=files,
            nonce=f"star-{message.message_id}"[:25],
        )


def starboard_embed(image: ImageRecord, stars: int, jump_url: str, image_url: str) -> discord.Embed:
    """Return the repost's embed: the prompt, its author, links to the original and gallery.

    Within Discord's limits: the prompt (escaped, at most PROMPT_CHARS before escaping, so
    at most twice that after) and two links stay far below the description's 4096.
    """
    links = [f"[Jump to the original]({jump_url})"]
    if image_url:
        links.append(f"[Open in the gallery]({image_url})")
    description = "\n".join(
        [
            messages.escape(image.prompt, PROMPT_CHARS),
            "",
            f"by <@{image.author_id}>",
            " · ".join(links),
        ]
    )
    embed = discord.Embed(
        title=f"{STAR} {stars}", description=description, colour=EMBED_COLOUR, url=image_url or None
    )
    embed.set_footer(text=f"seed {image.seed} · {image.model}"[:2048])
    return embed


def _jump_url(event: discord.RawReactionActionEvent) -> str:
    guild = event.guild_id or "@me"
    return f"https://discord.com/channels/{guild}/{event.channel_id}/{event.message_id}"


async def setup(bot: ImagineBot) -> None:
    """Load the extension (discord.py calls this)."""
    await bot.add_cog(StarboardCog(bot))
