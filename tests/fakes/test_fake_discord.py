"""The real discord.py client against the fake Discord: commands, buttons, faults, gateway."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from .discord import PRIVILEGED_INTENTS, Call, FakeDiscord, FakeUpload

pytestmark = pytest.mark.timeout(15)

IMAGE_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original$"
FOLLOWUP = r"/webhooks/\d+/[^/]+$"
CALLBACK = r"/interactions/\d+/[^/]+/callback$"


class Reroll(discord.ui.DynamicItem[discord.ui.Button], template=r"reroll:(?P<job>\d+)"):
    """A persistent button keyed by job id, as the bot's result buttons are."""

    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Re-roll", custom_id=f"reroll:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]) -> Reroll:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        interaction.client.presses.append((self.job, interaction.user.id))
        await interaction.response.defer()


class Ask(discord.ui.Modal, title="Ask"):
    """A modal with a prefilled paragraph and an optional short input."""

    prompt: discord.ui.TextInput = discord.ui.TextInput(
        label="Prompt", custom_id="prompt", style=discord.TextStyle.paragraph, max_length=20
    )
    note: discord.ui.TextInput = discord.ui.TextInput(
        label="Note", custom_id="note", required=False
    )

    def __init__(self, answers: list[tuple[str, str]], prompt: str) -> None:
        super().__init__(custom_id="ask:1")
        self.answers = answers
        self.prompt.default = prompt

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.answers.append((self.prompt.value, self.note.value))
        await interaction.response.send_message("got it", ephemeral=True)


