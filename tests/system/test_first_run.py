"""A newcomer's first run, for real: a fresh copy of the project, `python -m bot` with no config
file and the default relative data folder, one image generated from the form in Chromium, and
every image on the gallery, job and image pages loaded (status 200, `image/png`, drawn).

Every other test uses absolute temporary data folders; this is the path `make run` takes.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
]
START_TIMEOUT_S = 120
PROMPT = "a large red circle on a blue background"

pytestmark = pytest.mark.timeout(300)


def copy_project(target: Path) -> Path:
    """Copy the files a `git clone` of this working tree would hold (tracked and new)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        destination = target / name
        if source.is_symlink():  # git keeps links as links (the demo twin's shared parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(source), destination)
            continue
        if not source.is_file() or name.startswith("tests/artifacts/"):
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


@dataclass
class Started:
    """A program started from some folder, and where its gallery listens."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh copy of the project for this module (about 20 MB, mostly the demo model)."""
    return copy_project(tmp_path_factory.mktemp("clone") / "imagine")


@pytest.fixture
def start_program(tmp_path: Path) -> Iterator[object]:
    """Return a starter: run `python -m bot` in a folder; stopped by its pid after the test."""
    started: list[Started] = []

    def start(cwd: Path, *args: str, pythonpath: Path | None = None) -> Started:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "PYTHONPATH")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        log_path = tmp_path / f"program{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot", "--port", str(port), *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        program = Started(process, f"http://127.0.0.1:{port}", log_path)
        started.append(program)
        wait_healthy(program)
        return program

    yield start
    for program in started:
        if program.process.poll() is None:
            program.process.send_signal(signal.SIGTERM)
            try:
                program.process.wait(60)
            except subprocess.TimeoutExpired:
                program.process.kill()
                program.process.wait(30)


def wait_healthy(program: Started) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert program.process.poll() is None, program.log()
        try:
            with urllib.request.urlopen(program.base_url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no healthy /healthz in {START_TIMEOUT_S} s:\n{program.log()}")


def assert_every_image_loads(page: object, base_url: str, where: str) -> int:
    """Check each <img> on the page: drawn by the browser, and fetched as a PNG with 200."""
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.images].every(i => i.complete)", timeout=15_000
    )
    sources = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "img[src]", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
    )
    assert sources, f"no images on {where}"
    for source, is_complete, natural_width in sources:
        assert is_complete and natural_width > 0, f"{where}: {source} did not load"
        response = page.request.get(urllib.parse.urljoin(base_url, source))  # type: ignore[attr-defined]
        assert response.status == 200, (where, source, response.status)
        assert response.headers["content-type"] == "image/png", (where, source)
        assert response.body()[:8] == b"\x89PNG\r\n\x1a\n", (where, source)
    return len(sources)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (make test installs it)")
def test_a_fresh_copy_with_no_config_generates_and_every_image_loads(
    project: Path, start_program: object
) -> None:
    from playwright.sync_api import sync_playwright

    program = start_program(project)  # type: ignore[operator]
    base = program.base_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            failed: list[str] = []
            page.on(
                "response",
                lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            page.goto(f"{base}/generate")
            assert "demo model" in page.inner_text("footer")
            assert page.get_attribute("#prompt", "placeholder") == PROMPT
            page.click("#demo-guide .examples a >> nth=0")
            assert page.input_value("#prompt") == PROMPT
            page.click("button[type=submit].big")
            page.wait_for_url("**/jobs/*")
            page.wait_for_selector(".results img", timeout=60_000)
            assert "Done" in page.inner_text("#job-status")
            assert_every_image_loads(page, base, "the job page")
            image_page = page.get_attribute(".results a", "href")

            page.goto(f"{base}/")
            page.wait_for_selector(".grid img")
            assert_every_image_loads(page, base, "the gallery")
            page.goto(f"{base}{image_page}")
            assert_every_image_loads(page, base, "the image page")
            # The offline default has the demo's inpainting twin: zoom out works out of the box.
            page.click("text=Edit: vary region, zoom out, pan")
            page.click("button[value=zoom_2]")
            page.wait_for_url("**/jobs/*")
            page.wait_for_selector(".results img", timeout=60_000)
            assert "Done" in page.inner_text("#job-status")
            assert_every_image_loads(page, base, "the zoomed-out job page")
            zoomed = page.eval_on_selector(".results img", "e => [e.naturalWidth, e.naturalHeight]")
            assert zoomed == [64, 64], zoomed  # the 32 px image, zoomed out 2×
            assert failed == [], failed
        finally:
            browser.close()
    # The data folder is where the README says: ./data of the folder `make run` ran in.
    images = list((project / "data" / "images").glob("*.png"))
    assert len(images) == 2 and (project / "data" / "imagine.sqlite3").exists()
    assert not (project / "web" / "data").exists()


def test_started_elsewhere_a_relative_data_dir_is_beside_the_config_file(
    project: Path, start_program: object, tmp_path: Path
) -> None:
    config_dir = project / "deploy"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.toml").write_text('[engine]\ndata_dir = "state"\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = os.path.relpath(config_dir / "config.toml", elsewhere)  # relative to the cwd
    program = start_program(elsewhere, "--config", config, pythonpath=project)  # type: ignore[operator]
    client = FormClient(program.base_url)
    job_path = client.generate(PROMPT)
    html = client.wait_done(job_path)
    pages = {"job": html, "gallery": client.get("/")}
    image_pages = re.findall(r'href="(/images/[0-9a-f]+-\d+)"', html)
    assert image_pages
    pages["image"] = client.get(image_pages[0])
    for name, text in pages.items():
        sources = re.findall(r'<img[^>]* src="([^"]+)"', text)
        assert sources, name
        for source in sources:
            status, content_type, body = client.fetch(source)
            assert (status, content_type) == (200, "image/png"), (name, source)
            assert body[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((config_dir / "state" / "images").glob("*.png"))) == 1
    assert not (elsewhere / "state").exists() and not (elsewhere / "data").exists()


class FormClient:
    """A cookie-keeping client that fills the generate form the way a browser posts it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def fetch(self, path: str, data: bytes | None = None) -> tuple[int, str, bytes]:
        request = urllib.request.Request(urllib.parse.urljoin(self.base_url, path), data=data)
        with self.opener.open(request, timeout=30) as response:
            return response.status, response.headers.get_content_type(), response.read()

    def get(self, path: str) -> str:
        status, _, body = self.fetch(path)
        assert status == 200, (path, status)
        return body.decode()

    def generate(self, prompt: str) -> str:
        form = self.get("/generate")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        nonce = re.search(r'name="nonce" value="([0-9a-f]{32})"', form)
        assert csrf and nonce
        body = urllib.parse.urlencode(
            {"csrf_token": csrf.group(1), "nonce": nonce.group(1), "prompt": prompt}
        ).encode()
        request = urllib.request.Request(self.base_url + "/generate", data=body)
        with self.opener.open(request, timeout=30) as response:
            path = urllib.parse.urlparse(response.geturl()).path
        assert path.startswith("/jobs/"), path
        return path

    def wait_done(self, job_path: str, timeout_s: float = 90) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            html = self.get(job_path)
            if "Done" in html:
                return html
            time.sleep(0.3)
        raise AssertionError(f"{job_path} not done in {timeout_s} s")
