"""Discord's documented limits on what a bot sends, checked the way Discord checks them.

From the developer documentation: message content and embeds ("Embed Limits"), components
(action rows, buttons, selects, text inputs), modals, nonces, allowed mentions, application
commands and autocomplete choices. Each check returns the failing field's path and Discord's
message, or None; the fake answers 400 / 50035 "Invalid Form Body" as Discord does. Keep them
as strict as the documentation, so a change that would break on Discord breaks a test here.
"""

from __future__ import annotations

import re
from typing import Any

Problem = tuple[str, str] | None

CONTENT_CHARS = 2000
EMBEDS = 10
EMBED_TOTAL_CHARS = 6000
EMBED_TEXT = {"title": 256, "description": 4096}
EMBED_FIELDS = 25
FIELD_NAME_CHARS, FIELD_VALUE_CHARS = 256, 1024
FOOTER_CHARS, AUTHOR_CHARS = 2048, 256
ATTACHMENTS = 10
ACTION_ROWS, ROW_BUTTONS = 5, 5
CUSTOM_ID_CHARS, LABEL_CHARS, URL_CHARS = 100, 80, 512
SELECT_OPTIONS, OPTION_TEXT_CHARS, PLACEHOLDER_CHARS = 25, 100, 150
MODAL_TITLE_CHARS, MODAL_ROWS = 45, 5
TEXT_INPUT_LABEL_CHARS, TEXT_INPUT_CHARS, TEXT_INPUT_PLACEHOLDER_CHARS = 45, 4000, 100
NONCE_CHARS = 25
MENTION_IDS = 100
MENTION_PARSE = {"roles", "users", "everyone"}
COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
CONTEXT_MENU_NAME = re.compile(r"^[-_\w ]{1,32}$")
CHOICES, CHOICE_NAME_CHARS, CHOICE_VALUE_CHARS = 25, 100, 100
OPTIONS, STRING_OPTION_CHARS = 25, 6000


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _over(path: str, value: Any, limit: int) -> Problem:
    if isinstance(value, str) and len(value) > limit:
        return path, f"Must be {limit} or fewer in length."
    return None


def message_problem(payload: dict[str, Any], files: int) -> Problem:
    """Check a message create or edit body (content, embeds, components, mentions, nonce)."""
    checks = [
        _over("content", payload.get("content"), CONTENT_CHARS),
        _embeds_problem(payload.get("embeds") or []),
        _components_problem(payload.get("components") or []),
        _mentions_problem(payload.get("allowed_mentions")),
        _nonce_problem(payload.get("nonce")),
    ]
    if files > ATTACHMENTS or len(payload.get("attachments") or []) > ATTACHMENTS:
        checks.append(("attachments", f"Must be {ATTACHMENTS} or fewer in length."))
    return next((problem for problem in checks if problem is not None), None)


def _embeds_problem(embeds: list[dict[str, Any]]) -> Problem:
    if len(embeds) > EMBEDS:
        return "embeds", f"Must be {EMBEDS} or fewer in length."
    total = 0
    for index, embed in enumerate(embeds):
        problem = _embed_problem(f"embeds.{index}", embed)
        if problem is not None:
            return problem
        total += sum(len(_text(embed.get(key))) for key in EMBED_TEXT)
        total += len(_text((embed.get("footer") or {}).get("text")))
        total += len(_text((embed.get("author") or {}).get("name")))
        total += sum(
            len(_text(f.get("name"))) + len(_text(f.get("value"))) for f in embed.get("fields", [])
        )
    if total > EMBED_TOTAL_CHARS:
        return "embeds", f"Embed size exceeds maximum size of {EMBED_TOTAL_CHARS}"
    return None


def _embed_problem(path: str, embed: dict[str, Any]) -> Problem:
    for key, limit in EMBED_TEXT.items():
        problem = _over(f"{path}.{key}", embed.get(key), limit)
        if problem is not None:
            return problem
    fields = embed.get("fields") or []
    if len(fields) > EMBED_FIELDS:
        return f"{path}.fields", f"Must be {EMBED_FIELDS} or fewer in length."
    for index, field in enumerate(fields):
        name, value = _text(field.get("name")), _text(field.get("value"))
        if not 1 <= len(name) <= FIELD_NAME_CHARS:
            return f"{path}.fields.{index}.name", f"Must be between 1 and {FIELD_NAME_CHARS}."
        if not 1 <= len(value) <= FIELD_VALUE_CHARS:
            return f"{path}.fields.{index}.value", f"Must be between 1 and {FIELD_VALUE_CHARS}."
    footer = _over(f"{path}.footer.text", (embed.get("footer") or {}).get("text"), FOOTER_CHARS)
    author = _over(f"{path}.author.name", (embed.get("author") or {}).get("name"), AUTHOR_CHARS)
    return footer or author