class TestBot(commands.Bot):
    """The shapes the real bot uses: defer → edit → follow-up with a file and a button."""

    __test__ = False

    def __init__(self, trace: aiohttp.TraceConfig, guild_id: int) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
            http_trace=trace,
        )
        self.guild_id = guild_id
        self.presses: list[tuple[int, int]] = []
        self.bans: list[discord.Member | discord.User] = []
        self.errors: list[Exception] = []
        self.gate = asyncio.Event()
        self.synced: list[app_commands.AppCommand] = []
        self.tree.add_command(self.slash("imagine", self.imagine))
        self.tree.add_command(self.slash("late", self.late))
        self.tree.add_command(self.slash("stall", self.stall))
        self.tree.add_command(self.slash("quick", self.quick))
        self.tree.add_command(self.slash("ask", self.ask))
        self.tree.add_command(app_commands.ContextMenu(name="Look at this", callback=self.look))
        self.answers: list[tuple[str, str]] = []
        self.looked: list[discord.Message] = []
        moderation = app_commands.Group(name="mod", description="Moderator commands")
        moderation.add_command(self.slash("ban", self.ban))
        self.tree.add_command(moderation, guild=discord.Object(guild_id))

    @staticmethod
    def slash(name: str, callback) -> app_commands.Command:
        return app_commands.Command(name=name, description=f"/{name}", callback=callback)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Skip discord.py's 5 s sleep before a re-IDENTIFY (after a non-resumable session)."""

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Reroll)
        self.synced = await self.tree.sync()
        self.synced += await self.tree.sync(guild=discord.Object(self.guild_id))

    async def imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        """Defer, edit the original response, then follow up with an image and a button."""
        try:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"Queued: {prompt}")
            view = discord.ui.View(timeout=None)
            view.add_item(Reroll(7))
            image = discord.File(io.BytesIO(IMAGE_BYTES), filename="image.png")
            await interaction.followup.send(content="Done", file=image, view=view)
        except Exception as exc:
            self.errors.append(exc)

    async def late(self, interaction: discord.Interaction) -> None:
        """Defer, then edit once the test opens the gate."""
        try:
            await interaction.response.defer()
            await self.gate.wait()
            await interaction.edit_original_response(content="too late?")
        except Exception as exc:
            self.errors.append(exc)

    async def stall(self, interaction: discord.Interaction) -> None:
        """Defer only once the test opens the gate."""
        try:
            await self.gate.wait()
            await interaction.response.defer()
        except Exception as exc:
            self.errors.append(exc)

    async def quick(self, interaction: discord.Interaction) -> None:
        """Defer privately, then answer with a follow-up."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("result")

    async def ask(self, interaction: discord.Interaction) -> None:
        """Open a modal with the prompt prefilled."""
        await interaction.response.send_modal(Ask(self.answers, "a red fox"))

    async def look(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """A message context menu: remember the message, then answer."""
        self.looked.append(message)
        await interaction.response.send_message("looked", ephemeral=True)

    async def ban(self, interaction: discord.Interaction, user: discord.Member) -> None:
        self.bans.append(user)
        await interaction.response.send_message(f"banned {user.name}", ephemeral=True)


@pytest.fixture
def fake_options() -> dict[str, object]:
    """Keyword arguments for FakeDiscord; override with @pytest.mark.parametrize."""
    return {}


@pytest.fixture
async def fake(fake_options: dict[str, object]) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(heartbeat_interval_s=0.5, **fake_options) as server:
        yield server
        assert server.unknown_calls == [], "the bot called routes the fake does not know"


@pytest.fixture
def requested_urls() -> list[str]:
    return []


@pytest.fixture
async def start_bot(
    fake: FakeDiscord, requested_urls: list[str]
) -> AsyncIterator[Callable[..., Awaitable[TestBot]]]:
    bots: list[tuple[TestBot, asyncio.Task[None]]] = []

    async def on_request_start(session, context, params: aiohttp.TraceRequestStartParams):
        requested_urls.append(str(params.url))

    async def start(token: str | None = None, wait: bool = True) -> TestBot:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_request_start)
        bot = TestBot(trace, fake.guild.id)
        task = asyncio.create_task(bot.start(token or fake.token))
        bots.append((bot, task))
        if wait:
            await asyncio.wait_for(bot.wait_until_ready(), 5)
        return bot

    yield start
    for bot, task in bots:
        await bot.close()
        await asyncio.wait([task], timeout=5)
    here = (yarl.URL(fake.origin).host, yarl.URL(fake.origin).port)
    elsewhere = [u for u in requested_urls if (yarl.URL(u).host, yarl.URL(u).port) != here]
    assert elsewhere == [], "discord.py tried to reach something other than the fake"


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def route_is(method: str, path_regex: str) -> Callable[[Call], bool]:
    pattern = re.compile(path_regex)
    return lambda call: call.method == method and pattern.search(call.path) is not None


async def run_imagine(fake: FakeDiscord, prompt: str = "a red fox"):
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "imagine", {"prompt": prompt}
    )
    await fake.wait_for_call(lambda c: route_is("POST", FOLLOWUP)(c) and c.fault is None)
    return handle


async def test_bot_syncs_commands_and_gets_ids(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()

    stored = [*fake.commands(), *fake.commands(fake.guild.id)]
    assert {c.name: c.id for c in bot.synced} == {c["name"]: int(c["id"]) for c in stored}
    assert [c["name"] for c in fake.commands(fake.guild.id)] == ["mod"]
    assert {c["name"] for c in fake.commands()} == {
        "imagine", "late", "stall", "quick", "ask", "Look at this"
    }  # fmt: skip


async def test_slash_command_records_defer_then_edit_then_followup_with_file(
    fake: FakeDiscord, start_bot
) -> None:
    await start_bot()

    handle = await run_imagine(fake)

    routes = [c.route for c in fake.calls if c.route and "/gateway" not in c.route]
    callback, edit, followup = routes[-3:]
    assert callback.startswith("POST /interactions/")
    assert edit.startswith("PATCH /webhooks/")
    assert followup.startswith("POST /webhooks/")
    defer_call = fake.calls_to("POST", CALLBACK)[-1]
    assert defer_call.json == {"type": 5} and defer_call.query == {"with_response": "1"}
    upload = fake.calls_to("POST", FOLLOWUP)[-1].files[0]
    assert (upload.filename, upload.data) == ("image.png", IMAGE_BYTES)
    original = fake.original_response(handle.token)
    assert original is not None and original.content == "Queued: a red fox"
    assert not original.is_loading
    [result] = fake.followups(handle.token)
    assert result.attachments[0].data == IMAGE_BYTES
    assert result.components[0]["components"][0]["custom_id"] == "reroll:7"


async def test_interaction_carries_what_app_commands_need(fake: FakeDiscord, start_bot) -> None:
    await start_bot()

    handle = await fake.send_slash_command(
        fake.guild.id, fake.nsfw_channel.id, fake.user("mod"), "imagine", {"prompt": "x"}
    )

    payload = handle.payload
    assert payload["data"]["id"] == fake.commands()[0]["id"]
    assert payload["data"]["options"] == [{"name": "prompt", "type": 3, "value": "x"}]
    assert payload["channel"]["nsfw"] is True
    assert int(payload["member"]["permissions"]) & discord.Permissions(manage_messages=True).value
    assert payload["attachment_size_limit"] == fake.settings.attachment_size_limit


async def test_attachment_bytes_are_served_back_to_discord_py(fake: FakeDiscord, start_bot):
    bot = await start_bot()
    handle = await run_imagine(fake)
    [result] = fake.followups(handle.token)

    channel = bot.get_channel(fake.text_channel.id)
    message = await channel.fetch_message(result.id)

    assert await message.attachments[0].read() == IMAGE_BYTES


async def test_button_press_reaches_the_dynamic_item(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    handle = await run_imagine(fake)
    [result] = fake.followups(handle.token)

    press = await fake.press_button(result.id, "reroll:7", fake.user("bob"))

    await fake.wait_for_call(route_is("POST", rf"/interactions/{press.id}/"))
    assert bot.presses == [(7, fake.user("bob").id)]
    assert fake.interaction(press.token).callback_type == 6


async def test_rate_limited_edit_is_retried_and_succeeds(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    fake.fail_next("PATCH", ORIGINAL, 429, retry_after=0.05)

    handle = await run_imagine(fake)

    edits = fake.calls_to("PATCH", ORIGINAL)
    assert [c.status for c in edits] == [429, 200]
    assert fake.original_response(handle.token).content == "Queued: a red fox"
    assert bot.errors == []


async def test_global_rate_limit_is_retried(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    fake.fail_next("GET", r"/channels/\d+$", 429, retry_after=0.05, global_=True)

    channel = await bot.fetch_channel(fake.text_channel.id)

    assert channel.id == fake.text_channel.id
    assert [c.status for c in fake.calls_to("GET", r"/channels/\d+$")] == [429, 200]


async def test_server_error_on_followup_is_retried(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    fake.fail_next("POST", FOLLOWUP, 502)

    handle = await run_imagine(fake)

    assert [c.status for c in fake.calls_to("POST", FOLLOWUP)] == [502, 200]
    assert len(fake.followups(handle.token)) == 1
    assert bot.errors == []


async def test_connection_reset_on_upload_is_raised_not_retried(fake: FakeDiscord, start_bot):
    """discord.py retries resets only for errno 54/10054 (macOS/Windows), never on Linux."""
    bot = await start_bot()
    fake.fail_next("POST", FOLLOWUP, "reset")

    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "imagine", {"prompt": "x"}
    )
    await until(lambda: bot.errors)

    assert isinstance(bot.errors[0], aiohttp.ClientError)
    assert [c.fault for c in fake.calls_to("POST", FOLLOWUP)] == ["reset"]
    assert fake.followups(handle.token) == []


async def test_aiohttp_itself_retries_a_reset_get_on_a_pooled_connection(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    fake.fail_next("GET", r"/channels/\d+$", "reset")

    await bot.fetch_channel(fake.text_channel.id)

    assert [c.status for c in fake.calls_to("GET", r"/channels/\d+$")] == [0, 200]


async def test_expired_token_gives_the_caller_401(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "late"
    )
    await fake.wait_for_call(route_is("POST", CALLBACK))

    fake.expire_token(handle.token)
    bot.gate.set()
    await until(lambda: bot.errors)

    [exc] = bot.errors
    assert isinstance(exc, discord.HTTPException)
    assert (exc.status, exc.code) == (401, 50027)


class HandClock:
    """A monotonic clock the test moves by hand, to age interaction tokens."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


