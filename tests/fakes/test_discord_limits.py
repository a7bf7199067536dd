"""The fake refuses what Discord's documentation says Discord refuses, one past each limit."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import discord_limits as limits


def embed(**overrides: Any) -> dict[str, Any]:
    return {"title": "t", "description": "d", **overrides}


def button(custom_id: str = "imagine:reroll:abc", **overrides: Any) -> dict[str, Any]:
    return {"type": 2, "style": 2, "custom_id": custom_id, **overrides}


def row(*components: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(components)}


ALLOWED = [
    {"content": "x" * 2000},
    {"embeds": [embed(title="x" * 256, description="y" * 4096)]},
    {"embeds": [embed(fields=[{"name": "n", "value": "v"}] * 25)]},
    {"components": [row(*(button(f"b{r}{i}") for i in range(5))) for r in range(5)]},
    {"components": [row({"type": 2, "style": 5, "url": "https://x.test/" + "a" * 497})]},
    {"allowed_mentions": {"parse": [], "users": ["1"] * 100}},
    {"nonce": "imagine-" + "a" * 17},
]
REFUSED = [
    ({"content": "x" * 2001}, "content"),
    ({"embeds": [embed()] * 11}, "embeds"),
    ({"embeds": [embed(title="x" * 257)]}, "embeds.0.title"),
    ({"embeds": [embed(description="y" * 4097)]}, "embeds.0.description"),
    ({"embeds": [embed(fields=[{"name": "n", "value": "v"}] * 26)]}, "embeds.0.fields"),
    ({"embeds": [embed(fields=[{"name": "n", "value": "v" * 1025}])]}, "embeds.0.fields.0.value"),
    ({"embeds": [embed(fields=[{"name": "", "value": "v"}])]}, "embeds.0.fields.0.name"),
    ({"embeds": [embed(footer={"text": "f" * 2049})]}, "embeds.0.footer.text"),
    ({"embeds": [embed(description="y" * 4000), embed(description="z" * 2001)]}, "embeds"),
    ({"components": [row(button())] * 6}, "components"),
    ({"components": [row(*(button(f"b{i}") for i in range(6)))]}, "components.0.components"),
    ({"components": [row(button("x" * 101))]}, "components.0.components.0.custom_id"),
    ({"components": [row(button(), button())]}, "components.0.components.1.custom_id"),
    ({"components": [row(button(label="l" * 81))]}, "components.0.components.0.label"),
    ({"components": [row({"type": 2, "style": 5, "url": "u", "custom_id": "x"})]}, None),
    ({"allowed_mentions": {"parse": ["users"], "users": ["1"]}}, "allowed_mentions.users"),
    ({"allowed_mentions": {"parse": ["here"]}}, "allowed_mentions.parse"),
    ({"nonce": "n" * 26}, "nonce"),
]


@pytest.mark.parametrize("payload", ALLOWED)
def test_bodies_at_each_limit_are_allowed(payload: dict[str, Any]) -> None:
    assert limits.message_problem(payload, files=10) is None


@pytest.mark.parametrize(("payload", "field"), REFUSED)
def test_one_past_each_limit_is_refused_naming_the_field(
    payload: dict[str, Any], field: str | None
) -> None:
    problem = limits.message_problem(payload, files=0)
    assert problem is not None
    if field is not None:
        assert problem[0] == field


def test_more_than_ten_files_are_refused() -> None:
    assert limits.message_problem({"content": "x"}, files=11) == (
        "attachments",
        "Must be 10 or fewer in length.",
    )


def text_input(**overrides: Any) -> dict[str, Any]:
    return {"type": 4, "custom_id": "prompt", "style": 2, "label": "Prompt", **overrides}


@pytest.mark.parametrize(
    ("modal", "field"),
    [
        ({"custom_id": "m", "title": "t" * 46, "components": [row(text_input())]}, "data.title"),
        ({"custom_id": "m", "title": "t", "components": []}, "data.components"),
        (
            {"custom_id": "m", "title": "t", "components": [row(text_input())] * 6},
            "data.components",
        ),
        (
            {"custom_id": "m", "title": "t", "components": [row(text_input(label="l" * 46))]},
            "components.0.components.0.label",
        ),
        (
            {"custom_id": "m", "title": "t", "components": [row(text_input(value="v" * 4001))]},
            "components.0.components.0.value",
        ),
        (
            {"custom_id": "m", "title": "t", "components": [row(text_input(), text_input())]},
            "components.0.components",
        ),
        ({"custom_id": "m", "title": "t", "components": [row(button())]}, None),
        (
            {"custom_id": "m", "title": "t", "components": [row(text_input(style=3))]},
            "components.0.components.0.style",
        ),
        (
            {
                "custom_id": "m",
                "title": "t",
                "components": [row(text_input(value="v" * 11, max_length=10))],
            },
            "components.0.components.0.value",
        ),
        (
            {"custom_id": "m", "title": "t", "components": [row(text_input(max_length=4001))]},
            "components.0.components.0.max_length",
        ),
        (
            {"custom_id": "m", "title": "t", "components": [row(text_input())] * 2},
            "components.1.components.0.custom_id",
        ),
        ({"custom_id": "m" * 101, "title": "t", "components": [row(text_input())]}, None),
        (
            {
                "custom_id": "m",
                "title": "t",
                "components": [{"type": 18, "label": "l" * 46, "component": text_input()}],
            },
            "components.0.label",
        ),
    ],
)
def test_modals_keep_to_their_limits(modal: dict[str, Any], field: str | None) -> None:
    problem = limits.modal_problem(modal)
    assert problem is not None
    if field is not None:
        assert problem[0] == field


def test_a_modal_within_its_limits_is_allowed() -> None:
    modal = {
        "custom_id": "imagine:remix:abc",
        "title": "t" * 45,
        "components": [row(text_input(custom_id=f"f{i}", value="v" * 4000)) for i in range(5)],
    }
    assert limits.modal_problem(modal) is None


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ({"name": "Imagine", "description": "d"}, "name"),
        ({"name": "imagine", "description": "d" * 101}, "description"),
        ({"name": "imagine", "description": "d", "options": [{}] * 26}, "options"),
        (
            {
                "name": "imagine",
                "description": "d",
                "options": [
                    {
                        "name": "model",
                        "description": "m",
                        "type": 3,
                        "autocomplete": True,
                        "choices": [{"name": "a", "value": "a"}],
                    },
                ],
            },
            "options.0.autocomplete",
        ),
        ({"name": "Imagine from this image", "type": 3, "description": "d"}, "description"),
    ],
)
def test_command_registration_keeps_to_its_limits(command: dict[str, Any], field: str) -> None:
    problem = limits.command_problem(command)
    assert problem is not None and problem[0] == field


def test_a_message_context_menu_may_have_spaces_and_capitals() -> None:
    assert limits.command_problem({"name": "Imagine from this image", "type": 3}) is None


def test_autocomplete_answers_keep_to_25_short_choices() -> None:
    ok = [{"name": "n" * 100, "value": "v" * 100}] * 25
    assert limits.choices_problem("data.choices", ok) is None
    assert limits.choices_problem("data.choices", ok + ok[:1]) is not None
    assert limits.choices_problem("data.choices", [{"name": "", "value": "v"}]) is not None
