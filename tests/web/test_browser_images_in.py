"""Images in, in a real browser: paint a mask on the edit page and vary the region; upload an
init image through the generate form. Headless Chromium (Playwright) on the real server."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.web.conftest import Site, make_image, seed_images, serving
from tests.web.test_browser import ARGS, ARTIFACTS, CHROMIUM, assert_images_drawn, watch_failures

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (make test installs it)"
    ),
]


@pytest.fixture
def edit_server(
    make_site: Callable[..., Site], tiny_model_dir: Path, tiny_inpaint_model_dir: Path
) -> Iterator[tuple[str, Site]]:
    site = make_site(
        engine={"model": "tiny"},
        models={
            "tiny": {"path": str(tiny_model_dir)},
            "tiny-inpaint": {"path": str(tiny_inpaint_model_dir), "kind": "inpaint"},
        },
        limits={"max_per_user": 50},
    )
    with serving(site) as base:
        yield base, site


def test_paint_a_mask_vary_the_region_and_upload_an_init_image(edit_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    base, site = edit_server
    (source,) = seed_images(site.store, make_image(prompt="a red door", width=64, height=64))
    init = tmp_path / "init.png"
    Image.new("RGB", (48, 32), (30, 160, 90)).save(init)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            failed = watch_failures(page)

            page.goto(f"{base}/images/{source.id}")
            page.click(f'a[href="/images/{source.id}/edit"]')
            page.wait_for_url(f"**/images/{source.id}/edit")
            page.locator("#brush-size").fill("128")
            box = page.locator("#mask-canvas").bounding_box()
            assert box is not None and box["width"] > 64  # drawn larger than its 64 pixels
            page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
            page.mouse.down()
            for step in range(1, 11):
                page.mouse.move(
                    box["x"] + box["width"] * (0.2 + 0.04 * step),
                    box["y"] + box["height"] * 0.3,
                )
            page.mouse.up()
            assert "marked" in page.inner_text("#mask-status")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "edit.png"), full_page=True)
            page.fill("#prompt", "a blue door")
            page.click("#vary-region")
            page.wait_for_url("**/jobs/*")
            page.wait_for_selector(".results img", timeout=60_000)
            page.click(".results a")
            page.wait_for_url("**/images/*")
            assert page.url.rstrip("/").rsplit("/", 1)[1] != source.id
            chain = page.locator(".chain")
            assert chain.locator(f'a[href="/images/{source.id}"]').count() == 1
            assert "varied" in chain.inner_text().lower()
            assert_images_drawn(page)
            page.screenshot(path=str(ARTIFACTS / "image-chain.png"), full_page=True)
            varied_id = page.url.rstrip("/").rsplit("/", 1)[1]
            varied = site.store.image(varied_id)
            assert varied is not None and varied.kind == "inpaint"
            assert varied.parent_image_id == source.id
            assert (varied.width, varied.height) == (64, 64)
            _, mask = site.store.job_inputs(varied.job_id)
            assert mask is not None  # the stroke went across the upper part, left to right
            with Image.open(io.BytesIO(mask)) as stored:
                grey = stored.convert("L")
                assert grey.getpixel((32, 19)) == 255 and grey.getpixel((32, 60)) == 0

            page.goto(f"{base}/generate?init={source.id}")
            assert_images_drawn(page)
            page.screenshot(path=str(ARTIFACTS / "generate-init.png"), full_page=True)
            page.goto(f"{base}/generate")
            page.fill("#prompt", "a green field")
            page.set_input_files("#init_image", str(init))
            page.click("button[type=submit].big")
            page.wait_for_url("**/jobs/*")
            page.wait_for_selector(".results img", timeout=60_000)
            page.click(".results a")
            page.wait_for_url("**/images/*")
            made = site.store.image(page.url.rstrip("/").rsplit("/", 1)[1])
            assert made is not None and made.kind == "img2img" and made.width > made.height
            assert not [e for e in errors if "Content Security Policy" in e], errors
            assert failed == [], failed
        finally:
            browser.close()