CLOCK = HandClock()


@pytest.mark.parametrize("fake_options", [{"clock": CLOCK}])
async def test_token_expires_after_its_lifetime(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    CLOCK.now_s = 0.0
    await fake.send_slash_command(fake.guild.id, fake.text_channel.id, fake.user("bob"), "late")
    await fake.wait_for_call(route_is("POST", CALLBACK))

    CLOCK.now_s = 15 * 60.0
    bot.gate.set()
    await until(lambda: bot.errors)

    assert [getattr(e, "status", None) for e in bot.errors] == [401]


async def test_gateway_drop_resumes_and_next_interaction_arrives(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)

    await fake.drop_gateway(code=1001)
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "imagine", {"prompt": "after"}
    )
    await asyncio.wait_for(resumed.wait(), 5)
    await fake.wait_for_call(route_is("POST", FOLLOWUP))

    assert fake.original_response(handle.token).content == "Queued: after"
    events = fake.gateway_events
    resume = await fake.wait_for_gateway(lambda e: e.direction == "in" and e.op == 6)
    replay = await fake.wait_for_gateway(lambda e: e.name == "INTERACTION_CREATE")
    assert events.index(replay) > events.index(resume), "sent while disconnected, replayed"
    assert [e.data["path"] for e in events if e.direction == "open"] == [
        "/gateway",
        "/gateway-resume",
    ]


