"""Images in, through the real engine on tiny weights: img2img from an upload and from a stored
image, zoom out, pan, vary region (inpaint), remix; the inputs are stored with the job and a
restart reruns from them; bad inputs are refused with nothing queued or stored."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine import Engine, Finished, GenerationRequest, InvalidRequest, Kind, read_parameters
from engine.canvas import canvas_size
from engine.pipeline import SEAM_PX
from engine.store import Store
from engine.uploads import BadImage
from tests.conftest import wait_done

EngineFactory = Callable[..., Any]


def png(
    size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG"
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


def image_of(engine: Engine, event: Finished, index: int = 0) -> Image.Image:
    data = engine.store.image_path(event.images[index].file_name).read_bytes()
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture
def models(tiny_model_dir: Path, tiny_inpaint_model_dir: Path) -> dict[str, Any]:
    return {
        "engine": {"model": "tiny"},
        "models": {
            "tiny": {"path": str(tiny_model_dir)},
            "fill": {"path": str(tiny_inpaint_model_dir), "kind": "inpaint"},
        },
    }


async def first_image(engine: Engine, requester: Any, prompt: str = "a red fox") -> Any:
    job = await engine.submit(
        GenerationRequest(prompt, steps=2, seed=3, width=32, height=32), requester
    )
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished), event
    return event.images[0]


async def test_img2img_from_an_upload_follows_its_aspect_and_stores_no_metadata(
    make_engine: EngineFactory, make_requester: Any
) -> None:
    engine = await make_engine(
        limits={"max_size_px": 64, "max_pixels": 64 * 32, "max_per_user": 50}
    )
    upload = png((400, 200), fmt="JPEG")
    request = GenerationRequest("a fox", kind=Kind.IMG2IMG, init_png=upload, strength=0.5, steps=4)
    job = await engine.submit(request, make_requester())
    assert (job.request.width, job.request.height) == (64, 32)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished), event
    record = event.images[0]
    assert (record.kind, record.parent_image_id) == ("img2img", None)
    assert image_of(engine, event).size == (64, 32)
    init, mask = engine.store.job_inputs(job.id)
    assert init is not None and mask is None
    assert Image.open(io.BytesIO(init)).size == (64, 32)  # stored at the generation size
    params = read_parameters(engine.store.image_path(record.file_name).read_bytes())
    assert params is not None and ("Denoising strength", "0.5") in params.extra


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"init_png": b"not an image"}, "image", "not a PNG, JPEG, WebP or GIF"),
        ({"init_png": None}, "image", "attach an image"),
        ({"init_png": png((32, 32)), "strength": 0.01}, "strength", "0.05–1.0"),
        ({"init_png": png((32, 32)), "strength": 1.5}, "strength", "0.05–1.0"),
        ({"init_png": png((1, 200))}, "image", ""),
    ],
)
async def test_a_bad_img2img_is_refused_naming_the_field_and_nothing_is_stored(
    make_engine: EngineFactory, make_requester: Any, fields: dict[str, Any], field: str, words: str
) -> None:
    engine = await make_engine()
    request = GenerationRequest("a fox", kind=Kind.IMG2IMG, **fields)
    with pytest.raises(InvalidRequest) as refused:
        await engine.submit(request, make_requester())
    assert refused.value.field == field and words in refused.value.reason
    assert engine.jobs() == []
    with sqlite3.connect(engine.store.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM job_inputs").fetchone()[0] == 0


async def test_an_upload_larger_than_the_limit_is_refused_before_decoding(
    make_engine: EngineFactory, make_requester: Any
) -> None:
    engine = await make_engine(limits={"max_upload_bytes": 2048, "max_per_user": 50})
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="PNG")
    request = GenerationRequest("a fox", kind=Kind.IMG2IMG, init_png=out.getvalue())
    with pytest.raises(BadImage, match=r"at most 2\.0 kB"):
        await engine.submit(request, make_requester())


async def test_zoom_out_2x_keeps_the_parent_in_the_centre_and_pan_widens(
    make_engine: EngineFactory, make_requester: Any, models: dict[str, Any]
) -> None:
    engine = await make_engine(**models)
    who = make_requester()
    parent = await first_image(engine, who)
    zoom = await engine.submit(
        GenerationRequest(
            "", kind=Kind.OUTPAINT, source_image_id=parent.id, outpaint="zoom_2", steps=2
        ),
        who,
    )
    assert zoom.request.model == "fill" and zoom.request.prompt == "a red fox"
    pan = await engine.submit(
        GenerationRequest(
            "", kind=Kind.OUTPAINT, source_image_id=parent.id, outpaint="right", steps=2
        ),
        who,
    )
    zoomed, panned = await wait_done(engine, zoom.id), await wait_done(engine, pan.id)
    assert isinstance(zoomed, Finished) and isinstance(panned, Finished), (zoomed, panned)
    assert image_of(engine, zoomed).size == (64, 64)
    assert image_of(engine, panned).size == canvas_size(32, 32, "right")[:2] == (48, 32)
    assert zoomed.images[0].parent_image_id == parent.id and zoomed.images[0].kind == "outpaint"
    # The canvas the job ran from: the parent's pixels exactly in the centre, mask over the rest.
    init, mask = engine.store.job_inputs(zoom.id)
    assert init is not None and mask is not None
    parent_pixels = np.asarray(image_of_record(engine, parent))
    canvas = np.asarray(Image.open(io.BytesIO(init)).convert("RGB"))
    assert (canvas[16:48, 16:48] == parent_pixels).all()
    holes = np.asarray(Image.open(io.BytesIO(mask)))
    assert (holes[16:48, 16:48] == 0).all() and holes[:16].min() == 255
    # The result keeps them too, but for a seam of SEAM_PX softened into the kept area.
    result = np.asarray(image_of(engine, zoomed)).astype(int)
    inner = slice(16 + SEAM_PX, 48 - SEAM_PX)
    kept = slice(SEAM_PX, 32 - SEAM_PX)
    assert (result[inner, inner] == parent_pixels[kept, kept]).all()
    chain = await engine.image_chain(zoomed.images[0].id)
    assert [record.id for record in chain] == [parent.id, zoomed.images[0].id]


def image_of_record(engine: Engine, record: Any) -> Image.Image:
    data = engine.store.image_path(record.file_name).read_bytes()
    return Image.open(io.BytesIO(data)).convert("RGB")


async def test_vary_region_inpaints_a_mask_of_the_source_size_and_refuses_bad_masks(
    make_engine: EngineFactory, make_requester: Any, models: dict[str, Any]
) -> None:
    engine = await make_engine(**models)
    who = make_requester()
    parent = await first_image(engine, who)
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 16))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    job = await engine.submit(
        GenerationRequest(
            "a blue fox",
            kind=Kind.INPAINT,
            source_image_id=parent.id,
            mask_png=out.getvalue(),
            steps=2,
        ),
        who,
    )
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished), event
    assert (event.images[0].kind, event.images[0].parent_image_id) == ("inpaint", parent.id)
    for bad, words in (
        (Image.new("L", (32, 32), 0), "empty"),
        (Image.new("L", (32, 32), 255), "whole image"),
        (Image.new("L", (16, 16), 255), "16×16"),
    ):
        data = io.BytesIO()
        bad.save(data, format="PNG")
        request = GenerationRequest(
            "x", kind=Kind.INPAINT, source_image_id=parent.id, mask_png=data.getvalue()
        )
        with pytest.raises(BadImage, match=words):
            await engine.submit(request, who)


async def test_without_an_inpainting_model_zoom_is_refused_and_status_says_why(
    make_engine: EngineFactory, make_requester: Any
) -> None:
    engine = await make_engine()
    who = make_requester()
    parent = await first_image(engine, who)
    status = engine.status()
    assert status.inpaint_model is None and "inpainting model" in status.outpaint_note
    request = GenerationRequest(
        "", kind=Kind.OUTPAINT, source_image_id=parent.id, outpaint="zoom_2"
    )
    with pytest.raises(InvalidRequest, match="inpainting model") as refused:
        await engine.submit(request, who)
    assert refused.value.field == "kind"


async def test_a_zoom_past_the_size_limit_is_refused_naming_both_sizes(
    make_engine: EngineFactory, make_requester: Any, models: dict[str, Any]
) -> None:
    engine = await make_engine(**models, limits={"max_size_px": 48, "max_per_user": 50})
    who = make_requester()
    parent = await first_image(engine, who)
    request = GenerationRequest(
        "", kind=Kind.OUTPAINT, source_image_id=parent.id, outpaint="zoom_2"
    )
    with pytest.raises(InvalidRequest, match="64×64 from 32×32") as refused:
        await engine.submit(request, who)
    assert refused.value.field == "outpaint"


async def test_the_inpainting_model_is_not_offered_for_text_to_image(
    make_engine: EngineFactory, make_requester: Any, models: dict[str, Any]
) -> None:
    engine = await make_engine(**models)
    with pytest.raises(InvalidRequest, match="inpainting model") as refused:
        await engine.submit(GenerationRequest("a fox", model="fill"), make_requester())
    assert refused.value.field == "model"


async def test_remix_keeps_the_seed_settings_and_the_uploaded_image(
    make_engine: EngineFactory, make_requester: Any
) -> None:
    engine = await make_engine()
    who = make_requester()
    request = GenerationRequest(
        "a fox", kind=Kind.IMG2IMG, init_png=png((32, 32)), strength=0.7, steps=4, seed=99
    )
    first = await engine.submit(request, who)
    assert isinstance(await wait_done(engine, first.id), Finished)
    remix = await engine.remix_request(first.id, "a wolf", "blurry")
    assert (remix.seed, remix.strength, remix.steps, remix.kind) == (99, 0.7, 4, Kind.IMG2IMG)
    second = await engine.submit(remix, who)
    event = await wait_done(engine, second.id)
    assert isinstance(event, Finished), event
    assert (event.images[0].prompt, event.images[0].negative_prompt, event.images[0].seed) == (
        "a wolf",
        "blurry",
        99,
    )


async def test_a_restart_reruns_an_img2img_job_from_its_stored_input(
    make_engine: EngineFactory, make_settings: Callable[..., Any], make_requester: Any
) -> None:
    settings = make_settings()
    first = await make_engine(settings, gated=True)
    job = await first.submit(
        GenerationRequest("a fox", kind=Kind.IMG2IMG, init_png=png((32, 32)), steps=2),
        make_requester(),
    )
    await first.close()
    second = Engine(settings, Store(settings.engine.data_dir))
    await second.start()
    try:
        event = await wait_done(second, job.id)
        assert isinstance(event, Finished), event
        assert event.images[0].kind == "img2img"
    finally:
        await second.close()
