"""LoRAs in the gallery: the image page shows them, the API takes and returns them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine import read_parameters
from tests.web.conftest import Site, form_tokens, make_image, seed_images, wait_job


@pytest.fixture
def with_loras(make_site: Callable[..., Site], tiny_lora: Path) -> Site:
    """A gallery whose engine offers one LoRA."""
    return make_site(loras={"fox": {"path": str(tiny_lora), "label": "Fox fur"}})


def test_a_lora_flag_from_the_form_is_shown_on_the_image_page(with_loras: Site) -> None:
    client = with_loras.client()
    data = {"prompt": "a fox --lora fox:0.8", "steps": "2", **form_tokens(client)}
    response = client.post("/generate", data=data)
    assert response.status_code == 303
    job = wait_job(client, response.headers["Location"].rsplit("/", 1)[1])
    image_id = job["image_ids"][0]
    html = client.get(f"/images/{image_id}").get_data(as_text=True)
    assert '<dt>LoRAs</dt><dd class="loras">fox <span class="weight">0.8</span></dd>' in html
    with client.get(f"/images/{image_id}/download") as download:
        params = read_parameters(download.get_data())
    assert params is not None and params.prompt == "a fox <lora:fox:0.8>"


def test_the_image_page_lists_several_loras_and_none_without(site: Site) -> None:
    with_two, plain = seed_images(
        site.store, make_image(loras="fox:0.8 ink:-0.5"), make_image(prompt="plain")
    )
    client = site.client()
    html = client.get(f"/images/{with_two.id}").get_data(as_text=True)
    assert (
        '<dd class="loras">fox <span class="weight">0.8</span>, '
        'ink <span class="weight">-0.5</span></dd>'
    ) in html
    assert "<dt>LoRAs</dt>" not in client.get(f"/images/{plain.id}").get_data(as_text=True)


def test_the_api_takes_loras_and_the_image_json_has_them(with_loras: Site) -> None:
    client = with_loras.client()
    body = {"prompt": "a fox", "loras": ["fox:0.8"], "steps": 2, "seed": 1}
    created = client.post("/api/v1/generations", json=body)
    assert created.status_code == 202
    job = wait_job(client, created.get_json()["job_id"])
    image = client.get(f"/api/v1/images/{job['image_ids'][0]}").get_json()
    assert image["loras"] == [{"name": "fox", "weight": 0.8}]


@pytest.mark.parametrize(
    ("loras", "words"),
    [
        ("fox", "expected a list"),
        (["fox:9"], "expected a weight -2–2"),
        (["fxo"], "did you mean fox?"),
        (["fox", "fox:1"], "named twice"),
    ],
)
def test_the_api_refuses_bad_loras_naming_the_field(
    with_loras: Site, loras: object, words: str
) -> None:
    response = with_loras.client().post("/api/v1/generations", json={"prompt": "a", "loras": loras})
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["field"] == "loras" and words in answer["message"]


def test_the_openapi_document_offers_the_loras_only_when_there_are_some(
    with_loras: Site, site: Site
) -> None:
    document = with_loras.client().get("/api/v1/openapi.json").get_json()
    field = document["components"]["schemas"]["GenerationRequest"]["properties"]["loras"]
    assert field["maxItems"] == 3 and field["items"]["pattern"].startswith("^(?:fox)")
    plain = site.client().get("/api/v1/openapi.json").get_json()
    assert "loras" not in plain["components"]["schemas"]["GenerationRequest"]["properties"]


def test_generate_again_keeps_the_loras_as_flags(site: Site) -> None:
    [image] = seed_images(site.store, make_image(prompt="a fox", loras="fox:0.8 ink:-0.5"))
    html = site.client().get(f"/generate?from={image.id}").get_data(as_text=True)
    assert "a fox --lora fox:0.8 --lora ink:-0.5" in html