async def test_abrupt_gateway_drop_is_resumed(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)

    await fake.drop_gateway(code=None)

    await asyncio.wait_for(resumed.wait(), 5)


async def test_invalid_session_not_resumable_makes_the_bot_identify_again(
    fake: FakeDiscord, start_bot
) -> None:
    await start_bot()

    await fake.invalidate_session(resumable=False)
    await fake.wait_ready()

    identifies = [e for e in fake.gateway_events if e.direction == "in" and e.op == 2]
    assert len(identifies) == 2
    await run_imagine(fake)


async def test_bad_token_fails_login_without_reconnecting(fake: FakeDiscord, start_bot) -> None:
    bot = TestBot(aiohttp.TraceConfig(), fake.guild.id)

    with pytest.raises(discord.LoginFailure):
        await asyncio.wait_for(bot.start("wrong-token"), 5)
    await bot.close()

    assert [c.path for c in fake.calls] == ["/api/v10/users/@me"]
    assert [e for e in fake.gateway_events if e.direction == "open"] == []


@pytest.mark.parametrize("fake_options", [{"disallowed_intents": PRIVILEGED_INTENTS}])
async def test_disallowed_intents_stop_the_client(fake: FakeDiscord) -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.all())

    with pytest.raises(discord.PrivilegedIntentsRequired):
        await asyncio.wait_for(bot.start(fake.token), 5)
    await bot.close()

    closes = [e.data for e in fake.gateway_events if e.direction == "close"]
    assert closes == [4014]


async def test_channel_send_without_permission_is_forbidden(fake: FakeDiscord, start_bot):
    bot = await start_bot()
    locked = bot.get_channel(fake.locked_channel.id)

    with pytest.raises(discord.Forbidden):
        await locked.send("hello")


