"""One real browser: waitress on 127.0.0.1, headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import waitress
from PIL import Image

from engine import GenerationRequest, Requester, read_parameters
from tests.web.conftest import Site

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


@pytest.fixture
def server(make_site) -> Iterator[tuple[str, Site]]:  # type: ignore[no-untyped-def]
    site = make_site(
        engine={"preview_every_steps": 1},
        limits={"default_steps": 12, "max_per_user": 50},
    )
    port = _free_port()
    wsgi = waitress.create_server(site.app, host="127.0.0.1", port=port, threads=8)
    thread = threading.Thread(target=wsgi.run, name="test-waitress", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", site
    wsgi.close()
    thread.join(10)


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
            page.screenshot(path=str(ARTIFACTS / "job.png"), full_page=True)

            page.goto(f"{base}/")
            page.wait_for_selector(".grid img")
            cards = page.locator(".card")
            assert cards.count() == len(PROMPTS) + 1
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
        finally:
            browser.close()
    if os.environ.get("IMAGINE_UPDATE_DOCS") == "1":  # refresh the README's screenshot on request
        shutil.copyfile(ARTIFACTS / "gallery.png", DOCS_SHOT)
