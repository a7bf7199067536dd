"""Web fixtures: a real engine on its own loop thread, the bridge, the app and its client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from engine import Engine, EngineBridge, ImageRecord, Settings, Store
from engine.pngmeta import Parameters, encode_png
from tests.conftest import gated_workers
from web import GalleryServer, create_app

CLOSE_TIMEOUT_S = 60


@dataclass
class Running:
    """An engine started on a loop thread, with its bridge and store."""

    settings: Settings
    engine: Engine
    store: Store
    bridge: EngineBridge
    loop: asyncio.AbstractEventLoop


@pytest.fixture
def start_engine(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Running]]:
    """Return a factory of engines running on a background loop; all are closed after."""
    started: list[tuple[Running, threading.Thread]] = []

    def start(
        env: dict[str, str] | None = None, gated: bool = False, **sections: dict[str, Any]
    ) -> Running:
        settings = make_settings(env=env, **sections)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="test-engine", daemon=True)
        thread.start()
        store = Store(settings.engine.data_dir)
        engine = Engine(settings, store, workers=gated_workers(settings) if gated else None)
        asyncio.run_coroutine_threadsafe(engine.start(), loop).result(60)
        running = Running(settings, engine, store, EngineBridge(engine, loop), loop)
        started.append((running, thread))
        return running

    yield start
    for running, thread in started:
        future = asyncio.run_coroutine_threadsafe(running.engine.close(grace_s=5), running.loop)
        future.result(CLOSE_TIMEOUT_S)
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(10)
        running.loop.close()


@dataclass
class Site:
    """A gallery app over a running engine."""

    app: Flask
    running: Running

    @property
    def store(self) -> Store:
        return self.running.store

    def client(self) -> FlaskClient:
        return self.app.test_client()


@pytest.fixture
def make_site(start_engine: Callable[..., Running]) -> Callable[..., Site]:
    """Return a factory: settings sections as keyword dicts, env for secrets."""

    def make(
        env: dict[str, str] | None = None, gated: bool = False, **sections: dict[str, Any]
    ) -> Site:
        running = start_engine(env=env, gated=gated, **sections)
        app = create_app(running.settings, running.bridge)
        app.config["TESTING"] = True
        return Site(app, running)

    return make


@contextlib.contextmanager
def serving(site: Site) -> Iterator[str]:
    """Serve a site with the real gallery server on a free 127.0.0.1 port; yield its URL."""
    server = GalleryServer(
        site.app, site.running.bridge, replace(site.running.settings.web, port=0)
    )
    assert server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    """A default gallery (browse public, generate open, blur)."""
    return make_site()


@pytest.fixture
def client(site: Site) -> FlaskClient:
    """A test client of the default gallery."""
    return site.client()


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_NONCE = re.compile(r'name="nonce" value="([0-9a-f]{32})"')


def form_tokens(client: FlaskClient, url: str = "/generate") -> dict[str, str]:
    """Load a page with a form; return its CSRF token and nonce."""
    html = client.get(url).get_data(as_text=True)
    tokens = {"csrf_token": _CSRF.search(html).group(1)}  # type: ignore[union-attr]
    nonce = _NONCE.search(html)
    if nonce:
        tokens["nonce"] = nonce.group(1)
    return tokens


_counter = iter(range(1, 10**9))


def make_image(**overrides: Any) -> ImageRecord:
    """Return an image record with sensible defaults."""
    n = next(_counter)
    image_id = overrides.pop("id", f"{n:012x}-0")
    values: dict[str, Any] = {
        "id": image_id,
        "job_id": image_id.split("-")[0],
        "idx": 0,
        "seed": 1000 + n,
        "width": 32,
        "height": 32,
        "prompt": f"a test picture number {n}",
        "negative_prompt": "",
        "steps": 4,
        "guidance": 7.0,
        "scheduler": "DPM++ 2M",
        "model": "tiny",
        "kind": "txt2img",
        "source": "web",
        "author_id": "someone",
        "author_name": "someone",
        "seconds": 0.5,
        "created_at": time.time(),
        "file_name": f"{image_id}.png",
    }
    values.update(overrides)
    return ImageRecord(**values)


def seed_images(store: Store, *images: ImageRecord) -> list[ImageRecord]:
    """Write PNG files (with their parameters chunk) and insert the records."""
    for image in images:
        params = Parameters(
            prompt=image.prompt,
            negative_prompt=image.negative_prompt,
            steps=image.steps,
            sampler=image.scheduler,
            cfg_scale=image.guidance,
            seed=image.seed,
            width=image.width,
            height=image.height,
            model=image.model,
        )
        pixels = Image.new("RGB", (image.width, image.height), (image.seed % 255, 90, 160))
        store.write_image_file(image.file_name, encode_png(pixels, params))
    store.insert_images(images)
    return [replace(store.image(i.id, include_deleted=True) or i) for i in images]


def wait_job(client: FlaskClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """Poll the JSON API until a job ends; return its final JSON."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if data["state"] in ("done", "failed", "cancelled"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s")


@pytest.fixture
def discord() -> Iterator[Any]:
    """A fake Discord on its own loop thread, whose OAuth2 routes galleries sign in with."""
    from tests.web.discord_signin import running_discord

    with running_discord() as running:
        yield running


@pytest.fixture
def make_signin_site(make_site: Callable[..., Site], discord: Any) -> Callable[..., Site]:
    """Return a factory of galleries that sign in with the fake Discord (`web` adds keys)."""
    from tests.web.discord_signin import SECRET_ENV

    def make(
        web: dict[str, Any] | None = None, env: dict[str, str] | None = None, **sections: Any
    ) -> Site:
        return make_site(
            env={**SECRET_ENV, **(env or {})}, web=discord.web_section(**(web or {})), **sections
        )

    return make
