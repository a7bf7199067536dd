"""One image: its page, file, download, prefilled form, favourite, delete, variation, upscale."""

from __future__ import annotations

import io

from engine import read_parameters
from tests.web.conftest import Site, form_tokens, make_image, seed_images, wait_job


def test_image_page_shows_every_setting(site: Site) -> None:
    (image,) = seed_images(
        site.store,
        make_image(
            prompt="a lighthouse",
            negative_prompt="fog",
            seed=4242,
            steps=31,
            guidance=6.5,
            scheduler="Euler a",
            model="sd21",
            seconds=2.5,
            author_name="alice",
            source="discord",
            author_id="99",
        ),
    )
    html = site.client().get(f"/images/{image.id}").get_data(as_text=True)
    for text in (
        "a lighthouse",
        "fog",
        "4242",
        "31",
        "6.5",
        "32×32",
        "Euler a",
        "sd21",
        "2.5 s",
        "alice",
        "discord",
        f"/images/{image.id}/download",
    ):
        assert text in html, text


def test_image_page_links_the_discord_message(site: Site) -> None:
    url = "https://discord.com/channels/1/2/3"
    (image,) = seed_images(site.store, make_image(source="discord", message_url=url))
    html = site.client().get(f"/images/{image.id}").get_data(as_text=True)
    assert f'href="{url}"' in html and "Discord message" in html


def test_image_page_never_links_a_script_url(site: Site) -> None:
    (image,) = seed_images(site.store, make_image(message_url="javascript:alert(1)"))
    html = site.client().get(f"/images/{image.id}").get_data(as_text=True)
    assert "javascript:" not in html


def test_unknown_image_is_404(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/images/000000000000-0").status_code == 404
    assert client.get("/images/000000000000-0/download").status_code == 404


def test_file_is_served_as_png(site: Site) -> None:
    (image,) = seed_images(site.store, make_image())
    with site.client().get(f"/files/{image.id}.png") as response:
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_download_carries_the_parameters_chunk(site: Site) -> None:
    (image,) = seed_images(site.store, make_image(prompt="a tiny crown", seed=77))
    with site.client().get(f"/images/{image.id}/download") as response:
        assert response.status_code == 200
        assert "attachment" in response.headers["Content-Disposition"]
        params = read_parameters(response.get_data())
    assert params is not None and params.prompt == "a tiny crown" and params.seed == 77


def test_generate_again_prefills_the_form(site: Site) -> None:
    (image,) = seed_images(
        site.store, make_image(prompt="a lighthouse", seed=4242, steps=31, scheduler="Euler a")
    )
    html = site.client().get(f"/generate?from={image.id}").get_data(as_text=True)
    assert ">a lighthouse</textarea>" in html
    assert 'value="4242"' in html and 'value="31"' in html
    assert '<option value="Euler a" selected>' in html
    assert '<details class="advanced" open>' in html


def test_favourite_toggles_for_this_client(site: Site) -> None:
    (image,) = seed_images(site.store, make_image())
    client = site.client()
    tokens = form_tokens(client, f"/images/{image.id}")
    response = client.post(f"/images/{image.id}/favourite", data={**tokens, "on": "1"})
    assert response.status_code == 303
    assert site.store.image(image.id).favourites == 1  # type: ignore[union-attr]
    assert "Unfavourite" in client.get(f"/images/{image.id}").get_data(as_text=True)
    client.post(f"/images/{image.id}/favourite", data={**tokens, "on": "0"})
    assert site.store.image(image.id).favourites == 0  # type: ignore[union-attr]


def test_delete_is_refused_to_other_clients(site: Site) -> None:
    (image,) = seed_images(site.store, make_image(author_id="someone-else"))
    client = site.client()
    html = client.get(f"/images/{image.id}").get_data(as_text=True)
    assert "/delete" not in html
    tokens = form_tokens(client, f"/images/{image.id}")
    assert client.post(f"/images/{image.id}/delete", data=tokens).status_code == 403
    assert site.store.image(image.id) is not None


def test_delete_by_the_admin_removes_image_and_file(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(env={"IMAGINE_ADMIN_TOKEN": "s3cret"})
    (image,) = seed_images(site.store, make_image(source="discord", author_id="1"))
    client = site.client()
    client.post("/login", data={"token": "s3cret", **form_tokens(client, "/login")})
    tokens = form_tokens(client, f"/images/{image.id}")
    assert client.post(f"/images/{image.id}/delete", data=tokens).status_code == 303
    assert site.store.image(image.id) is None
    assert not site.store.image_path(image.file_name).exists()
    assert client.get(f"/images/{image.id}").status_code == 404


def test_login_with_a_wrong_token_is_refused(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(env={"IMAGINE_ADMIN_TOKEN": "s3cret"})
    client = site.client()
    response = client.post("/login", data={"token": "guess", **form_tokens(client, "/login")})
    assert response.status_code == 403


def test_author_may_delete_their_own_image(site: Site) -> None:
    client = site.client()
    response = client.post("/generate", data={"prompt": "mine", **form_tokens(client)})
    job = wait_job(client, response.headers["Location"].rsplit("/", 1)[1])
    image_id = job["image_ids"][0]
    tokens = form_tokens(client, f"/images/{image_id}")
    assert client.post(f"/images/{image_id}/delete", data=tokens).status_code == 303
    assert site.store.image(image_id) is None


def test_variation_and_upscale_queue_jobs_from_the_image(site: Site) -> None:
    (image,) = seed_images(site.store, make_image())
    client = site.client()
    for kind in ("variation", "upscale"):
        tokens = form_tokens(client, f"/images/{image.id}")
        response = client.post(f"/images/{image.id}/{kind}", data=tokens)
        assert response.status_code == 303, response.get_data(as_text=True)
        job = wait_job(client, response.headers["Location"].rsplit("/", 1)[1])
        assert job["state"] == "done", job
        made = site.store.image(job["image_ids"][0])
        assert made is not None and made.kind == kind and made.parent_image_id == image.id
    assert made.width == 64  # the upscale doubled 32 px


def test_file_bytes_are_the_stored_png(site: Site) -> None:
    (image,) = seed_images(site.store, make_image())
    with site.client().get(f"/files/{image.id}.png") as response:
        data = response.get_data()
    assert data == site.store.image_path(image.file_name).read_bytes()
    assert read_parameters(io.BytesIO(data).getvalue()) is not None