def _components_problem(rows: list[dict[str, Any]]) -> Problem:
    if len(rows) > ACTION_ROWS:
        return "components", f"Must be {ACTION_ROWS} or fewer in length."
    seen: set[str] = set()
    for row_index, row in enumerate(rows):
        if row.get("type") != 1:
            return f"components.{row_index}.type", "Top-level components must be action rows"
        children = row.get("components") or []
        if not 1 <= len(children) <= ROW_BUTTONS:
            return f"components.{row_index}.components", f"Must be between 1 and {ROW_BUTTONS}."
        for index, child in enumerate(children):
            path = f"components.{row_index}.components.{index}"
            problem = _component_problem(path, child, seen)
            if problem is not None:
                return problem
    return None


def _component_problem(path: str, component: dict[str, Any], seen: set[str]) -> Problem:
    kind = component.get("type")
    custom_id = component.get("custom_id")
    if kind == 2 and component.get("style") == 5:  # a link button: a URL, no custom id
        if custom_id is not None or not 1 <= len(_text(component.get("url"))) <= URL_CHARS:
            return f"{path}.url", f"A link button has a URL of 1 to {URL_CHARS} and no custom_id"
    elif not 1 <= len(_text(custom_id)) <= CUSTOM_ID_CHARS:
        return f"{path}.custom_id", f"Must be between 1 and {CUSTOM_ID_CHARS} in length."
    elif custom_id in seen:
        return f"{path}.custom_id", "Component custom id cannot be duplicated"
    if custom_id:
        seen.add(custom_id)
    if kind == 2:
        return _over(f"{path}.label", component.get("label"), LABEL_CHARS)
    if kind == 3:
        return _select_problem(path, component)
    if kind == 4:
        return _text_input_problem(path, component)
    return None


def _select_problem(path: str, select: dict[str, Any]) -> Problem:
    options = select.get("options") or []
    if not 1 <= len(options) <= SELECT_OPTIONS:
        return f"{path}.options", f"Must be between 1 and {SELECT_OPTIONS} in length."
    for index, option in enumerate(options):
        for key in ("label", "value", "description"):
            problem = _over(f"{path}.options.{index}.{key}", option.get(key), OPTION_TEXT_CHARS)
            if problem is not None:
                return problem
    return _over(f"{path}.placeholder", select.get("placeholder"), PLACEHOLDER_CHARS)


def _text_input_problem(path: str, field: dict[str, Any]) -> Problem:
    if field.get("style") not in (1, 2):
        return f"{path}.style", "Must be 1 (short) or 2 (paragraph)"
    if not 1 <= len(_text(field.get("label"))) <= TEXT_INPUT_LABEL_CHARS:
        return f"{path}.label", f"Must be between 1 and {TEXT_INPUT_LABEL_CHARS} in length."
    for key in ("min_length", "max_length"):
        value = field.get(key)
        if value is not None and not 0 <= int(value) <= TEXT_INPUT_CHARS:
            return f"{path}.{key}", f"Must be between 0 and {TEXT_INPUT_CHARS}."
    value = _over(f"{path}.value", field.get("value"), TEXT_INPUT_CHARS)
    hint = field.get("placeholder")
    return value or _over(f"{path}.placeholder", hint, TEXT_INPUT_PLACEHOLDER_CHARS)


def modal_problem(data: dict[str, Any]) -> Problem:
    """Check a modal (interaction response type 9): 1–5 rows of one text input each."""
    if not 1 <= len(_text(data.get("custom_id"))) <= CUSTOM_ID_CHARS:
        return "data.custom_id", f"Must be between 1 and {CUSTOM_ID_CHARS} in length."
    if not 1 <= len(_text(data.get("title"))) <= MODAL_TITLE_CHARS:
        return "data.title", f"Must be between 1 and {MODAL_TITLE_CHARS} in length."
    rows = data.get("components") or []
    if not 1 <= len(rows) <= MODAL_ROWS:
        return "data.components", f"Must be between 1 and {MODAL_ROWS} in length."
    seen: set[str] = set()
    for index, row in enumerate(rows):
        problem = _modal_row_problem(f"components.{index}", row, seen)
        if problem is not None:
            return problem
    return None


def _modal_row_problem(path: str, row: dict[str, Any], seen: set[str]) -> Problem:
    if row.get("type") == 18:  # a label (text ≤ 45) around one input without its own label
        if not 1 <= len(_text(row.get("label"))) <= TEXT_INPUT_LABEL_CHARS:
            return f"{path}.label", f"Must be between 1 and {TEXT_INPUT_LABEL_CHARS} in length."
        field = row.get("component") or {}
        field = {**field, "label": field.get("label") or row.get("label")}
        return _modal_input_problem(f"{path}.component", field, seen)
    if row.get("type") != 1:
        return f"{path}.type", "Modal components must be action rows or labels"
    children = row.get("components") or []
    if len(children) != 1:
        return f"{path}.components", "Must be 1 in length."
    return _modal_input_problem(f"{path}.components.0", children[0], seen)


