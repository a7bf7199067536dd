"""Moderation: blocklist with evasion, the NSFW-channel rule, channels, effective limits."""

from __future__ import annotations

import pytest

from engine import Blocked, Requester, normalise_text
from engine.config import LimitOverride, LimitSettings, ModerationSettings
from engine.limits import effective
from engine.moderation import Moderator

MODERATOR = Moderator(
    ModerationSettings(
        blocklist=("gore", "re:\\bkill\\w*"),
        nsfw_terms=("nude",),
        allowed_channels=("10",),
        moderator_roles=("99",),
    )
)
MEMBER = Requester(source="discord", user_id="1", guild_id="5", channel_id="10")


@pytest.mark.parametrize(
    "prompt", ["GORE", "g o r e", "g.o.r.e", "go\u200bre", "ｇｏｒｅ", "lots of gore!", "killers"]
)
def test_blocklist_sees_through_evasion(prompt: str) -> None:
    with pytest.raises(Blocked) as caught:
        MODERATOR.check_prompt(normalise_text(prompt), MEMBER)
    assert caught.value.rule == "blocklist"


@pytest.mark.parametrize("prompt", ["a gorge at dawn", "gorey", "skill tree"])
def test_blocklist_does_not_match_inside_words(prompt: str) -> None:
    MODERATOR.check_prompt(normalise_text(prompt), MEMBER)


def test_nsfw_terms_only_in_age_restricted_channels() -> None:
    with pytest.raises(Blocked) as caught:
        MODERATOR.check_prompt("a nude statue", MEMBER)
    assert caught.value.rule == "nsfw"
    nsfw_member = Requester(source="discord", user_id="1", is_nsfw_channel=True)
    MODERATOR.check_prompt("a nude statue", nsfw_member)


def test_channels_off_the_allowed_list_are_refused() -> None:
    elsewhere = Requester(source="discord", user_id="1", channel_id="11")
    with pytest.raises(Blocked) as caught:
        MODERATOR.check_channel(elsewhere)
    assert caught.value.rule == "channel"
    MODERATOR.check_channel(MEMBER)


def test_moderator_role_is_recognised() -> None:
    assert MODERATOR.is_moderator(Requester(source="discord", user_id="2", role_ids=("99",)))
    assert not MODERATOR.is_moderator(MEMBER)


def test_guild_override_then_most_generous_role_wins() -> None:
    limits = LimitSettings(
        cooldown_s=30,
        max_per_user=2,
        guilds={"5": LimitOverride(cooldown_s=10)},
        roles={"7": LimitOverride(cooldown_s=5), "8": LimitOverride(cooldown_s=0, max_per_user=6)},
    )
    member = Requester(source="discord", user_id="1", guild_id="5", role_ids=("7", "8"))
    result = effective(limits, member)
    assert result.cooldown_s == 0
    assert result.max_per_user == 6
    plain = effective(limits, Requester(source="discord", user_id="1", guild_id="5"))
    assert plain.cooldown_s == 10
    assert plain.max_per_user == 2