async def test_channel_message_create_edit_delete(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    channel = bot.get_channel(fake.text_channel.id)

    sent = await channel.send("hi", file=discord.File(io.BytesIO(b"abc"), "a.txt"))
    await sent.edit(content="edited", attachments=[])
    await sent.delete()

    [stored] = fake.messages(fake.text_channel.id, include_deleted=True)
    assert stored.is_deleted and stored.content == "edited" and stored.attachments == []
    assert stored.history[0]["content"] == "hi"


@pytest.mark.parametrize("fake_options", [{"attachment_size_limit": 1024}])
async def test_too_big_upload_is_refused_with_413(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()

    handle = await run_imagine(fake)
    await until(lambda: bot.errors)

    assert [getattr(e, "status", None) for e in bot.errors] == [413]
    assert handle.payload["attachment_size_limit"] == 1024
    assert fake.followups(handle.token) == []


async def test_bot_connects_with_v10_json_and_zlib_stream(
    fake: FakeDiscord, start_bot, requested_urls: list[str]
) -> None:
    await start_bot()

    [opened] = [e.data for e in fake.gateway_events if e.direction == "open"]
    assert opened == {"path": "/gateway", "v": "10", "encoding": "json", "compress": "zlib-stream"}
    assert any(url.startswith(fake.gateway_url) for url in requested_urls)


async def test_subcommand_with_user_option_is_resolved_to_a_member(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    bob = fake.user("bob")

    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("mod"), "mod", {"user": bob}, "ban"
    )
    await fake.wait_for_call(route_is("POST", CALLBACK))

    [banned] = bot.bans
    assert isinstance(banned, discord.Member) and banned.id == bob.id
    assert handle.payload["data"]["guild_id"] == str(fake.guild.id)
    reply = fake.original_response(handle.token)
    assert reply is not None and reply.is_ephemeral and reply.content == "banned bob"


async def test_slash_command_in_a_dm_reaches_the_bot(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    dm_channel_id = 500_000_000_000_000_001

    handle = await fake.send_slash_command(
        None, dm_channel_id, fake.user("alice"), "imagine", {"prompt": "dm"}
    )
    await fake.wait_for_call(route_is("POST", FOLLOWUP))

    assert bot.errors == []
    assert fake.original_response(handle.token).channel_id == dm_channel_id


@pytest.mark.parametrize("fake_options", [{"clock": CLOCK, "callback_deadline_s": 3}])
async def test_callback_after_the_deadline_is_unknown_interaction(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    CLOCK.now_s = 0.0
    await fake.send_slash_command(fake.guild.id, fake.text_channel.id, fake.user("bob"), "stall")
    await fake.wait_for_gateway(lambda e: e.name == "INTERACTION_CREATE")

    CLOCK.now_s = 3.5
    bot.gate.set()
    await until(lambda: bot.errors)

    [exc] = bot.errors
    assert isinstance(exc, discord.NotFound) and exc.code == 10062


async def test_resumable_invalid_session_is_resumed(fake: FakeDiscord, start_bot) -> None:
    await start_bot()

    await fake.invalidate_session(resumable=True)

    await fake.wait_for_gateway(lambda e: e.name == "RESUMED")
    await run_imagine(fake)
    assert [e for e in fake.gateway_events if e.direction == "in" and e.op == 2][1:] == []


async def test_invalid_command_definitions_are_refused(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    bad = [{"name": "Imagine Now", "description": "spaces and capitals", "type": 1}]

    with pytest.raises(discord.HTTPException) as caught:
        await bot.http.bulk_upsert_global_commands(fake.application_id, bad)

    assert (caught.value.status, caught.value.code) == (400, 50035)


async def test_reconnect_request_is_resumed(fake: FakeDiscord, start_bot) -> None:
    await start_bot()

    await fake.request_reconnect()

    await fake.wait_for_gateway(lambda e: e.name == "RESUMED")
    await run_imagine(fake)


async def test_gateway_closes_4004_on_a_bad_identify_token(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as ws:
        hello = await ws.receive_json(timeout=5)
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {}}})
        closing = await ws.receive(timeout=5)

    assert hello["op"] == 10
    assert (closing.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 4004)


async def test_503_on_a_channel_send_is_not_retried_by_discord_py(
    fake: FakeDiscord, start_bot
) -> None:
    """HTTPClient retries only 500, 502, 504 and 524; webhook calls retry every 5xx."""
    bot = await start_bot()
    fake.fail_next("POST", r"/channels/\d+/messages$", 503)
    channel = bot.get_channel(fake.text_channel.id)

    with pytest.raises(discord.DiscordServerError):
        await channel.send("hello")

    assert [c.status for c in fake.calls_to("POST", r"/channels/\d+/messages$")] == [503]


async def test_first_followup_after_a_deferral_fills_the_loading_message(
    fake: FakeDiscord, start_bot
) -> None:
    await start_bot()

    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "quick"
    )
    await fake.wait_for_call(route_is("POST", FOLLOWUP))

    original = fake.original_response(handle.token)
    assert original is not None and original.content == "result"
    assert original.is_ephemeral and not original.is_loading
    assert fake.followups(handle.token) == []


async def ask(fake: FakeDiscord):
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "ask"
    )
    await fake.wait_for_call(route_is("POST", rf"/interactions/{handle.id}/"))
    return handle


async def test_modal_is_recorded_and_its_submit_reaches_the_modal(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    handle = await ask(fake)

    assert handle.callback_type == 9
    assert handle.callback_data["custom_id"] == "ask:1"
    submit = await fake.submit_modal(handle, {"note": "bright"})

    await fake.wait_for_call(route_is("POST", rf"/interactions/{submit.id}/"))
    assert submit.type == 5
    assert bot.answers == [("a red fox", "bright")]
    reply = fake.original_response(submit.token)
    assert reply is not None and reply.content == "got it" and reply.is_ephemeral


async def test_modal_submit_refuses_what_the_discord_client_would_not_send(
    fake: FakeDiscord, start_bot
) -> None:
    await start_bot()
    handle = await ask(fake)

    with pytest.raises(ValueError, match="prompt"):
        await fake.submit_modal(handle, {"prompt": "x" * 21})
    with pytest.raises(ValueError, match="prompt"):
        await fake.submit_modal(handle, {"prompt": ""})
    with pytest.raises(ValueError, match="missing"):
        await fake.submit_modal(handle, {"missing": "x"})


async def test_submit_modal_needs_a_modal_answer(fake: FakeDiscord, start_bot) -> None:
    await start_bot()
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "quick"
    )
    await fake.wait_for_call(route_is("POST", rf"/interactions/{handle.id}/"))

    with pytest.raises(AssertionError, match="not answered with a modal"):
        await fake.submit_modal(handle, {})


async def test_a_modal_discord_would_refuse_is_a_400(fake: FakeDiscord, start_bot) -> None:
    bot = await start_bot()
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "quick"
    )
    modal = {"custom_id": "m", "title": "t" * 46, "components": []}

    with pytest.raises(discord.HTTPException) as caught:
        await bot.http.request(
            discord.http.Route(
                "POST",
                "/interactions/{id}/{token}/callback",
                id=handle.id,
                token=handle.token,
            ),
            json={"type": 9, "data": modal},
        )

    assert (caught.value.status, caught.value.code) == (400, 50035)


