"""Images in through the gallery: init image uploads, "use as init image", the edit page (vary
region, zoom out, pan), the chain of derived images on pages and in the API."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from markupsafe import escape
from PIL import Image

from tests.web.conftest import Site, form_tokens, make_image, seed_images, wait_job


def png_bytes(
    size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (51.0, 30.0, 0.0)
    gps[3] = "W"
    gps[4] = (0.0, 7.0, 0.0)
    out = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 120, 200)).save(out, "JPEG", exif=exif)
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as check:
        assert check.getexif().get_ifd(0x8825), "the test JPEG should carry GPS"
    return data


def animated_gif() -> bytes:
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    frames = [Image.new("RGB", (32, 32), colour) for colour in colours]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return out.getvalue()


def mask_png(
    size: tuple[int, int], box: tuple[int, int, int, int] | None = (4, 4, 16, 16)
) -> bytes:
    mask = Image.new("L", size, 0)
    if box is not None:
        mask.paste(255, box)
    out = io.BytesIO()
    mask.save(out, "PNG")
    return out.getvalue()


def job_id_of(response: Any) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return str(response.headers["Location"].rsplit("/", 1)[1])


def post_generate(client: FlaskClient, data: dict[str, Any], url: str = "/generate") -> Any:
    return client.post(
        "/generate", data={**form_tokens(client, url), **data}, content_type="multipart/form-data"
    )


def made_image(client: FlaskClient, job_id: str) -> dict[str, Any]:
    job = wait_job(client, job_id)
    assert job["state"] == "done", job
    image: dict[str, Any] = client.get(f"/api/v1/images/{job['image_ids'][0]}").get_json()
    return image


def file_of(client: FlaskClient, image: dict[str, Any]) -> Image.Image:
    with client.get(image["file_url"]) as response:
        assert response.status_code == 200
        return Image.open(io.BytesIO(response.get_data()))


@pytest.fixture
def edit_site(
    make_site: Callable[..., Site], tiny_model_dir: Path, tiny_inpaint_model_dir: Path
) -> Site:
    """A gallery whose registry has the tiny inpainting model beside the tiny txt2img one."""
    return make_site(
        engine={"model": "tiny"},
        models={
            "tiny": {"path": str(tiny_model_dir)},
            "tiny-inpaint": {"path": str(tiny_inpaint_model_dir), "kind": "inpaint"},
        },
    )


# --- the generate form with an init image -------------------------------------------------


def test_form_takes_an_init_image_and_a_strength(client: FlaskClient) -> None:
    html = client.get("/generate").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in html
    assert 'type="file"' in html and 'name="init_image"' in html
    assert 'accept="image/png,image/jpeg,image/webp"' in html
    assert 'name="strength"' in html and 'min="0.05"' in html and 'max="1"' in html


def test_uploaded_png_makes_an_img2img_image(site: Site) -> None:
    client = site.client()
    response = post_generate(
        client,
        {
            "prompt": "a red box",
            "strength": "0.5",
            "init_image": (io.BytesIO(png_bytes()), "in.png"),
        },
    )
    image = made_image(client, job_id_of(response))
    assert image["kind"] == "img2img"
    assert image["parent_image_id"] is None and image["chain"] == [image["id"]]
    # The size follows the upload's 3:2 aspect.
    assert image["width"] > image["height"]


def test_uploaded_jpeg_keeps_no_exif_or_gps(site: Site) -> None:
    client = site.client()
    response = post_generate(
        client, {"prompt": "a blue tile", "init_image": (io.BytesIO(jpeg_with_gps()), "p.jpg")}
    )
    image = made_image(client, job_id_of(response))
    with file_of(client, image) as result:
        assert result.format == "PNG"
        assert "exif" not in result.info
        assert not result.getexif()
    stored, _ = site.store.job_inputs(image["job_id"])
    assert stored is not None  # the init image kept with the job is a clean PNG too
    with Image.open(io.BytesIO(stored)) as kept:
        assert kept.format == "PNG" and "exif" not in kept.info and not kept.getexif()
    assert b"SpyCam" not in stored and b"Exif" not in stored


def test_not_an_image_is_shown_beside_the_field_and_queues_nothing(site: Site) -> None:
    client = site.client()
    response = post_generate(
        client, {"prompt": "a fox", "init_image": (io.BytesIO(b"%PDF-1.4 hello"), "x.png")}
    )
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'id="init_image-error"' in html and "init_image" in html
    assert ">a fox</textarea>" in html
    assert site.store.recent_jobs() == []


def test_an_upload_over_the_limit_is_refused_naming_the_limit(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(limits={"max_upload_bytes": 20_000})
    client = site.client()
    big = Image.effect_noise((128, 128), 80).convert("RGB")
    out = io.BytesIO()
    big.save(out, "PNG")
    assert 20_000 < len(out.getvalue()) < 60_000
    response = post_generate(
        client, {"prompt": "a fox", "init_image": (io.BytesIO(out.getvalue()), "big.png")}
    )
    assert response.status_code == 400
    assert "20.0 kB" in response.get_data(as_text=True)
    assert site.store.recent_jobs() == []


def test_a_huge_body_is_413_with_the_upload_limit(make_site: Callable[..., Site]) -> None:
    site = make_site(limits={"max_upload_bytes": 20_000})
    client = site.client()
    form_tokens(client)
    body = b"\0" * 3_000_000
    response = client.post(
        "/generate",
        input_stream=io.BytesIO(body),
        content_length=len(body),
        content_type="multipart/form-data; boundary=x",
    )
    assert response.status_code == 413
    assert "20.0 kB" in response.get_data(as_text=True)
    assert site.store.recent_jobs() == []


def test_an_animated_gif_uses_its_first_frame_and_the_job_page_says_so(site: Site) -> None:
    client = site.client()
    response = post_generate(
        client, {"prompt": "a flag", "init_image": (io.BytesIO(animated_gif()), "a.gif")}
    )
    job_id = job_id_of(response)
    assert "first frame" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert made_image(client, job_id)["kind"] == "img2img"


def test_an_upload_without_the_csrf_token_is_refused(site: Site) -> None:
    client = site.client()
    client.get("/generate")
    response = client.post(
        "/generate",
        data={"prompt": "a fox", "init_image": (io.BytesIO(png_bytes()), "in.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert site.store.recent_jobs() == []


# --- use as init image ----------------------------------------------------------------------


def test_use_as_init_image_opens_the_form_with_a_thumbnail_and_derives_from_it(site: Site) -> None:
    (source,) = seed_images(site.store, make_image(prompt="a harbour"))
    client = site.client()
    page = client.get(f"/images/{source.id}").get_data(as_text=True)
    assert f'href="/generate?init={source.id}"' in page and "Use as init image" in page
    url = f"/generate?init={source.id}"
    html = client.get(url).get_data(as_text=True)
    assert f'src="/files/{source.id}.png"' in html
    assert f'name="source_image_id" value="{source.id}"' in html
    assert ">a harbour</textarea>" in html
    response = post_generate(
        client,
        {"prompt": "a harbour at night", "source_image_id": source.id, "strength": "0.7"},
        url,
    )
    image = made_image(client, job_id_of(response))
    assert image["kind"] == "img2img" and image["parent_image_id"] == source.id
    assert image["chain"] == [source.id, image["id"]]


def test_use_as_init_image_of_an_unknown_image_is_404(client: FlaskClient) -> None:
    assert client.get("/generate?init=000000000000-9").status_code == 404
    assert client.get("/generate?init=../etc").status_code == 404


# --- the edit page ----------------------------------------------------------------------------


def test_without_an_inpaint_model_the_edit_page_says_why_and_offers_no_buttons(site: Site) -> None:
    (image,) = seed_images(site.store, make_image())
    client = site.client()
    assert f"/images/{image.id}/edit" not in client.get(f"/images/{image.id}").get_data(
        as_text=True
    )
    html = client.get(f"/images/{image.id}/edit").get_data(as_text=True)
    note = site.running.bridge.status().outpaint_note
    assert note and str(escape(note)) in html
    for absent in ("Vary region", "Zoom out", "mask-canvas", "edit.js"):
        assert absent not in html, absent


def test_edit_page_has_the_mask_editor_and_every_button(edit_site: Site) -> None:
    (image,) = seed_images(edit_site.store, make_image(prompt="a quiet lake"))
    client = edit_site.client()
    page = client.get(f"/images/{image.id}").get_data(as_text=True)
    assert f'href="/images/{image.id}/edit"' in page
    html = client.get(f"/images/{image.id}/edit").get_data(as_text=True)
    assert '<canvas id="mask-canvas"' in html and 'width="32" height="32"' in html
    assert "/static/edit.js" in html and "<script>" not in html
    assert ">a quiet lake</textarea>" in html
    for value in ("vary", "zoom_1.5", "zoom_2", "left", "right", "up", "down"):
        assert f'name="action" value="{value}"' in html, value
    for control in ('for="brush-size"', 'id="mask-undo"', 'id="mask-clear"', 'id="tool-eraser"'):
        assert control in html, control


def test_zoom_out_2x_from_the_edit_page_doubles_the_size_and_shows_the_chain(
    edit_site: Site,
) -> None:
    (source,) = seed_images(edit_site.store, make_image(prompt="a lone tree"))
    client = edit_site.client()
    url = f"/images/{source.id}/edit"
    response = client.post(
        url, data={**form_tokens(client, url), "prompt": "a lone tree", "action": "zoom_2"}
    )
    image = made_image(client, job_id_of(response))
    assert (image["width"], image["height"]) == (64, 64)
    assert image["kind"] == "outpaint" and image["parent_image_id"] == source.id
    assert image["chain"] == [source.id, image["id"]]
    with file_of(client, image) as result:
        assert result.size == (64, 64)
    html = client.get(f"/images/{image['id']}").get_data(as_text=True)
    assert f'href="/images/{source.id}"' in html
    assert 'class="chain"' in html and "zoomed out" in html.lower()


def test_pan_right_widens_the_image(edit_site: Site) -> None:
    (source,) = seed_images(edit_site.store, make_image())
    client = edit_site.client()
    url = f"/images/{source.id}/edit"
    response = client.post(url, data={**form_tokens(client, url), "prompt": "", "action": "right"})
    image = made_image(client, job_id_of(response))
    assert image["width"] > image["height"] == 32 and image["kind"] == "outpaint"


def test_vary_region_sends_the_mask_and_makes_an_inpaint_image(edit_site: Site) -> None:
    (source,) = seed_images(edit_site.store, make_image(prompt="a red door"))
    client = edit_site.client()
    url = f"/images/{source.id}/edit"
    data = {
        **form_tokens(client, url),
        "prompt": "a blue door",
        "action": "vary",
        "mask": (io.BytesIO(mask_png((32, 32))), "mask.png"),
    }
    response = client.post(url, data=data, content_type="multipart/form-data")
    image = made_image(client, job_id_of(response))
    assert image["kind"] == "inpaint" and image["parent_image_id"] == source.id
    assert (image["width"], image["height"]) == (32, 32)
    _, mask = edit_site.store.job_inputs(image["job_id"])
    assert mask is not None
    with Image.open(io.BytesIO(mask)) as stored:
        assert stored.getpixel((8, 8)) == 255 and stored.getpixel((24, 24)) == 0


@pytest.mark.parametrize(
    ("mask", "words"),
    [
        (None, "paint the region"),
        (mask_png((32, 32), box=None), "empty"),
        (mask_png((32, 32), box=(0, 0, 32, 32)), "whole image"),
        (mask_png((16, 16)), "16×16"),
    ],
)
def test_a_bad_mask_is_refused_beside_it_and_queues_nothing(
    edit_site: Site, mask: bytes | None, words: str
) -> None:
    (source,) = seed_images(edit_site.store, make_image())
    client = edit_site.client()
    url = f"/images/{source.id}/edit"
    data: dict[str, Any] = {**form_tokens(client, url), "prompt": "x", "action": "vary"}
    if mask is not None:
        data["mask"] = (io.BytesIO(mask), "mask.png")
    response = client.post(url, data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'id="mask-error"' in html and words in html, html[-3000:]
    assert edit_site.store.recent_jobs() == []


def test_an_edit_without_the_csrf_token_is_refused(edit_site: Site) -> None:
    (source,) = seed_images(edit_site.store, make_image())
    client = edit_site.client()
    client.get(f"/images/{source.id}/edit")
    response = client.post(f"/images/{source.id}/edit", data={"action": "zoom_2", "prompt": "x"})
    assert response.status_code == 400
    assert edit_site.store.recent_jobs() == []


def test_an_unknown_edit_action_is_refused(edit_site: Site) -> None:
    (source,) = seed_images(edit_site.store, make_image())
    client = edit_site.client()
    url = f"/images/{source.id}/edit"
    response = client.post(url, data={**form_tokens(client, url), "action": "explode"})
    assert response.status_code == 400
    assert edit_site.store.recent_jobs() == []


def test_the_edit_page_of_an_unknown_image_is_404(edit_site: Site) -> None:
    client = edit_site.client()
    assert client.get("/images/000000000000-0/edit").status_code == 404
    assert client.get("/images/..%2f..%2fetc/edit").status_code == 404


# --- the JSON API -------------------------------------------------------------------------------


def test_api_outpaint_and_img2img_from_a_stored_image(edit_site: Site) -> None:
    (source,) = seed_images(edit_site.store, make_image())
    client = edit_site.client()
    first = client.post(
        "/api/v1/generations",
        json={"kind": "outpaint", "source_image_id": source.id, "outpaint": "zoom_1.5"},
    )
    assert first.status_code == 202, first.get_json()
    zoomed = made_image(client, first.get_json()["job_id"])
    assert zoomed["kind"] == "outpaint" and zoomed["width"] == 48
    second = client.post(
        "/api/v1/generations",
        json={"kind": "img2img", "source_image_id": zoomed["id"], "strength": 0.4, "prompt": "x"},
    )
    assert second.status_code == 202, second.get_json()
    remixed = made_image(client, second.get_json()["job_id"])
    assert remixed["parent_image_id"] == zoomed["id"]
    assert remixed["chain"] == [source.id, zoomed["id"], remixed["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "img2img", "prompt": "x"}, "source_image_id"),
        ({"kind": "outpaint", "source_image_id": "abc"}, "outpaint"),
        ({"kind": "outpaint", "source_image_id": "abc", "outpaint": "sideways"}, "outpaint"),
        ({"kind": "variation", "source_image_id": "abc", "strength": 0.5}, "strength"),
        ({"prompt": "x", "outpaint": "zoom_2"}, "outpaint"),
        ({"kind": "img2img", "source_image_id": "abc", "strength": "a lot"}, "strength"),
    ],
)
def test_api_refuses_inconsistent_image_requests_naming_the_field(
    edit_site: Site, body: dict[str, Any], field: str
) -> None:
    response = edit_site.client().post("/api/v1/generations", json=body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field


def test_api_outpaint_without_an_inpaint_model_is_not_in_the_document(site: Site) -> None:
    document = site.client().get("/api/v1/openapi.json").get_json()
    kinds = document["components"]["schemas"]["GenerationRequest"]["properties"]["kind"]["enum"]
    assert "img2img" in kinds and "outpaint" not in kinds
