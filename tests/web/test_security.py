"""FAULTS 4, 28, 30, 31: inert prompts, safe file serving, size limits, safe deployment."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import stat
from pathlib import Path

import pytest
from markupsafe import escape

from engine import ConfigError
from tests.web.conftest import Site, form_tokens, make_image, seed_images, wait_job
from web import create_app
from web.security import SECRET_FILE

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"
XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "'><svg/onload=alert(1)>",
    "</textarea><script>alert(2)</script>",
]


@pytest.mark.parametrize("payload", XSS)
def test_hostile_prompt_is_inert_in_every_view(site: Site, payload: str) -> None:
    client = site.client()
    tokens = form_tokens(client)
    response = client.post("/generate", data={"prompt": f"cat {payload}", **tokens})
    job = wait_job(client, response.headers["Location"].rsplit("/", 1)[1])
    image_id = job["image_ids"][0]
    pages = [
        "/",
        f"/?q={payload}",
        f"/images/{image_id}",
        f"/jobs/{job['job_id']}",
        f"/generate?from={image_id}",
        f"/generate?prompt={payload}",
    ]
    for url in pages:
        html = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in html and "</textarea><script>" not in html, url
        assert "<img src=x" not in html and "<svg/onload" not in html, url
        assert 'href="javascript:' not in html and 'src="javascript:' not in html, url
    for url in (f"/api/v1/images/{image_id}", f"/api/v1/jobs/{job['job_id']}", "/api/v1/images"):
        response = client.get(url)
        assert response.mimetype == "application/json"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert json.loads(response.get_data(as_text=True))
    assert client.get(f"/api/v1/images/{image_id}").get_json()["prompt"] == f"cat {payload}"
    shown = client.get(f"/images/{image_id}").get_data(as_text=True)
    assert str(escape(f"cat {payload}")) in shown


def test_templates_hold_no_inline_script_or_handlers() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
        assert not re.search(r"\son[a-z]+\s*=", text), path
        assert "|safe" not in text and "Markup(" not in text, path


@pytest.mark.parametrize(
    "url",
    [
        "/files/../imagine.sqlite3",
        "/files/%2e%2e%2fimagine.sqlite3",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files/..\\imagine.sqlite3",
        "/files/..%5cimagine.sqlite3",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/C:%5cwindows%5cwin.ini",
        "/files/%00.png",
        "/files/IMAGE.png%00",
        "/files/IMAGE.png%00.txt",
        "/files/IMAGE",
        "/files/IMAGE.PNG.png",
        "/files/.IMAGE.png.tmp",
        "/files/imagine.sqlite3",
        "/files/web-secret-key",
        "/files/images/IMAGE.png",
        "/files/%2e%2e%2fimages%2fIMAGE.png",
        "/images/..%2fimagine.sqlite3/download",
        "/images/IMAGE%00/download",
        "/static/../imagine.sqlite3",
        "/static/%2e%2e/%2e%2e/engine/store.py",
    ],
)
def test_path_traversal_variants_are_404(site: Site, url: str) -> None:
    (image,) = seed_images(site.store, make_image())
    client = site.client()
    client.get("/")
    with client.get(url.replace("IMAGE", image.id)) as response:
        assert response.status_code == 404, url


def test_symlinked_image_file_is_404(site: Site, tmp_path: Path) -> None:
    secret = tmp_path / "outside.png"
    secret.write_bytes(b"secret")
    image = make_image()
    site.store.insert_images([image])
    os.symlink(secret, site.store.image_path(image.file_name))
    assert site.client().get(f"/files/{image.id}.png").status_code == 404


def test_record_naming_a_file_outside_the_folder_is_404(site: Site) -> None:
    image = make_image(file_name="../imagine.sqlite3")
    site.store.insert_images([image])
    assert site.client().get(f"/files/{image.id}.png").status_code == 404
    assert site.client().get(f"/images/{image.id}/download").status_code == 404


class _Zeros(io.RawIOBase):
    """A stream of zeros that never sits in memory at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset if whence == 0 else self.size + offset
        return self.position

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        count = min(len(buffer), self.size - self.position)
        buffer[:count] = b"0" * count
        self.position += count
        return count


@pytest.mark.parametrize(
    ("url", "content_type"),
    [
        ("/generate", "application/x-www-form-urlencoded"),
        ("/generate", "multipart/form-data; boundary=x"),
        ("/api/v1/generations", "application/json"),
    ],
)
def test_100_mb_body_is_413(site: Site, url: str, content_type: str) -> None:
    size = 100 * 1024 * 1024
    response = site.client().post(
        url, input_stream=_Zeros(size), content_length=size, content_type=content_type
    )
    assert response.status_code == 413
    assert site.store.recent_jobs() == []