async def test_message_command_carries_the_resolved_message_and_attachment(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    upload = FakeUpload("cat.png", IMAGE_BYTES)
    message = fake.post_user_message(fake.text_channel.id, fake.user("bob"), "look", [upload])

    handle = await fake.send_message_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "Look at this", message
    )

    await fake.wait_for_call(route_is("POST", rf"/interactions/{handle.id}/"))
    [seen] = bot.looked
    assert (seen.id, seen.content, seen.author.id) == (message.id, "look", fake.user("bob").id)
    [attachment] = seen.attachments
    assert attachment.filename == "cat.png" and attachment.size == len(IMAGE_BYTES)
    assert await attachment.read() == IMAGE_BYTES
    assert fake.calls_to("GET", r"^/attachments/")


async def test_a_reaction_reaches_the_bot_with_member_and_author_and_its_removal_too(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    added: list[discord.RawReactionActionEvent] = []
    removed: list[discord.RawReactionActionEvent] = []

    async def on_add(event: discord.RawReactionActionEvent) -> None:
        added.append(event)

    async def on_remove(event: discord.RawReactionActionEvent) -> None:
        removed.append(event)

    bot.add_listener(on_add, "on_raw_reaction_add")
    bot.add_listener(on_remove, "on_raw_reaction_remove")
    alice, bob = fake.user("alice"), fake.user("bob")
    message = fake.post_user_message(fake.text_channel.id, alice, "hi")

    assert await fake.react(message, bob)
    assert not await fake.react(message, bob)  # Discord keeps one reaction per user and emoji
    assert await fake.unreact(message, bob)
    await until(lambda: removed)

    [add] = added
    ids = (add.user_id, add.message_id, add.channel_id, add.guild_id)
    assert ids == (bob.id, message.id, fake.text_channel.id, fake.guild.id)
    assert str(add.emoji) == "⭐" and add.message_author_id == alice.id
    assert add.member is not None and add.member.name == "bob"
    [remove] = removed
    assert (remove.user_id, str(remove.emoji), remove.member) == (bob.id, "⭐", None)
    assert message.reactions == {}


async def test_reactions_are_listed_by_user_id_in_pages_and_the_bot_reacts_as_me(
    fake: FakeDiscord, start_bot
) -> None:
    bot = await start_bot()
    channel = bot.get_channel(fake.text_channel.id)
    stored = fake.post_user_message(fake.text_channel.id, fake.user("alice"), "hi")
    for name in ("mod", "alice", "owner", "bob"):
        await fake.react(stored, fake.user(name))

    await (await channel.fetch_message(stored.id)).add_reaction("⭐")
    fetched = await channel.fetch_message(stored.id)
    [reaction] = fetched.reactions
    everyone = sorted([user.id async for user in reaction.users()])
    page = await bot.http.get_reaction_users(channel.id, stored.id, "⭐", 2, after=everyone[1])
    await fetched.remove_reaction("⭐", bot.user)

    assert (str(reaction.emoji), reaction.count, reaction.me) == ("⭐", 5, True)
    assert bot.user.id in everyone and len(set(everyone)) == 5
    assert [int(user["id"]) for user in page] == everyone[2:4]  # Discord pages by user id
    assert bot.user.id not in stored.reactions["⭐"] and len(stored.reactions["⭐"]) == 4
    assert fake.calls_to("DELETE", r"/reactions/⭐/@me$")


async def test_reactions_are_not_dispatched_without_the_reactions_intent(
    fake: FakeDiscord,
) -> None:
    client = discord.Client(intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)
    task = asyncio.create_task(client.start(fake.token))
    await asyncio.wait_for(client.wait_until_ready(), 5)
    message = fake.post_user_message(fake.text_channel.id, fake.user("alice"), "hi")

    assert await fake.react(message, fake.user("bob"))
    await client.close()
    await asyncio.wait([task], timeout=5)

    assert message.reactions == {"⭐": [fake.user("bob").id]}
    names = {event.name for event in fake.gateway_events}
    assert "GUILD_CREATE" in names and "MESSAGE_REACTION_ADD" not in names
