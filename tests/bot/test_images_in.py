"""Images in from Discord: /imagine image:, "Imagine from this image", remix, zoom out and pan."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from engine import read_parameters
from engine.pipeline import SEAM_PX
from tests.bot.conftest import GALLERY, Harness, wait_for
from tests.bot.test_commands import command
from tests.fakes.discord import FakeInteraction, FakeMessage, FakeUpload

pytestmark = pytest.mark.timeout(180)

ATTACHMENT_GETS = r"^/attachments/"


def png(width: int = 96, height: int = 64, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def upload(data: bytes | None = None, name: str = "photo.png", kind: str = "image/png"):
    return FakeUpload(name, png() if data is None else data, kind)


def custom_ids(message: FakeMessage) -> list[str]:
    return [
        c.get("custom_id") or c.get("url") for row in message.components for c in row["components"]
    ]


@pytest.fixture
def start(harness: Harness) -> Callable[..., Any]:
    """Start the bot with the fake's attachments allowed (Discord's CDN stands in for it)."""

    async def run(**sections: Any) -> None:
        bot = {"attachment_origins": [harness.fake.origin], **sections.pop("bot", {})}
        await harness.start(bot=bot, **sections)

    return run


@pytest.fixture
def with_inpaint(tiny_model_dir: Path, tiny_inpaint_model_dir: Path) -> dict[str, Any]:
    """Sections for a registry with the tiny txt2img model (default) and its inpainting twin."""
    return {
        "models": {
            "tiny": {"path": str(tiny_model_dir)},
            "inpaint": {"path": str(tiny_inpaint_model_dir), "kind": "inpaint"},
        },
        "engine": {"model": "tiny"},
    }


async def result_of(harness: Harness, handle: FakeInteraction) -> tuple[str, FakeMessage]:
    job_id = await harness.job_id(handle, timeout_s=15)
    return job_id, await harness.delivered(job_id, timeout_s=120)


async def refusal(harness: Harness, handle: FakeInteraction) -> str:
    reply = await harness.answer(handle)
    assert reply.is_ephemeral
    assert harness.engine.store.job_by_key(str(handle.id)) is None, "nothing is queued"
    return reply.content


# -- /imagine image: -------------------------------------------------------------------------


async def test_attached_png_makes_an_img2img_result_sized_to_its_aspect(
    harness: Harness, start
) -> None:
    await start()

    handle = await harness.imagine("a red barn", image=upload(png(96, 64)), steps=4)

    job_id, message = await result_of(harness, handle)
    record = harness.engine.store.image(f"{job_id}-0")
    assert record.kind == "img2img" and record.parent_image_id is None
    assert (record.width, record.height) == (96, 64)
    assert message.embeds[0]["title"] == "From your image"
    assert len(harness.fake.calls_to("GET", ATTACHMENT_GETS)) == 1
    params = read_parameters(message.attachments[0].data)
    assert params is not None and params.prompt == "a red barn"


async def test_strength_option_reaches_the_job(harness: Harness, start) -> None:
    await start()

    handle = await harness.imagine("a red barn", image=upload(), steps=4, strength=0.9)

    job_id = await harness.job_id(handle)
    assert harness.engine.job(job_id).request.strength == pytest.approx(0.9)


async def test_attachment_from_another_origin_is_refused_and_never_fetched(
    harness: Harness,
) -> None:
    await harness.start()  # default origins: Discord's CDN only

    handle = await harness.imagine("a red barn", image=upload())

    text = await refusal(harness, handle)
    assert "`image`" in text and "only fetched from https://cdn.discordapp.com" in text
    assert harness.fake.calls_to("GET", ATTACHMENT_GETS) == []


async def test_too_large_attachment_is_refused_before_download(harness: Harness, start) -> None:
    await start(limits={"max_upload_bytes": 2000})

    handle = await harness.imagine("a red barn", image=upload(b"\x89PNG" + bytes(5000)))

    text = await refusal(harness, handle)
    assert "`image`" in text and "5.0 kB" in text and "2.0 kB" in text
    assert harness.fake.calls_to("GET", ATTACHMENT_GETS) == []


async def test_text_file_attachment_is_refused_as_not_an_image(harness: Harness, start) -> None:
    await start()

    handle = await harness.imagine("a red barn", image=upload(b"hello", "notes.txt", "text/plain"))

    text = await refusal(harness, handle)
    assert text == "That request can't run: `image`: not a PNG, JPEG, WebP or GIF image."


async def test_animated_gif_note_is_said_with_the_result(harness: Harness, start) -> None:
    await start()
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)

    handle = await harness.imagine("a barn", image=upload(out.getvalue(), "a.gif", "image/gif"))

    _, message = await result_of(harness, handle)
    assert "its first frame was used" in message.content


# -- "Imagine from this image" -----------------------------------------------------------------


async def message_command(harness: Harness, message: FakeMessage) -> FakeInteraction:
    fake = harness.fake
    handle = await fake.send_message_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "Imagine from this image", message
    )
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{handle.id}/"))
    return handle


async def test_context_menu_opens_a_modal_whose_prompt_makes_an_img2img_result(
    harness: Harness, start
) -> None:
    await start()
    fake = harness.fake
    posted = fake.post_user_message(fake.text_channel.id, fake.user("bob"), "look", [upload()])

    handle = await message_command(harness, posted)
    assert handle.callback_type == 9
    assert handle.callback_data["title"] == "Imagine from this image"
    submit = await fake.submit_modal(handle, {"prompt": "a blue barn", "strength": "0.8"})

    job_id, message = await result_of(harness, submit)
    record = harness.engine.store.image(f"{job_id}-0")
    assert record.kind == "img2img" and record.prompt == "a blue barn"
    assert harness.engine.job(job_id).request.strength == pytest.approx(0.8)
    assert message.id == fake.original_response(submit.token).id


async def test_context_menu_strength_out_of_range_is_refused(harness: Harness, start) -> None:
    await start()
    fake = harness.fake
    posted = fake.post_user_message(fake.text_channel.id, fake.user("bob"), "", [upload()])
    handle = await message_command(harness, posted)

    submit = await fake.submit_modal(handle, {"prompt": "a blue barn", "strength": "3"})

    text = await refusal(harness, submit)
    assert "`strength`" in text and "0.05–1" in text


async def test_context_menu_on_a_message_without_an_image_says_so(harness: Harness, start) -> None:
    await start()
    fake = harness.fake
    text_only = upload(b"hello", "notes.txt", "text/plain")
    posted = fake.post_user_message(fake.text_channel.id, fake.user("bob"), "hi", [text_only])

    handle = await message_command(harness, posted)

    reply = await harness.answer(handle)
    assert reply.is_ephemeral and "That message has no image" in reply.content
    assert fake.calls_to("GET", ATTACHMENT_GETS) == []


# -- remix, zoom out, pan --------------------------------------------------------------------


async def first_result(harness: Harness, **options: Any) -> tuple[str, FakeMessage]:
    return await result_of(harness, await harness.imagine(**options))


async def press(harness: Harness, message: FakeMessage, custom_id: str) -> FakeInteraction:
    fake = harness.fake
    handle = await fake.press_button(message.id, custom_id, fake.user("alice"))
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{handle.id}/"))
    return handle


async def test_remix_runs_the_edited_prompt_with_the_same_seed(harness: Harness) -> None:
    await harness.start()
    job_id, message = await first_result(harness, prompt="a red fox", negative="fog", seed=11)

    handle = await press(harness, message, f"imagine:remix:{job_id}")
    inputs = {
        c["custom_id"]: c for row in handle.callback_data["components"] for c in row["components"]
    }
    assert inputs["prompt"]["value"] == "a red fox" and inputs["negative"]["value"] == "fog"
    assert inputs["prompt"]["max_length"] == harness.settings.limits.max_prompt_chars
    submit = await harness.fake.submit_modal(handle, {"prompt": "a blue fox"})

    new_id, result = await result_of(harness, submit)
    source = read_parameters(message.attachments[0].data)
    remixed = read_parameters(result.attachments[0].data)
    assert new_id != job_id
    assert (remixed.prompt, remixed.negative_prompt) == ("a blue fox", "fog")
    assert (remixed.seed, remixed.steps, remixed.width) == (11, source.steps, source.width)


async def test_result_buttons_keep_to_discords_limits_with_an_inpaint_model(
    harness: Harness, with_inpaint: dict[str, Any]
) -> None:
    await harness.start(**with_inpaint)

    job_id, single = await first_result(harness)
    _, several = await first_result(harness, count=4)

    ids = custom_ids(single)
    assert f"imagine:remix:{job_id}" in ids
    image = f"{job_id}-0"
    for action in ("zoom15", "zoom2", "left", "right", "panup", "down"):
        assert f"imagine:{action}:{image}" in ids
    assert f"{GALLERY}/images/{image}/edit" in ids
    for message in (single, several):
        assert len(message.components) <= 5
        assert all(len(row["components"]) <= 5 for row in message.components)
    assert not any(i.startswith("imagine:zoom") for i in custom_ids(several))
    assert sum(1 for i in custom_ids(several) if i.endswith("/edit")) == 4


async def test_without_an_inpaint_model_zoom_and_pan_are_not_shown(harness: Harness) -> None:
    await harness.start()

    job_id, message = await first_result(harness)

    ids = custom_ids(message)
    assert f"imagine:remix:{job_id}" in ids
    moves = ("zoom15", "zoom2", "left", "right", "panup", "down")
    assert not [i for i in ids if i.startswith(tuple(f"imagine:{m}:" for m in moves))]
    assert not any(i.endswith("/edit") for i in ids)


def centre_diff(parent: bytes, child: bytes, inset: int = 0) -> float:
    """Mean difference between the parent and the child's centre (`inset` px in from its edge)."""
    with Image.open(io.BytesIO(parent)) as a, Image.open(io.BytesIO(child)) as b:
        left, top = (b.width - a.width) // 2, (b.height - a.height) // 2
        box = (inset, inset, a.width - inset, a.height - inset)
        centre = b.convert("RGB").crop((left, top, left + a.width, top + a.height)).crop(box)
        inner = a.convert("RGB").crop(box)
        return sum(ImageStat.Stat(ImageChops.difference(inner, centre)).mean) / 3


