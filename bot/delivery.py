"""Deliver a job to Discord: progress edits, then the images, exactly once.

The interaction token dies 15 minutes after the command, so results that come later go to the
channel as a normal message that mentions the requester. Delivery retries network faults and
server errors with backoff, honours short 429s and gives up fast on long ones (discord.py raises
`RateLimited` past `max_ratelimit_timeout`). When nothing can be posted the images stay in the
gallery and the user gets a link; generation is never rerun because delivery failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
from discord.http import Route, handle_message_parameters
from PIL import Image

from bot import messages
from bot.views import result_view
from engine import (
    Cancelled,
    Engine,
    Event,
    Failed,
    Finished,
    ImageRecord,
    JobView,
    Progress,
    Queued,
    Settings,
    Started,
)

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60.0
# Stop using a token a little early: an edit that lands after it died is a wasted round trip.
TOKEN_MARGIN_S = 30.0
PROGRESS_TIMEOUT_S = 10.0
NO_MENTIONS = discord.AllowedMentions.none()


class TokenDead(Exception):
    """The interaction token expired or was revoked (401, or 404 on the webhook)."""


class DeliveryFailed(Exception):
    """Every attempt to post failed."""


@dataclass(frozen=True)
class Target:
    """Where a job's messages go; kept in the job's origin so a restarted bot can deliver."""

    application_id: int
    token: str
    channel_id: int
    guild_id: int | None
    user_id: int
    created_at: float
    size_limit: int
    is_nsfw_channel: bool
    # What cleaning the init image changed ("its first frame was used"), said with the result.
    notes: tuple[str, ...] = ()
    # Where the requester wants results (`/settings`): channel, private (ephemeral) or dm.
    delivery: str = "channel"

    @classmethod
    def of(
        cls,
        interaction: discord.Interaction,
        is_nsfw_channel: bool,
        notes: tuple[str, ...] = (),
        delivery: str = "channel",
    ) -> Target:
        """Return the target of an interaction."""
        return cls(
            application_id=int(interaction.application_id),
            token=interaction.token,
            channel_id=int(interaction.channel_id or 0),
            guild_id=interaction.guild_id,
            user_id=interaction.user.id,
            created_at=interaction.created_at.timestamp(),
            size_limit=int(interaction.filesize_limit),
            is_nsfw_channel=is_nsfw_channel,
            notes=notes,
            delivery=delivery,
        )

    def to_origin(self) -> dict[str, Any]:
        """Return the job origin that records this target."""
        return {"discord": dataclasses.asdict(self)}

    @classmethod
    def from_origin(cls, origin: dict[str, Any]) -> Target | None:
        """Rebuild a target from a job origin; None when the job did not come from Discord."""
        data = origin.get("discord")
        if not isinstance(data, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["notes"] = tuple(values.get("notes") or ())
        return cls(**values)

    def is_token_alive(self, now_s: float) -> bool:
        """Return whether the interaction token can still edit the original response."""
        return bool(self.token) and now_s - self.created_at < TOKEN_LIFETIME_S - TOKEN_MARGIN_S

    @property
    def is_private(self) -> bool:
        """Return whether the result must not be posted where others see it."""
        return self.delivery != "channel"

    def without_token(self) -> Target:
        """Return this target with the interaction token given up."""
        return dataclasses.replace(self, token="")

    def message_url(self, message_id: int | str) -> str:
        """Return the jump URL of a message in the target channel."""
        guild = self.guild_id or "@me"
        return f"https://discord.com/channels/{guild}/{self.channel_id}/{message_id}"


@dataclass(frozen=True)
class Outgoing:
    """A message to post: text, embeds, files (name, bytes) and buttons."""

    content: str
    embeds: Sequence[discord.Embed] = ()
    files: Sequence[tuple[str, bytes]] = ()
    view: discord.ui.View | None = None
    allowed_mentions: discord.AllowedMentions = NO_MENTIONS
    # Channel posts only: Discord returns the first message for a repeated nonce, so a post
    # retried after a crash (stored by Discord, not yet marked delivered here) appears once.
    nonce: str | None = None


class Poster:
    """Post and edit messages over REST with bounded retries."""

    def __init__(self, client: discord.Client, attempts: int, backoff_s: float = 0.5) -> None:
        self.client = client
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def edit_original(
        self, target: Target, message: Outgoing, attempts: int | None = None
    ) -> dict[str, Any]:
        """Replace the interaction's original response (text, embeds, attachments, buttons)."""
        route = Route(
            "PATCH",
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
            webhook_id=target.application_id,
            webhook_token=target.token,
        )
        return await self._send(route, message, is_edit=True, attempts=attempts)

    async def open_dm(self, user_id: int) -> int:
        """Return the id of the DM channel with a user (Discord makes it once, then reuses it)."""
        data = await self.client.http.start_private_message(user_id)
        return int(data["id"])

    async def send_to_channel(self, channel_id: int, message: Outgoing) -> dict[str, Any]:
        """Post a normal channel message (needs Send Messages there)."""
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
        return await self._send(route, message, is_edit=False)

    async def _send(
        self, route: Route, message: Outgoing, is_edit: bool, attempts: int | None = None
    ) -> dict[str, Any]:
        last: BaseException | None = None
        for attempt in range(attempts or self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return await self._request(route, message, is_edit)
            except discord.RateLimited:
                raise
            except discord.HTTPException as error:
                if error.status == 401 or (error.status == 404 and "/webhooks/" in route.path):
                    raise TokenDead(str(error.status)) from None
                if error.status < 500:
                    raise
                last = error
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                last = error
            log.warning(
                "%s %s failed (attempt %d): %r", route.method, route.path, attempt + 1, last
            )
        raise DeliveryFailed(repr(last))

    async def _request(self, route: Route, message: Outgoing, is_edit: bool) -> dict[str, Any]:
        files = [discord.File(io.BytesIO(data), filename=name) for name, data in message.files]
        extra: dict[str, Any] = {"attachments": files} if is_edit else {"files": files}
        if message.nonce is not None and not is_edit:
            extra["nonce"] = message.nonce
        params = handle_message_parameters(
            content=message.content,
            embeds=list(message.embeds),
            view=message.view,
            allowed_mentions=message.allowed_mentions,
            **extra,
        )
        with params:
            if params.files:
                return await self.client.http.request(
                    route, files=params.files, form=params.multipart
                )
            return await self.client.http.request(route, json=params.payload)


class Delivery:
    """Follow jobs from the engine and deliver each one to Discord exactly once."""

    def __init__(
        self,
        client: discord.Client,
        engine: Engine,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.poster = Poster(client, settings.bot.delivery_attempts)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finishing: set[str] = set()
        self._closed = False

    def apply(self, settings: Settings) -> None:
        """Use reloaded settings for the next edits and deliveries."""
        self.settings = settings
        self.poster.attempts = settings.bot.delivery_attempts

    @property
    def gallery_url(self) -> str:
        """Return the gallery's base URL, or '' when there is none."""
        return gallery_url(self.settings)

    @property
    def has_outpaint(self) -> bool:
        """Return whether an inpainting model serves zoom out, pan and vary region."""
        return self.engine.status().inpaint_model is not None

    def follow(self, job_id: str, target: Target) -> None:
        """Start following a job (once) until it is delivered."""
        if self._closed:
            # A command still being answered at shutdown: its job stays queued and undelivered
            # in the store, and `resume` follows it after the restart. Following it now would
            # post through a client that is closing ("Session is closed").
            log.info("not following job %s: shutting down, delivered after the restart", job_id)
            return
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._follow(job_id, target), name=f"deliver-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def resume(self) -> int:
        """Follow Discord jobs still queued, and deliver those finished while nobody listened."""
        active = [job for job in self.engine.jobs() if job.requester.source == "discord"]
        origins = [(job.id, job.origin) for job in active]
        ended = await asyncio.to_thread(self.engine.undelivered, "discord")
        origins += [(job.id, job.origin) for job in ended]
        count = 0
        for job_id, origin in origins:
            target = Target.from_origin(origin)
            if target is not None and job_id not in self._tasks:
                self.follow(job_id, target)
                count += 1
        return count

    async def close(self) -> None:
        """Stop following (queued jobs are picked up again by `resume` after a restart)."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait until every followed job is delivered (tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks.values()), timeout=deadline - time.monotonic())

    # -- following -------------------------------------------------------------------------

    async def _follow(self, job_id: str, target: Target) -> None:
        try:
            job = await self.engine.fetch_job(job_id)
            last_edit = -math.inf
            async for event in self.engine.events(job_id):
                if isinstance(event, Finished | Failed | Cancelled):
                    await self._finish(job, event, target)
                    return
                now = time.monotonic()
                if now - last_edit >= self.settings.bot.progress_interval_s:
                    last_edit = now
                    if not await self._show(job, event, target):
                        target = target.without_token()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivering job %s failed", job_id)

    async def _show(self, job: JobView, event: Event, target: Target) -> bool:
        """Edit the progress line; return False once the token is dead."""
        if not target.is_token_alive(self.clock()):
            return True
        prompt = job.request.prompt
        files: tuple[tuple[str, bytes], ...] = ()
        if isinstance(event, Queued):
            content = messages.queued(prompt, event.position, event.eta_s)
        elif isinstance(event, Progress):
            content = messages.progress(prompt, event.step, event.total)
            if event.preview_png:
                files = (("preview.png", event.preview_png),)
        elif isinstance(event, Started):
            content = messages.started(prompt)
        else:
            return True
        outgoing = Outgoing(content, files=files)
        try:
            coro = self.poster.edit_original(target, outgoing, attempts=1)
            await asyncio.wait_for(coro, PROGRESS_TIMEOUT_S)
        except TokenDead:
            return False
        except Exception as error:  # progress is best effort; the result is what matters
            log.info("progress edit for job %s skipped: %r", job.id, error)
        return True

    # -- finishing -------------------------------------------------------------------------

    async def _finish(self, job: JobView, event: Event, target: Target) -> None:
        if job.id in self._finishing:
            return
        self._finishing.add(job.id)
        try:
            if (await self.engine.fetch_job(job.id)).delivered_at is not None:
                return
            if isinstance(event, Finished):
                note = await self._deliver_images(job, event, target)
            elif isinstance(event, Failed):
                note = await self._deliver_text(
                    job, target, messages.failed(job.request.prompt, event.reason)
                )
            else:
                note = await self._deliver_text(job, target, messages.cancelled(job.request.prompt))
            is_public = note.get("url") and not target.is_private
            if await self.engine.mark_delivered(job.id, note) and is_public:
                library = self.engine.library
                await asyncio.to_thread(library.set_message_url, job.id, note["url"])
        finally:
            self._finishing.discard(job.id)

    async def _deliver_images(
        self, job: JobView, event: Finished, target: Target
    ) -> dict[str, Any]:
        shown = [im for im in event.images if target.is_nsfw_channel or not im.is_flagged]
        hidden = len(event.images) - len(shown)
        files, linked = fit_files(await self._read_files(shown, target), target.size_limit)
        gallery = self.gallery_url
        content = f"**{messages.escape(job.request.prompt)}**" + messages.hidden_note(hidden)
        content += messages.input_notes(target.notes)
        if linked:
            urls = " ".join(f"<{messages.image_url(gallery, shown[i].id)}>" for i in linked)
            content += f"\n📎 Too big to attach here, in the gallery: {urls}" if gallery else ""
        outgoing = Outgoing(
            content,
            embeds=[
                messages.result_embed(
                    shown or list(event.images), event.seconds, gallery, job.request.applied
                )
            ],
            files=files,
            view=result_view(job.id, shown, gallery, has_outpaint=self.has_outpaint),
        )
        note = await self._post(job, target, outgoing)
        if note is None:
            return await self._deliver_link(job, target, shown)
        return note

    async def _deliver_text(self, job: JobView, target: Target, text: str) -> dict[str, Any]:
        note = await self._post(job, target, Outgoing(text))
        return note or {"mode": "gave_up"}

    async def _deliver_link(
        self, job: JobView, target: Target, images: Sequence[ImageRecord]
    ) -> dict[str, Any]:
        gallery = self.gallery_url
        where = " ".join(f"<{messages.image_url(gallery, im.id)}>" for im in images)
        text = (
            f"I couldn't post your images for **{messages.escape(job.request.prompt, 200)}**; "
            + (
                f"they're in the gallery: {where}"
                if gallery
                else f"they're saved as job `{job.id}`."
            )
        )
        note = await self._post(job, target, Outgoing(text))
        if note is None:
            log.error(
                "job %s: could not deliver even a link; the images stay in the gallery", job.id
            )
            return {"mode": "gave_up"}
        return {**note, "mode": f"link-{note['mode']}"}

    async def _post(
        self, job: JobView, target: Target, outgoing: Outgoing
    ) -> dict[str, Any] | None:
        """Edit the original response while the token lives, else post to the channel.

        Private results (`/settings`) never go to the channel: by DM they go to the DMs (the
        response then says so), falling back to the private response when DMs are closed;
        a private response whose token died goes to the DMs instead.
        """
        if target.delivery == "dm":
            note = await self._post_dm(job, target, outgoing)
            if note is not None:
                await self._say_sent(job, target, note)
                return note
        if target.is_token_alive(self.clock()):
            try:
                data = await self.poster.edit_original(target, outgoing)
                return _note("interaction", target, data)
            except TokenDead:
                log.info("job %s: interaction token is dead; posting to the channel", job.id)
            except (DeliveryFailed, discord.HTTPException, discord.RateLimited) as error:
                log.warning("job %s: editing the response failed: %r", job.id, error)
        if target.is_private:
            return None if target.delivery == "dm" else await self._post_dm(job, target, outgoing)
        mention = f"<@{target.user_id}> "
        late = dataclasses.replace(
            outgoing,
            content=(mention + outgoing.content)[:2000],
            allowed_mentions=discord.AllowedMentions(
                everyone=False,
                roles=False,
                replied_user=False,
                users=[discord.Object(target.user_id)],
            ),
            nonce=f"imagine-{job.id}"[:25],
        )
        try:
            data = await self.poster.send_to_channel(target.channel_id, late)
            return _note("channel", target, data)
        except (DeliveryFailed, TokenDead, discord.HTTPException, discord.RateLimited) as error:
            log.warning(
                "job %s: posting to channel %s failed: %r", job.id, target.channel_id, error
            )
            return None

    async def _post_dm(
        self, job: JobView, target: Target, outgoing: Outgoing
    ) -> dict[str, Any] | None:
        """Send a result to the requester's DMs; None when they are closed or Discord fails."""
        try:
            channel_id = await self.poster.open_dm(target.user_id)
            message = dataclasses.replace(outgoing, nonce=f"imagine-{job.id}"[:25])
            data = await self.poster.send_to_channel(channel_id, message)
        except (DeliveryFailed, TokenDead, discord.HTTPException, discord.RateLimited) as error:
            log.info("job %s: the requester's DMs took nothing: %r", job.id, error)
            return None
        url = f"https://discord.com/channels/@me/{channel_id}/{data.get('id', '')}"
        return {"mode": "dm", "message_id": str(data.get("id", "")), "url": url}

    async def _say_sent(self, job: JobView, target: Target, note: dict[str, Any]) -> None:
        """Replace the private "thinking…" response with where the result went (best effort)."""
        if not target.is_token_alive(self.clock()):
            return
        text = f"📬 Sent to your DMs: {note['url']}"
        try:
            await self.poster.edit_original(target, Outgoing(text), attempts=1)
        except Exception as error:  # the result is delivered; this line is a courtesy
            log.info("job %s: could not point to the DM: %r", job.id, error)

    async def _read_files(
        self, images: Sequence[ImageRecord], target: Target
    ) -> list[tuple[str, bytes]]:
        spoiler = target.is_nsfw_channel and self.settings.moderation.spoiler_flagged

        def read() -> list[tuple[str, bytes]]:
            files = []
            for image in images:
                name = f"{image.id}.png"
                if spoiler and image.is_flagged:
                    name = "SPOILER_" + name
                files.append((name, self.engine.library.read(image)))
            return files

        return await asyncio.to_thread(read)


def _note(mode: str, target: Target, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "mode": mode,
        "message_id": str(data.get("id", "")),
        "url": target.message_url(data.get("id", "")),
    }


def fit_files(
    files: Sequence[tuple[str, bytes]], limit_bytes: int
) -> tuple[list[tuple[str, bytes]], list[int]]:
    """Keep files within the upload limit: re-encode big ones as JPEG, link what still won't fit."""
    budget = int(limit_bytes * 0.95)
    kept: list[tuple[str, bytes]] = []
    linked: list[int] = []
    used = 0
    for index, (name, data) in enumerate(files):
        if used + len(data) > budget:
            name, data = name.rsplit(".", 1)[0] + ".jpg", _jpeg(data)
        if used + len(data) > budget:
            linked.append(index)
            continue
        kept.append((name, data))
        used += len(data)
    return kept, linked


def _jpeg(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()


def gallery_url(settings: Settings) -> str:
    """Return the gallery base URL: bot.gallery_url, else web.public_url, else the local one."""
    if settings.bot.gallery_url:
        return settings.bot.gallery_url.rstrip("/")
    if settings.web.public_url:
        return settings.web.public_url.rstrip("/")
    if settings.web.enabled:
        return f"http://{settings.web.host}:{settings.web.port}"
    return ""
