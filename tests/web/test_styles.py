"""Styles in the gallery: the form's style select, the image page, the API, the filter."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.web.conftest import Site, form_tokens, make_image, seed_images, wait_job

STYLES = {"oil": {"prompt": "{prompt}, oil painting", "label": "Oil painting"}}


@pytest.fixture
def styled(make_site: Callable[..., Site]) -> Site:
    """A gallery whose engine offers one style."""
    return make_site(styles=STYLES)


def test_the_form_offers_a_labelled_style_select_when_styles_exist(styled: Site) -> None:
    html = styled.client().get("/generate").get_data(as_text=True)
    assert '<label for="style">Style</label>' in html
    assert '<option value="oil" >Oil painting</option>' in html


def test_the_form_has_no_style_select_without_styles(site: Site) -> None:
    assert 'name="style"' not in site.client().get("/generate").get_data(as_text=True)


def test_a_style_from_the_form_is_shown_on_the_image_page(styled: Site) -> None:
    client = styled.client()
    data = {"prompt": "a fox", "style": "oil", "steps": "2", **form_tokens(client)}
    response = client.post("/generate", data=data)
    assert response.status_code == 303
    job = wait_job(client, response.headers["Location"].rsplit("/", 1)[1])
    html = client.get(f"/images/{job['image_ids'][0]}").get_data(as_text=True)
    assert '<dt>Style</dt><dd class="style"><a href="/?style=oil">oil</a></dd>' in html
    assert "a fox, oil painting" in html


def test_an_unknown_style_from_the_form_is_shown_beside_the_select(styled: Site) -> None:
    client = styled.client()
    data = {"prompt": "a fox", "style": "oli", **form_tokens(client)}
    response = client.post("/generate", data=data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'id="style-error"' in html and "did you mean oil?" in html
    assert styled.store.recent_jobs() == []


def test_the_api_takes_a_style_and_the_image_json_has_it(styled: Site) -> None:
    client = styled.client()
    body = {"prompt": "a fox", "style": "oil", "steps": 2, "seed": 1}
    created = client.post("/api/v1/generations", json=body)
    assert created.status_code == 202
    job = wait_job(client, created.get_json()["job_id"])
    image = client.get(f"/api/v1/images/{job['image_ids'][0]}").get_json()
    assert (image["style"], image["prompt"]) == ("oil", "a fox, oil painting")


def test_the_api_refuses_a_style_that_is_not_text(styled: Site) -> None:
    response = styled.client().post("/api/v1/generations", json={"prompt": "a", "style": 3})
    assert response.status_code == 400 and response.get_json()["field"] == "style"


def test_the_openapi_document_lists_the_styles(styled: Site) -> None:
    document = styled.client().get("/api/v1/openapi.json").get_json()
    fields = document["components"]["schemas"]["GenerationRequest"]["properties"]
    assert fields["style"]["enum"] == ["oil"]
    assert document["components"]["schemas"]["Image"]["properties"]["style"] == {"type": "string"}


def test_the_gallery_filters_by_style(site: Site) -> None:
    oil, plain = seed_images(
        site.store, make_image(style="oil", prompt="oil one"), make_image(prompt="plain one")
    )
    client = site.client()
    html = client.get("/?style=oil").get_data(as_text=True)
    assert f"/images/{oil.id}" in html and f"/images/{plain.id}" not in html
    assert 'name="style" value="oil"' in html and "show every style" in html
    listed = client.get("/api/v1/images?style=oil").get_json()["images"]
    assert [image["id"] for image in listed] == [oil.id]


def test_generate_again_keeps_the_style(styled: Site) -> None:
    [image] = seed_images(styled.store, make_image(style="oil", prompt="a fox, oil painting"))
    html = styled.client().get(f"/generate?from={image.id}").get_data(as_text=True)
    assert '<option value="oil" selected>Oil painting</option>' in html
