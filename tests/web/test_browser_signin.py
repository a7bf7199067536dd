"""One real browser signs in with the fake Discord, generates, finds the image under My images,
likes it, puts it on a board and signs out; axe checks each page on the way."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.web.conftest import Site
from tests.web.discord_signin import SECRET_ENV, Discord
from tests.web.test_browser import ARGS, CHROMIUM
from web import GalleryServer

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
def served(make_site, discord: Discord) -> Iterator[tuple[str, Site]]:  # type: ignore[no-untyped-def]
    """A members-only gallery on a fixed 127.0.0.1 port (its redirect URI names the port)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    site = make_site(
        env=SECRET_ENV,
        web=discord.web_section(public_url=base, port=port, browse="members", generate="members"),
        limits={"default_steps": 2},
    )
    server = GalleryServer(site.app, site.running.bridge, site.running.settings.web)
    assert server.start()
    try:
        yield base, site
    finally:
        server.stop()


def test_sign_in_generate_find_mine_like_board_and_sign_out_in_a_browser(served, discord) -> None:  # type: ignore[no-untyped-def]
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import sync_playwright

    base, _ = served
    fake = discord.fake
    fake.guild.member(fake.user("alice").id).nick = "Alice"
    fake.rest.oauth.signed_in = fake.user("alice")
    axe = Axe()
    serious: list[str] = []

    def check(page, name: str) -> None:  # type: ignore[no-untyped-def]
        for violation in axe.run(page).response["violations"]:
            if violation["impact"] in ("critical", "serious"):
                serious.append(f"{name}: {violation['id']}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/")
            assert "Sign in with Discord" in page.inner_text("main")
            check(page, "sign-in page")
            page.click("main a.button")
            page.wait_for_selector("header >> text=Sign out")
            assert page.url == f"{base}/"
            assert "Alice" in page.inner_text("header")

            page.goto(f"{base}/generate")
            page.fill("#prompt", "a lighthouse signed in from the browser")
            page.click("button[type=submit].big")
            page.wait_for_url("**/jobs/*")
            page.wait_for_selector(".results img", timeout=60_000)

            page.click("header >> text=My images")
            page.wait_for_selector(".grid img")
            assert page.locator(".card").count() == 1
            check(page, "my images")
            page.click(".card a")
            page.wait_for_url("**/images/*")
            assert "Alice" in page.inner_text("main")
            page.click("text=☆ Favourite")
            page.wait_for_selector("text=★ Unfavourite")
            assert "⭐ 1" in page.inner_text("main")
            check(page, "image page, signed in")
            image_url = page.url

            page.click("header >> text=Boards")
            page.fill("#board-name", "Lighthouses")
            page.click("text=Make board")
            page.wait_for_url("**/boards/*")
            board_url = page.url
            page.goto(image_url)
            page.select_option("#add-board", label="Lighthouses")
            page.click("text=Add to board")
            page.wait_for_url(image_url)
            page.goto(board_url)
            assert "1 image · private" in page.inner_text("main")
            assert page.locator(".card").count() == 1
            check(page, "board page")

            # Your settings: a 16:9 default, and the form then says it is used.
            page.click("header >> text=Settings")
            page.select_option("#aspect", "16:9")
            check(page, "settings page")
            page.click("button[value=save]")
            page.wait_for_url(f"{base}/settings")
            assert "Saved" in page.inner_text("main")
            page.goto(f"{base}/generate")
            assert "aspect 16:9" in page.inner_text("#my-defaults")
            page.goto(f"{base}/age?next=/")
            check(page, "age notice")
            page.click("text=I am 18 or older")
            page.wait_for_url(f"{base}/")

            page.click("header >> text=Sign out")
            page.wait_for_selector("main >> text=Sign in with Discord")
            assert "Sign in with Discord" in page.inner_text("main")
            assert page.goto(f"{base}/?mine=1").status == 401  # type: ignore[union-attr]
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            browser.close()
    assert serious == [], serious
