"""/healthz and /metrics."""

from __future__ import annotations

import asyncio
import shutil
from collections import namedtuple
from unittest import mock

from tests.web.conftest import Site, form_tokens, make_image, seed_images, wait_job


def test_healthz_reports_engine_store_and_disk(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz")
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "ok" and body["store"] == "ok"
    assert body["engine"]["ready"] is True and body["disk_free_bytes"] > 0


def test_healthz_says_degraded_when_the_engine_does(site: Site) -> None:
    site.running.engine.counters.degraded["storage"] = "images folder is read-only"
    body = site.client().get("/healthz").get_json()
    assert body["status"] == "degraded"
    assert "images folder is read-only" in body["degraded"]


def test_healthz_says_degraded_on_low_disk(site: Site) -> None:
    usage = namedtuple("usage", "total used free")(10, 10, 1024)
    with mock.patch.object(shutil, "disk_usage", return_value=usage):
        body = site.client().get("/healthz").get_json()
    assert body["status"] == "degraded" and "low disk space" in body["degraded"]


def test_healthz_is_503_when_the_engine_stops_accepting(site: Site) -> None:
    running = site.running
    asyncio.run_coroutine_threadsafe(running.engine.close(grace_s=1), running.loop).result(60)
    response = site.client().get("/healthz")
    assert response.status_code == 503 and response.get_json()["status"] == "down"


def test_metrics_count_queue_jobs_and_images(site: Site) -> None:
    seed_images(site.store, make_image())
    client = site.client()
    response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    wait_job(client, response.headers["Location"].rsplit("/", 1)[1])
    text = client.get("/metrics").get_data(as_text=True)
    for name in (
        "imagine_queue_depth 0.0",
        "imagine_gallery_images 2.0",
        "imagine_images_made_total 1.0",
        "imagine_job_wait_seconds_count 1.0",
        "imagine_job_run_seconds_count 1.0",
        "imagine_steps_per_second",
        "imagine_engine_ready 1.0",
        'imagine_worker_up{worker="local"} 1.0',
        'imagine_worker_busy{worker="local"} 0.0',
        'imagine_worker_jobs_total{worker="local"} 1.0',
    ):
        assert name in text, name


def test_metrics_count_refusals_by_reason(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(moderation={"blocklist": ["forbidden"]})
    client = site.client()
    client.post("/generate", data={"prompt": "forbidden", **form_tokens(client)})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'imagine_failures_total{reason="blocked:' in text


def test_each_app_has_its_own_registry(site: Site) -> None:
    from web import create_app

    other = create_app(site.running.settings, site.running.bridge)
    assert other.test_client().get("/metrics").status_code == 200
    assert site.client().get("/metrics").status_code == 200


def test_favicon_is_served_so_no_page_load_gets_a_404(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    with client.get(response.headers["Location"]) as icon:
        assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert 'rel="icon"' in client.get("/").get_data(as_text=True)


def test_healthz_lists_each_worker_with_its_device_and_models(site: Site) -> None:
    body = site.client().get("/healthz").get_json()
    [worker] = body["workers"]
    assert (worker["name"], worker["device"], worker["state"]) == ("local", "cpu", "idle")
    assert worker["resident"] == ["tiny"] and worker["models"] == ["tiny"]
    model = {"name": "tiny", "kind": "txt2img", "default": True, "workers": ["local"]}
    assert body["models"] == [model]
