"""One real browser: the gallery server on 127.0.0.1, headless Chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import Finished, GenerationRequest, Requester, read_parameters
from engine.demo import read_image
from engine.demo.evaluate import MODEL_DIR
from tests.conftest import wait_done
from tests.web.conftest import Site, serving

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "gallery.png"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
]
PROMPTS = [
    "a lighthouse on a cliff at dawn, oil painting",
    "a red fox in fresh snow",
    "isometric city block at night, neon",
    "a bowl of ramen, studio photo",
    "an astronaut riding a horse on the moon",
    "watercolour map of an imaginary island",
    "a cat wearing a tiny crown",
]

# Prompts the demo model understands (README: "The demo model"), for the gallery screenshot.
DEMO_PROMPTS = [
    "a small yellow star at the top on a black background",
    "a large green triangle on a white background",
    "a white circle at the left on a red background",
    "a large blue square in the center on a yellow background",
    "a small black triangle at the right on a green background",
    "a large white star on a blue background",
    "a green square at the bottom on a black background",
]

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (make test installs it)"
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_images_drawn(page) -> None:  # type: ignore[no-untyped-def]
    """Fail when any <img> on the page did not load (a broken image, not only a 404)."""
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # lazy images load too
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=15_000)
    broken = page.eval_on_selector_all(
        "img[src]:not([hidden])",
        "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.src)",
    )
    assert broken == [], broken


def watch_failures(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Collect every response of 400 or more the page gets (images, scripts, styles)."""
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return failed


@pytest.fixture
def server(make_site) -> Iterator[tuple[str, Site]]:  # type: ignore[no-untyped-def]
    site = make_site(
        engine={"preview_every_steps": 1},
        limits={"default_steps": 12, "max_per_user": 50},
    )
    with serving(site) as base:
        yield base, site


def test_generate_in_a_browser_then_find_and_download_the_image(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    base, site = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860}, accept_downloads=True)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            failed = watch_failures(page)
            # A Discord job ahead keeps the first web job waiting while its page subscribes.
            owner = Requester(source="discord", user_id="42", name="discord-user")
            site.running.bridge.submit(
                GenerationRequest("a koi pond in autumn, ukiyo-e", steps=40), owner
            )
            for index, prompt in enumerate(PROMPTS):
                page.goto(f"{base}/generate")
                page.fill("#prompt", prompt)
                if index == 0:
                    page.click("summary")
                    page.fill("#steps", "60")
                    page.fill("#seed", "1234")
                page.click("button[type=submit].big")
                page.wait_for_url("**/jobs/*")
                if index == 0:
                    # Only the live event stream shows a preview; the server page never does.
                    page.wait_for_selector("#job-preview:not([hidden])", timeout=60_000)
                page.wait_for_selector(".results img", timeout=60_000)
            job_url = page.url
            assert "Done" in page.inner_text("#job-status")
            assert_images_drawn(page)
            page.screenshot(path=str(ARTIFACTS / "job.png"), full_page=True)

            page.goto(f"{base}/")
            page.wait_for_selector(".grid img")
            cards = page.locator(".card")
            assert cards.count() == len(PROMPTS) + 1
            page.wait_for_load_state("load")
            assert_images_drawn(page)
            page.screenshot(path=str(ARTIFACTS / "gallery.png"), full_page=False)
            page.emulate_media(color_scheme="dark")
            page.screenshot(path=str(ARTIFACTS / "gallery-dark.png"), full_page=False)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(ARTIFACTS / "gallery-phone.png"), full_page=False)
            page.set_viewport_size({"width": 1280, "height": 860})
            page.emulate_media(color_scheme="light")

            page.fill("input[name=q]", "crown")
            page.click(".filters button[type=submit]")
            page.wait_for_selector(".grid img")
            assert page.locator(".card").count() == 1
            page.click(".card a")
            page.wait_for_url("**/images/*")
            assert "a cat wearing a tiny crown" in page.inner_text("h1")
            assert_images_drawn(page)
            page.screenshot(path=str(ARTIFACTS / "image.png"), full_page=True)

            with page.expect_download() as info:
                page.click("text=Download PNG")
            saved = tmp_path / "download.png"
            info.value.save_as(saved)
            params = read_parameters(str(saved))
            assert params is not None and params.prompt == "a cat wearing a tiny crown"
            with Image.open(saved) as image:
                assert image.format == "PNG"
            assert job_url
            assert not [e for e in errors if "Content Security Policy" in e], errors
            assert failed == [], failed
        finally:
            browser.close()


