"""Operations: /healthz for load balancers and /metrics for Prometheus."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, jsonify, redirect, url_for
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine import EngineBridge, EngineStatus, Event, Finished, Started
from web.context import ctx

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

LOW_DISK_BYTES = 1 << 30
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
RUN_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


@bp.get("/favicon.ico")
def favicon() -> ResponseReturnValue:
    """Answer clients that ask for /favicon.ico without reading the page's icon link."""
    return redirect(url_for("static", filename="favicon.svg"), 301)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Report engine, store and disk; 503 when the gallery cannot serve or queue work."""
    context = ctx()
    status = context.bridge.status()
    health = context.library.health()
    store_state, free = health.state, health.disk_free_bytes
    problems = list(status.degraded)
    if free < LOW_DISK_BYTES:
        problems.append("low disk space")
    is_down = not status.is_ready or not status.is_accepting or store_state != "ok"
    state = "down" if is_down else ("degraded" if problems else "ok")
    body = {
        "status": state,
        "engine": {
            "ready": status.is_ready,
            "accepting": status.is_accepting,
            "model": status.model,
            "device": status.device,
            "queue_length": status.queue_length,
        },
        "store": store_state,
        "disk_free_bytes": free,
        "degraded": problems,
        "workers": workers_json(status),
        "models": [
            {"name": m.name, "kind": m.kind, "default": m.is_default, "workers": list(m.workers)}
            for m in status.models
        ],
    }
    return jsonify(body), 503 if is_down else 200


def workers_json(status: EngineStatus) -> list[dict[str, object]]:
    """Return each worker as /healthz shows it."""
    return [
        {
            "name": w.name,
            "kind": w.kind,
            "device": w.device,
            "state": "busy" if w.is_busy else ("idle" if w.is_alive else "gone"),
            "models": list(w.models),
            "resident": list(w.resident),
            "jobs_done": w.jobs_done,
            "last_seen_s": w.last_seen_s,
            "problems": list(w.problems),
        }
        for w in status.workers
    ]


class EngineCollector(Collector):
    """Read queue depth, speed, failures and image counts on each scrape."""

    def __init__(self, bridge: EngineBridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        """Yield the current values."""
        status = self.bridge.status()
        yield GaugeMetricFamily("imagine_queue_depth", "Jobs waiting", value=status.queue_length)
        yield GaugeMetricFamily(
            "imagine_jobs_running", "Jobs running now", value=len(status.running_job_ids)
        )
        yield GaugeMetricFamily(
            "imagine_engine_ready", "1 when the model is loaded", value=int(status.is_ready)
        )
        speed = 1 / status.seconds_per_step if status.seconds_per_step else 0.0
        yield GaugeMetricFamily(
            "imagine_steps_per_second", "Recent speed at the native size", value=speed
        )
        failures = CounterMetricFamily(
            "imagine_failures", "Failed or refused jobs by reason", labels=["reason"]
        )
        for reason, count in sorted(status.failures.items()):
            failures.add_metric([reason], count)
        yield failures
        yield CounterMetricFamily(
            "imagine_images_made", "Images made since start", value=status.images_made
        )
        yield GaugeMetricFamily(
            "imagine_gallery_images", "Images in the gallery", value=self.bridge.library.count()
        )
        busy = GaugeMetricFamily(
            "imagine_worker_busy", "1 while a worker runs a batch", labels=["worker"]
        )
        up = GaugeMetricFamily(
            "imagine_worker_up", "1 while a worker is alive (remote: heartbeats)", labels=["worker"]
        )
        done = CounterMetricFamily("imagine_worker_jobs", "Jobs a worker ran", labels=["worker"])
        for worker in status.workers:
            busy.add_metric([worker.name], int(worker.is_busy))
            up.add_metric([worker.name], int(worker.is_alive))
            done.add_metric([worker.name], worker.jobs_done)
        yield busy
        yield up
        yield done


class JobTimer:
    """Observe job wait and run times from the engine's events (on the engine's loop)."""

    def __init__(self, bridge: EngineBridge, registry: CollectorRegistry) -> None:
        self.engine = bridge.engine
        self.wait = Histogram(
            "imagine_job_wait_seconds",
            "Queued to started",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "imagine_job_run_seconds",
            "Started to images saved",
            buckets=RUN_BUCKETS,
            registry=registry,
        )

    def __call__(self, event: Event) -> None:
        """Record one event; never raise into the engine."""
        if isinstance(event, Started):
            try:
                created = self.engine.job(event.job_id).created_at
            except Exception:  # a job gone already is simply not timed
                return
            self.wait.observe(max(0.0, time.time() - created))
        elif isinstance(event, Finished):
            self.run.observe(event.seconds)


def install_metrics(app: Flask, bridge: EngineBridge) -> None:
    """Give this app its own registry and the /metrics route."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(bridge))
    timer = JobTimer(bridge, registry)
    bridge.listen(timer)
    app.extensions["imagine_metrics"] = {"registry": registry, "timer": timer}

    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "ops.metrics", metrics)