def _modal_input_problem(path: str, field: dict[str, Any], seen: set[str]) -> Problem:
    if field.get("type") != 4:
        return f"{path}.type", "Modal rows hold text inputs only"
    problem = _component_problem(path, field, seen)
    if problem is not None:
        return problem
    low, high = field.get("min_length"), field.get("max_length")
    if low is not None and high is not None and int(low) > int(high):
        return f"{path}.min_length", "min_length must not exceed max_length"
    value = _text(field.get("value"))
    if high is not None and len(value) > int(high):
        return f"{path}.value", f"Must be {high} or fewer in length."
    return None


def _mentions_problem(mentions: Any) -> Problem:
    if mentions is None:
        return None
    parse = mentions.get("parse") or []
    if not set(parse) <= MENTION_PARSE:
        return "allowed_mentions.parse", "Values must be roles, users or everyone"
    for key in ("users", "roles"):
        ids = mentions.get(key) or []
        if len(ids) > MENTION_IDS:
            return f"allowed_mentions.{key}", f"Must be {MENTION_IDS} or fewer in length."
        if ids and key in parse:
            return f"allowed_mentions.{key}", f"parse:[{key}] and {key}: [...] are exclusive"
    return None


def _nonce_problem(nonce: Any) -> Problem:
    if isinstance(nonce, str) and len(nonce) > NONCE_CHARS:
        return "nonce", f"Must be {NONCE_CHARS} or fewer in length."
    return None


def command_problem(command: dict[str, Any]) -> Problem:
    """Check what Discord checks on a command's registration."""
    name = _text(command.get("name"))
    kind = command.get("type", 1)
    if kind == 1 and (not COMMAND_NAME.match(name) or name != name.lower()):
        return "name", f"Invalid command name {name!r}"
    if kind in (2, 3):
        if not CONTEXT_MENU_NAME.match(name):
            return "name", f"Invalid context menu name {name!r}"
        if command.get("description") or command.get("options"):
            return "description", "Context menu commands have no description or options"
        return None
    if not 1 <= len(_text(command.get("description"))) <= 100:
        return "description", "Must be between 1 and 100 in length."
    return _options_problem(command.get("options") or [])


def _options_problem(options: list[dict[str, Any]]) -> Problem:
    if len(options) > OPTIONS:
        return "options", f"Must be {OPTIONS} or fewer in length."
    seen_optional = False
    for index, option in enumerate(options):
        problem = _option_problem(f"options.{index}", option)
        if problem is not None:
            return problem
        if option.get("required"):
            if seen_optional:
                return f"options.{index}", "Required options must be placed before non-required"
        else:
            seen_optional = option.get("type") not in (1, 2)
        nested = _options_problem(option.get("options") or [])
        if nested is not None:
            return f"options.{index}.{nested[0]}", nested[1]
    return None


def _option_problem(path: str, option: dict[str, Any]) -> Problem:
    if not COMMAND_NAME.match(_text(option.get("name"))):
        return f"{path}.name", "Invalid option name"
    if not 1 <= len(_text(option.get("description"))) <= 100:
        return f"{path}.description", "Must be between 1 and 100 in length."
    choices = option.get("choices") or []
    if choices and option.get("autocomplete"):
        return f"{path}.autocomplete", "Autocomplete and choices are exclusive"
    for key in ("min_length", "max_length"):
        value = option.get(key)
        if value is not None and not 0 <= int(value) <= STRING_OPTION_CHARS:
            return f"{path}.{key}", f"Must be between 0 and {STRING_OPTION_CHARS}."
    return choices_problem(f"{path}.choices", choices)


def choices_problem(path: str, choices: Any) -> Problem:
    """Check command option choices, or an autocomplete answer's (at most 25, short names)."""
    if not isinstance(choices, list) or len(choices) > CHOICES:
        return path, f"Must be {CHOICES} or fewer in length."
    for index, choice in enumerate(choices):
        name = choice.get("name") if isinstance(choice, dict) else None
        value = choice.get("value") if isinstance(choice, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= CHOICE_NAME_CHARS:
            return f"{path}.{index}.name", f"Must be between 1 and {CHOICE_NAME_CHARS} in length."
        if isinstance(value, str) and not 1 <= len(value) <= CHOICE_VALUE_CHARS:
            return f"{path}.{index}.value", f"Must be between 1 and {CHOICE_VALUE_CHARS}."
    return None
