"""Moderation through Discord: blocklist with evasion, bans, NSFW rule, run-time moderator checks,
missing bot permissions, allowed channels, config reload good and bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bot.conftest import Harness, wait_for
from tests.fakes.discord import FakeInteraction
from tests.fakes.discord_world import MEMBER_PERMISSIONS

pytestmark = pytest.mark.timeout(90)


async def mod_command(
    harness: Harness, subcommand: str, by: str = "mod", **options: object
) -> FakeInteraction:
    fake = harness.fake
    return await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user(by), "mod", options, subcommand
    )


async def refused(harness: Harness, handle: FakeInteraction) -> str:
    """Return the ephemeral refusal of an interaction and check no job was queued."""
    reply = await harness.answer(handle)
    assert reply.is_ephemeral
    assert harness.engine.store.job_by_key(str(handle.id)) is None
    return reply.content


@pytest.mark.parametrize(
    "prompt",
    [
        "a BadWord here",
        "b a d w o r d",
        "bad\u200bword",
        "ｂａｄｗｏｒｄ",
        "bad\u00adword",
        "b.a.d.w.o.r.d",
    ],
)
async def test_blocklist_refuses_evasions(harness: Harness, prompt: str) -> None:
    await harness.start(moderation={"blocklist": ["badword"]})

    handle = await harness.imagine(prompt)

    assert "(rule: blocklist)" in await refused(harness, handle)
    await wait_for(lambda: harness.engine.store.audit(5, action="rejected"))


async def test_mod_audit_lists_rejected_prompts_with_rule_and_user(harness: Harness) -> None:
    await harness.start(moderation={"blocklist": ["badword"]})
    await refused(harness, await harness.imagine("very BADWORD @everyone"))
    await wait_for(lambda: harness.engine.store.audit(5, action="rejected"))

    reply = await harness.answer(await mod_command(harness, "audit"))

    alice = harness.fake.user("alice").id
    assert "**blocklist**" in reply.content and f"<@{alice}>" in reply.content
    assert "very BADWORD @everyone" in reply.content
    assert reply.allowed_mentions == {"parse": []}


async def test_ban_refuses_with_the_end_and_reason_then_unban_lets_in(harness: Harness) -> None:
    await harness.start()
    alice = harness.fake.user("alice")
    banned = await harness.answer(
        await mod_command(harness, "ban", user=alice, duration="1h", reason="spam")
    )
    assert banned.content.startswith(f"Banned <@{alice.id}> until <t:")

    text = await refused(harness, await harness.imagine())
    assert "banned from imagine until <t:" in text and "Reason: spam." in text

    await harness.answer(await mod_command(harness, "unban", user=alice))
    handle = await harness.imagine()
    await harness.delivered(await harness.job_id(handle))


async def test_bad_ban_duration_names_the_option(harness: Harness) -> None:
    await harness.start()

    handle = await mod_command(harness, "ban", user=harness.fake.user("bob"), duration="soon")

    assert "`duration`" in (await harness.answer(handle)).content
    assert harness.engine.store.bans() == []


async def test_nsfw_terms_only_in_age_restricted_channels(harness: Harness) -> None:
    await harness.start(moderation={"nsfw_terms": ["nude"]})

    text = await refused(harness, await harness.imagine("a nude statue"))
    handle = await harness.imagine("a nude statue", channel_id=harness.fake.nsfw_channel.id)

    assert "(rule: nsfw)" in text
    await harness.delivered(await harness.job_id(handle))


async def test_channels_outside_the_allowed_list_are_refused(harness: Harness) -> None:
    await harness.start(moderation={"allowed_channels": [str(harness.fake.text_channel.id)]})

    handle = await harness.imagine(channel_id=harness.fake.nsfw_channel.id)

    assert "(rule: channel)" in await refused(harness, handle)


async def test_missing_bot_permissions_answer_ephemerally_and_queue_nothing(
    harness: Harness,
) -> None:
    await harness.start()

    handle = await harness.imagine(channel_id=harness.fake.locked_channel.id)

    text = await refused(harness, handle)
    assert "Send Messages, Attach Files, Embed Links" in text
    assert harness.engine.status().queue_length == 0


@pytest.mark.parametrize("subcommand", ["queue", "audit", "reload"])
async def test_moderator_commands_are_checked_at_run_time(harness: Harness, subcommand: str):
    await harness.start()

    handle = await mod_command(harness, subcommand, by="alice")

    assert (await harness.answer(handle)).content == "Only moderators can use this command."


async def test_mod_cancel_is_refused_for_members_and_works_for_moderators(
    harness: Harness,
) -> None:
    await harness.start()
    await harness.imagine("slow", user="bob", steps=40)
    job_id = await harness.job_id(await harness.imagine())

    bob = await harness.answer(await mod_command(harness, "cancel", by="bob", job=job_id))
    mod = await harness.answer(await mod_command(harness, "cancel", job=job_id))

    assert bob.content == "Only moderators can use this command."
    assert mod.content == f"Cancelled job `{job_id}`."
    await wait_for(lambda: harness.engine.job(job_id).state == "cancelled")


async def test_a_configured_moderator_role_is_a_moderator(harness: Harness) -> None:
    role = harness.fake.guild.roles[2]
    await harness.start(moderation={"moderator_roles": [str(role.id)]})
    fake = harness.fake

    handle = await fake.send_slash_command(
        fake.guild.id,
        fake.text_channel.id,
        fake.user("bob"),
        "mod",
        {},
        "queue",
        roles=[role],
        member_permissions=MEMBER_PERMISSIONS,
    )

    assert "The queue is empty." in (await harness.answer(handle)).content


def write_config(path: Path, harness: Harness, blocklist: list[str], max_steps: object) -> None:
    settings = harness.settings
    assert settings is not None
    path.write_text(
        f"""
[engine]
model = {str(settings.engine.model)!r}
data_dir = {str(settings.engine.data_dir)!r}
[limits]
default_steps = 2
max_per_user = 50
max_steps = {max_steps}
[moderation]
blocklist = {blocklist!r}
[bot]
api_base = {settings.bot.api_base!r}
gateway_url = {settings.bot.gateway_url!r}
[web]
enabled = false
""",
        encoding="utf-8",
    )


async def test_reload_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one(
    harness: Harness, tmp_path: Path
) -> None:
    await harness.start()
    config = tmp_path / "config.toml"
    harness.config_path = str(config)
    write_config(config, harness, ["dragon"], 50)

    good = await harness.answer(await mod_command(harness, "reload"))
    assert good.content == f"Config reloaded from `{config}`."
    assert "(rule: blocklist)" in await refused(harness, await harness.imagine("a dragon"))

    write_config(config, harness, [], 0)
    bad = await harness.answer(await mod_command(harness, "reload"))

    assert bad.content.startswith("Config not reloaded; the old one stays in force.")
    assert "`limits.max_steps`" in bad.content and "got 0" in bad.content
    assert harness.engine.settings.moderation.blocklist == ("dragon",)