async def test_zoom_out_2x_doubles_the_size_and_keeps_the_parent_in_the_centre(
    harness: Harness, with_inpaint: dict[str, Any]
) -> None:
    await harness.start(**with_inpaint)
    job_id, message = await first_result(harness, steps=4)
    parent = harness.engine.store.image(f"{job_id}-0")

    handle = await press(harness, message, f"imagine:zoom2:{parent.id}")

    new_id, result = await result_of(harness, handle)
    child = harness.engine.store.image(f"{new_id}-0")
    assert (child.width, child.height) == (2 * parent.width, 2 * parent.height)
    assert child.kind == "outpaint" and child.parent_image_id == parent.id
    init, mask = harness.engine.store.job_inputs(new_id)
    parent_png = message.attachments[0].data
    assert centre_diff(parent_png, init) == 0, "the canvas holds the parent, centred"
    with Image.open(io.BytesIO(mask)) as opened:
        w, h = parent.width, parent.height
        assert opened.getpixel((0, 0)) == 255
        assert opened.crop((w // 2, h // 2, w // 2 + w, h // 2 + h)).getextrema() == (0, 0)
    # The result keeps the parent's own pixels (the seam is softened within SEAM_PX of it).
    result_png = result.attachments[0].data
    assert centre_diff(parent_png, result_png, inset=SEAM_PX) == 0
    assert centre_diff(parent_png, result_png) > 0  # the seam was painted over, a little


async def test_pan_right_makes_a_wider_result(
    harness: Harness, with_inpaint: dict[str, Any]
) -> None:
    await harness.start(**with_inpaint)
    job_id, message = await first_result(harness, steps=4)
    parent = harness.engine.store.image(f"{job_id}-0")

    handle = await press(harness, message, f"imagine:right:{parent.id}")

    new_id, _ = await result_of(harness, handle)
    child = harness.engine.store.image(f"{new_id}-0")
    assert child.width > parent.width and child.height == parent.height
    assert child.parent_image_id == parent.id
    status = await command(harness, "status")
    assert "**Zoom out, pan, vary region**: on " in status.content


async def test_zoom_after_the_inpaint_model_is_gone_is_refused(
    harness: Harness, with_inpaint: dict[str, Any]
) -> None:
    """A button from when one was configured: a clear refusal, nothing queued."""
    await harness.start(**with_inpaint)
    job_id, message = await first_result(harness)
    await harness.stop()
    await harness.start(settings=harness.make())

    handle = await press(harness, message, f"imagine:zoom2:{job_id}-0")

    text = await refusal(harness, handle)
    assert "`kind`" in text and "inpainting model" in text


async def test_edit_buttons_work_after_a_restart(
    harness: Harness, with_inpaint: dict[str, Any]
) -> None:
    await harness.start(**with_inpaint)
    job_id, message = await first_result(harness)
    await harness.restart_bot()

    handle = await press(harness, message, f"imagine:remix:{job_id}")

    assert handle.callback_type == 9
    await wait_for(lambda: handle.callback_data is not None)


async def test_reroll_of_an_img2img_result_starts_from_the_same_image(
    harness: Harness, start
) -> None:
    await start()
    job_id, message = await result_of(harness, await harness.imagine("a barn", image=upload()))

    handle = await press(harness, message, f"imagine:reroll:{job_id}")

    new_id, _ = await result_of(harness, handle)
    record = harness.engine.store.image(f"{new_id}-0")
    assert record.kind == "img2img" and (record.width, record.height) == (96, 64)
    assert harness.engine.store.job_inputs(new_id)[0] == harness.engine.store.job_inputs(job_id)[0]