def test_demo_model_draws_the_prompt_from_the_form_and_the_gallery_shows_it_crisp(
    make_site,  # type: ignore[no-untyped-def]
) -> None:
    """What `make run` shows: the shipped demo model at the engine's default steps and guidance."""
    from playwright.sync_api import sync_playwright

    site = make_site(engine={"model": str(MODEL_DIR)}, limits={"default_steps": 25})
    visitor = Requester(source="web", user_id="visitor", name="visitor")
    for index, prompt in enumerate(DEMO_PROMPTS):
        job = site.running.bridge.submit(GenerationRequest(prompt, seed=index), visitor)
        done = asyncio.run_coroutine_threadsafe(
            wait_done(site.running.engine, job.id), site.running.loop
        )
        assert isinstance(done.result(120), Finished)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serving(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{base}/generate")
            page.fill("#prompt", "a large red circle on a blue background")
            page.click("button[type=submit].big")
            page.wait_for_url("**/jobs/*")
            page.wait_for_selector(".results img", timeout=60_000)
            source = page.get_attribute(".results img", "src")
            with urllib.request.urlopen(f"{base}{source}", timeout=10) as response:
                image = Image.open(io.BytesIO(response.read())).convert("RGB")
            assert image.size == (32, 32)
            reading = read_image(np.asarray(image))
            assert (reading.colour, reading.shape, reading.background) == ("red", "circle", "blue")

            page.goto(f"{base}/")
            page.wait_for_selector(".grid img")
            assert page.locator(".card").count() == len(DEMO_PROMPTS) + 1
            # The grid's images load lazily: scroll them all in and wait until each has loaded.
            page.eval_on_selector_all(".grid img", "els => els.forEach(e => e.loading = 'eager')")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.grid img')]"
                ".every(e => e.complete && e.naturalWidth > 0)",
                timeout=20_000,
            )
            shown = page.eval_on_selector_all(
                ".grid img",
                "els => els.map(e => [e.naturalWidth, e.clientWidth,"
                " getComputedStyle(e).imageRendering])",
            )
            # 32 px images drawn several times larger, pixelated rather than smeared.
            assert all(natural == 32 and width >= 128 for natural, width, _ in shown), shown
            assert {rendering for _, _, rendering in shown} == {"pixelated"}, shown
            page.screenshot(path=str(ARTIFACTS / "gallery-demo.png"), full_page=False)
        finally:
            browser.close()
    if os.environ.get("IMAGINE_UPDATE_DOCS") == "1":  # refresh the README's screenshot on request
        shutil.copyfile(ARTIFACTS / "gallery-demo.png", DOCS_SHOT)


def test_every_page_passes_axe_with_no_serious_issue_wide_phone_and_dark(  # type: ignore[no-untyped-def]
    make_site, tiny_model_dir, tiny_inpaint_model_dir
) -> None:
    """axe-core (the checker screen-reader and browser makers use) on every kind of page."""
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import sync_playwright

    # With an inpainting model, so the edit page shows its mask editor and every button.
    site = make_site(
        env={"IMAGINE_ADMIN_TOKEN": "s3cret"},
        engine={"model": "tiny"},
        models={
            "tiny": {"path": str(tiny_model_dir)},
            "tiny-inpaint": {"path": str(tiny_inpaint_model_dir), "kind": "inpaint"},
        },
        styles={"oil": {"prompt": "{prompt}, oil painting", "label": "Oil painting"}},
    )
    visitor = Requester(source="web", user_id="visitor", name="visitor")
    request = GenerationRequest("a red fox", steps=2, seed=1, style="oil")
    job = site.running.bridge.submit(request, visitor)
    done = asyncio.run_coroutine_threadsafe(
        wait_done(site.running.engine, job.id), site.running.loop
    )
    assert isinstance(done.result(60), Finished)
    pages = {
        "gallery": "/",
        "search": "/?q=nothing-matches",
        "style": "/?style=oil",
        "image": f"/images/{job.id}-0",
        "generate": "/generate",
        "generate from an image": f"/generate?init={job.id}-0",
        "edit": f"/images/{job.id}-0/edit",
        "job": f"/jobs/{job.id}",
        "login": "/login",
        "not found": "/no-such-page",
    }
    found: list[str] = []
    axe = Axe()
    with serving(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for viewport, scheme in (
                ((1280, 860), "light"),
                ((390, 844), "light"),
                ((390, 844), "dark"),
            ):
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.emulate_media(color_scheme=scheme)
                for name, path in pages.items():
                    page.goto(base + path)
                    results = axe.run(page)
                    for violation in results.response["violations"]:
                        if violation["impact"] in ("critical", "serious"):
                            found.append(f"{name} {viewport[0]}px {scheme}: {violation['id']}")
                page.close()
        finally:
            browser.close()
    assert found == [], found
