"""The OpenAPI document holds under schemathesis: no server error, every status, content type
and body as documented, and schema-valid data accepted (or refused with a documented status).

A bounded run here (`make test`); `make soak` runs it longer. The app is the real gallery over
a real engine (tiny model), with the rate limits raised so the API itself gets tested.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS

from engine import Engine, EngineBridge, Store
from engine.config import from_mapping
from tests.web.conftest import Running, Site, make_image, seed_images
from web import create_app

EXAMPLES = int(os.environ.get("IMAGINE_SCHEMATHESIS_EXAMPLES", "25"))
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
)


@pytest.fixture(scope="module")
def api_site(request: pytest.FixtureRequest) -> Site:
    make_site: Callable[..., Site] = request.getfixturevalue("make_site")
    site = make_site(
        web={"generate_rate_limit": "100000 per minute"},
        # Small jobs: every schema-valid POST really runs on the tiny model.
        limits={
            "max_per_user": 10_000,
            "max_queue": 100_000,
            "default_steps": 1,
            "max_steps": 3,
            "max_size_px": 64,
            "max_count": 2,
        },
    )
    seed_images(site.store, *(make_image() for _ in range(3)))
    return site


@pytest.fixture(scope="module")
def make_site(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Site]]:
    """One engine on a loop thread for the whole module (schemathesis makes a test per route)."""
    started: list[Running] = []
    threads: list[threading.Thread] = []

    def make(**sections: dict[str, Any]) -> Site:
        raw: dict[str, dict[str, Any]] = {
            "engine": {"model": str(tiny_model_dir), "data_dir": str(tmp_path_factory.mktemp("d"))}
        }
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        settings = from_mapping(raw, {})
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="openapi-engine", daemon=True)
        thread.start()
        threads.append(thread)
        engine = Engine(settings, Store(settings.engine.data_dir))
        asyncio.run_coroutine_threadsafe(engine.start(), loop).result(60)
        running = Running(settings, engine, engine.store, EngineBridge(engine, loop), loop)
        started.append(running)
        app = create_app(settings, running.bridge)
        app.config["TESTING"] = True
        return Site(app, running)

    yield make
    for running, thread in zip(started, threads, strict=True):
        asyncio.run_coroutine_threadsafe(running.engine.close(grace_s=5), running.loop).result(60)
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(10)
        running.loop.close()


# Schema-valid data may also be refused with 422: documented for what no JSON Schema can say
# (width × height × steps × count over the work budget, an upscale already at the largest size,
# a prompt moderation blocks).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]


@pytest.fixture(scope="module")
def api_schema(api_site: Site) -> Any:
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}}
    )
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_site.app, config=config)


def operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_holds_under_schemathesis(api_schema: Any, mode: GenerationMode) -> None:
    """Positive data: every check; negative (schema-invalid) data: never a server error."""
    names = CHECK_NAMES if mode == GenerationMode.POSITIVE else ("not_a_server_error",)
    found = operations(api_schema)
    assert {op.label for op in found} >= {"POST /api/v1/generations", "GET /api/v1/images"}
    for operation in found:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            checks = [check for check in CHECKS.get_all() if check.__name__ in names]
            assert len(checks) == len(names)
            case.call_and_validate(checks=checks)

        run()
