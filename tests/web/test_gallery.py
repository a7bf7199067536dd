"""The gallery grid: order, cursor pages, search, filters, access and sensitive images."""

from __future__ import annotations

import re
import time

from tests.web.conftest import Site, form_tokens, make_image, seed_images

DAY_S = 86400


def _ids(html: str) -> list[str]:
    return re.findall(r'<a href="/images/([^"]+)">\s*<img', html)


def test_gallery_lists_newest_first(site: Site) -> None:
    images = seed_images(site.store, *[make_image() for _ in range(3)])
    html = site.client().get("/").get_data(as_text=True)
    assert _ids(html) == [i.id for i in reversed(images)]


def test_gallery_pages_with_a_cursor_without_repeats(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(web={"page_size": 3})
    images = seed_images(site.store, *[make_image() for _ in range(7)])
    client, seen, url = site.client(), [], "/"
    while url:
        html = client.get(url).get_data(as_text=True)
        seen += _ids(html)
        match = re.search(r'<a href="([^"]+)" rel="next">', html)
        url = match.group(1).replace("&amp;", "&") if match else ""
        assert "cursor=" in url or not url
    assert seen == [i.id for i in reversed(images)]


def test_gallery_cursor_keeps_the_filters(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(web={"page_size": 1})
    seed_images(site.store, make_image(prompt="red fox"), make_image(prompt="red fox two"))
    html = site.client().get("/?q=fox").get_data(as_text=True)
    assert re.search(r'href="/\?q=fox&amp;cursor=\d+" rel="next"', html)


def test_gallery_search_matches_prompt_words(site: Site) -> None:
    fox, _ = seed_images(
        site.store, make_image(prompt="a red fox in snow"), make_image(prompt="a cat")
    )
    html = site.client().get("/?q=fox snow").get_data(as_text=True)
    assert _ids(html) == [fox.id]


def test_gallery_search_treats_fts_syntax_as_words(site: Site) -> None:
    seed_images(site.store, make_image(prompt="a cat"))
    response = site.client().get('/?q=" OR * NEAR( -x')
    assert response.status_code == 200


def test_gallery_filters_by_source_and_author(site: Site) -> None:
    web, discord = seed_images(
        site.store,
        make_image(source="web", author_id="w1"),
        make_image(source="discord", author_id="123", author_name="alice"),
    )
    client = site.client()
    assert _ids(client.get("/?source=discord").get_data(as_text=True)) == [discord.id]
    assert _ids(client.get("/?source=web").get_data(as_text=True)) == [web.id]
    assert _ids(client.get("/?author=123").get_data(as_text=True)) == [discord.id]


def test_gallery_filters_by_date_range(site: Site) -> None:
    now = time.time()
    old, new = seed_images(
        site.store, make_image(created_at=now - 10 * DAY_S), make_image(created_at=now)
    )
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 10 * DAY_S))
    client = site.client()
    assert _ids(client.get(f"/?since={day}&until={day}").get_data(as_text=True)) == [old.id]
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    assert _ids(client.get(f"/?since={today}").get_data(as_text=True)) == [new.id]


def test_gallery_refuses_a_bad_date_naming_the_field(site: Site) -> None:
    response = site.client().get("/?since=yesterday")
    assert response.status_code == 400
    assert "since: expected a date YYYY-MM-DD" in response.get_data(as_text=True)


def test_gallery_refuses_an_unknown_source(site: Site) -> None:
    assert site.client().get("/?source=myspace").status_code == 400


def test_gallery_filters_my_favourites(site: Site) -> None:
    liked, _ = seed_images(site.store, make_image(), make_image())
    client = site.client()
    tokens = form_tokens(client, f"/images/{liked.id}")
    client.post(f"/images/{liked.id}/favourite", data={"csrf_token": tokens["csrf_token"]})
    assert _ids(client.get("/?favourites=1").get_data(as_text=True)) == [liked.id]
    assert _ids(site.client().get("/?favourites=1").get_data(as_text=True)) == []


def test_empty_gallery_invites_to_generate(site: Site) -> None:
    html = site.client().get("/").get_data(as_text=True)
    assert "No images yet." in html and 'href="/generate"' in html


def test_browse_off_refuses_strangers_and_admits_the_admin(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(env={"IMAGINE_ADMIN_TOKEN": "s3cret"}, web={"browse": "off"})
    (image,) = seed_images(site.store, make_image())
    client = site.client()
    assert client.get("/").status_code == 403
    assert client.get("/api/v1/images").status_code == 403
    assert client.get(f"/images/{image.id}").status_code == 404
    assert client.get(f"/files/{image.id}.png").status_code == 404
    headers = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/v1/images", headers=headers).status_code == 200
    tokens = form_tokens(client, "/login")
    client.post("/login", data={"token": "s3cret", **tokens})
    assert _ids(client.get("/").get_data(as_text=True)) == [image.id]


def test_sensitive_images_are_blurred_with_a_reveal(site: Site) -> None:
    (image,) = seed_images(site.store, make_image(is_nsfw_channel=True, source="discord"))
    client = site.client()
    html = client.get("/").get_data(as_text=True)
    assert 'class="card sensitive"' in html and f'id="reveal-{image.id}"' in html
    page = client.get(f"/images/{image.id}").get_data(as_text=True)
    assert 'class="stage sensitive"' in page and "click to reveal" in page


def test_sensitive_images_are_hidden_when_configured(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(web={"nsfw_images": "hide"})
    flagged, plain = seed_images(site.store, make_image(is_flagged=True), make_image())
    client = site.client()
    assert _ids(client.get("/").get_data(as_text=True)) == [plain.id]
    assert client.get(f"/images/{flagged.id}").status_code == 404
    assert client.get(f"/files/{flagged.id}.png").status_code == 404
    assert client.get(f"/api/v1/images/{flagged.id}").status_code == 404


def test_gallery_filters_by_author_name_in_any_case(site: Site) -> None:
    alice, _ = seed_images(
        site.store,
        make_image(source="discord", author_id="123", author_name="Alice"),
        make_image(source="discord", author_id="456", author_name="bob"),
    )
    html = site.client().get("/?author_name=alice").get_data(as_text=True)
    assert _ids(html) == [alice.id]


def test_an_author_link_narrows_the_grid_and_says_whose_images(site: Site) -> None:
    alice, _ = seed_images(
        site.store,
        make_image(source="discord", author_id="123", author_name="alice"),
        make_image(source="web", author_id="w9", author_name="web-w9"),
    )
    client = site.client()
    html = client.get("/").get_data(as_text=True)
    assert 'href="/?source=discord&amp;author=123"' in html  # every card links its author
    narrowed = client.get("/?source=discord&author=123").get_data(as_text=True)
    assert _ids(narrowed) == [alice.id]
    assert "Images by alice" in narrowed


def test_filters_past_the_search_box_fold_behind_one_control(site: Site) -> None:
    html = site.client().get("/").get_data(as_text=True)
    folded = html[html.index('<details class="more"') : html.index("</details>")]
    for name in ("source", "author_name", "since", "until", "favourites"):
        assert f'name="{name}"' in folded
    assert "<summary>Filters</summary>" in folded and "Author id" not in html
    assert '<details class="more" open>' in site.client().get("/?author_name=x").get_data(
        as_text=True
    )