def test_multipart_form_with_10000_parts_is_413(site: Site) -> None:
    parts = "".join(
        f'--x\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(10_000)
    )
    response = site.client().post(
        "/generate", data=parts + "--x--\r\n", content_type="multipart/form-data; boundary=x"
    )
    assert response.status_code == 413
    assert site.store.recent_jobs() == []


def test_urlencoded_form_with_10000_fields_is_413(site: Site) -> None:
    body = "&".join(f"field{i:05}=xxxx" for i in range(10_000))
    response = site.client().post(
        "/generate", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "url", ["/", "/generate", "/nope", "/api/v1/images", "/healthz", "/static/style.css"]
)
def test_security_headers_on_every_response(client, url: str) -> None:  # type: ignore[no-untyped-def]
    with client.get(url) as response:
        headers = response.headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


def test_error_pages_render_as_html_and_json(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/no-such-page")
    assert page.status_code == 404 and "Nothing here" in page.get_data(as_text=True)
    assert client.post("/").status_code == 405
    as_json = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert as_json.get_json()["error"] == "not_found"


def test_unexpected_error_is_a_short_apology(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> str:
        raise RuntimeError("internal detail /secret/path")

    site.app.add_url_rule("/broken", "broken", broken)
    with caplog.at_level(logging.ERROR, logger="web.errors"):
        response = site.client().get("/broken")
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "something went wrong" in text and "/secret/path" not in text
    assert "internal detail" in caplog.text


def test_secret_key_is_generated_once_and_kept(site: Site) -> None:
    path = site.running.settings.data_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = create_app(site.running.settings, site.running.bridge)
    assert again.secret_key == site.app.secret_key == path.read_text()


def test_secret_key_from_the_environment_wins(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(env={"IMAGINE_SECRET_KEY": "k" * 40})
    assert site.app.secret_key == "k" * 40
    assert not (site.running.settings.data_path / SECRET_FILE).exists()


def test_session_cookie_is_signed_and_http_only(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/generate")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_debug_outside_development_is_refused(start_engine) -> None:  # type: ignore[no-untyped-def]
    running = start_engine(web={"debug": True, "host": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"web\.debug"):
        create_app(running.settings, running.bridge)


def test_open_bind_without_admin_token_warns_loudly(
    start_engine, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    running = start_engine(web={"host": "0.0.0.0"})
    with caplog.at_level(logging.WARNING, logger="web.security"):
        create_app(running.settings, running.bridge)
    assert "without an admin token" in caplog.text


def test_failed_sign_ins_are_limited_per_client_and_logged(make_site, caplog) -> None:  # type: ignore[no-untyped-def]
    client = make_site(env={"IMAGINE_ADMIN_TOKEN": "s3cret"}).client()
    with caplog.at_level(logging.WARNING, logger="web.account"):
        answers = [
            client.post("/login", data={"token": "nope", **form_tokens(client, "/login")})
            for _ in range(6)
        ]
    codes = [answer.status_code for answer in answers]
    assert codes == [403] * 5 + [429]
    assert caplog.text.count("failed admin sign-in") == 5
    right = client.post("/login", data={"token": "s3cret", **form_tokens(client, "/login")})
    assert right.status_code == 429  # still limited this minute, even with the right token


def test_a_right_token_never_counts_against_the_client(make_site) -> None:  # type: ignore[no-untyped-def]
    client = make_site(env={"IMAGINE_ADMIN_TOKEN": "s3cret"}).client()
    for _ in range(8):
        response = client.post("/login", data={"token": "s3cret", **form_tokens(client, "/login")})
        assert response.status_code == 303


def test_rotating_the_admin_token_signs_admin_sessions_out(start_engine) -> None:  # type: ignore[no-untyped-def]
    running = start_engine(env={"IMAGINE_ADMIN_TOKEN": "old", "IMAGINE_SECRET_KEY": "k" * 40})
    app = create_app(running.settings, running.bridge)
    client = app.test_client()
    client.post("/login", data={"token": "old", **form_tokens(client, "/login")})
    assert "Sign out" in client.get("/").get_data(as_text=True)
    rotated = dataclasses.replace(
        running.settings, secrets=dataclasses.replace(running.settings.secrets, admin_token="new")
    )
    again = create_app(rotated, running.bridge)  # the same secret key, so the cookie is valid
    other = again.test_client()
    session = client.get_cookie("session")  # the same browser, after the restart
    assert session is not None
    other.set_cookie("session", session.value)
    assert "Sign out" not in other.get("/").get_data(as_text=True)
