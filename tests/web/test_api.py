"""The JSON API under /api/v1/ and its OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.web.conftest import Site, make_image, seed_images, wait_job


def test_post_generation_answers_202_with_the_job_id(site: Site) -> None:
    client = site.client()
    response = client.post("/api/v1/generations", json={"prompt": "a fox", "steps": 4, "seed": 3})
    assert response.status_code == 202
    body = response.get_json()
    assert re.fullmatch(r"[0-9a-f]{12}", body["job_id"])
    assert response.headers["Location"] == f"/api/v1/jobs/{body['job_id']}"
    job = wait_job(client, body["job_id"])
    assert job["state"] == "done" and job["error"] is None
    assert job["progress"].keys() == {"step", "total"}
    image = client.get(f"/api/v1/images/{job['image_ids'][0]}").get_json()
    assert image["prompt"] == "a fox" and image["seed"] == 3 and image["steps"] == 4
    with client.get(image["file_url"]) as file:
        assert file.status_code == 200 and file.mimetype == "image/png"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a fox", "width": 7}, "width"),
        ({"prompt": "a fox", "width": 512.5}, "width"),
        ({"prompt": "a fox", "steps": "10"}, "steps"),
        ({"prompt": "a fox", "guidance": 1e309}, "guidance"),
        ({"prompt": "a fox", "seed": 2**40}, "seed"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "a fox", "colour": "red"}, "colour"),
        ({"prompt": "a fox", "kind": "video"}, "kind"),
        ([1, 2], "body"),
    ],
)
def test_bad_body_is_400_naming_the_field(site: Site, body: object, field: str) -> None:
    response = site.client().post("/api/v1/generations", json=body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert site.store.recent_jobs() == []


def test_non_json_body_is_refused(site: Site) -> None:
    response = site.client().post("/api/v1/generations", data={"prompt": "a fox"})
    assert response.status_code == 400
    assert response.get_json()["field"] == "body"
    broken = site.client().post("/api/v1/generations", data="{", content_type="application/json")
    assert broken.status_code == 400


def test_idempotency_key_queues_one_job(site: Site) -> None:
    client = site.client()
    headers = {"Idempotency-Key": "order-1"}
    first = client.post("/api/v1/generations", json={"prompt": "a fox"}, headers=headers)
    second = client.post("/api/v1/generations", json={"prompt": "a fox"}, headers=headers)
    assert first.get_json()["job_id"] == second.get_json()["job_id"]
    assert len(site.store.recent_jobs()) == 1


def test_token_mode_needs_the_bearer_token(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(env={"IMAGINE_ADMIN_TOKEN": "s3cret"}, web={"generate": "token"})
    client = site.client()
    refused = client.post("/api/v1/generations", json={"prompt": "a fox"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    wrong = {"Authorization": "Bearer guess"}
    assert (
        client.post("/api/v1/generations", json={"prompt": "a fox"}, headers=wrong).status_code
        == 403
    )
    right = {"Authorization": "Bearer s3cret"}
    accepted = client.post("/api/v1/generations", json={"prompt": "a fox"}, headers=right)
    assert accepted.status_code == 202


def test_api_lists_images_with_search_filters_and_cursor(site: Site) -> None:
    images = seed_images(
        site.store, *[make_image(prompt=f"fox number {i}", source="discord") for i in range(5)]
    )
    seed_images(site.store, make_image(prompt="a cat"))
    client = site.client()
    seen, cursor = [], None
    while True:
        url = "/api/v1/images?q=fox&source=discord&limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        body = client.get(url).get_json()
        seen += [i["id"] for i in body["images"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [i.id for i in reversed(images)]


@pytest.mark.parametrize("query", ["limit=0", "limit=1000", "limit=x", "cursor=abc", "since=soon"])
def test_api_refuses_bad_list_arguments(client, query: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/api/v1/images?{query}")
    assert response.status_code == 400 and "field" in response.get_json()


def test_api_image_has_every_setting_and_the_file_url(site: Site) -> None:
    (image,) = seed_images(site.store, make_image(message_url="https://discord.com/channels/1/2/3"))
    body = site.client().get(f"/api/v1/images/{image.id}").get_json()
    for key in (
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "guidance",
        "width",
        "height",
        "scheduler",
        "model",
        "seconds",
        "author_name",
        "source",
        "message_url",
    ):
        assert body[key] == getattr(image, key)
    assert body["file_url"] == f"/files/{image.id}.png"


def test_unknown_api_paths_answer_json_404(client) -> None:  # type: ignore[no-untyped-def]
    for url in ("/api/v1/images/nope", "/api/v1/jobs/000000000000", "/api/v1/nothing"):
        response = client.get(url)
        assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    assert client.delete("/api/v1/images").status_code == 405


def test_openapi_document_matches_the_routes(site: Site) -> None:
    document = site.client().get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, ops in document["paths"].items() for method in ops
    }
    routed = set()
    for rule in site.app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}  # type: ignore[operator]
    assert documented == routed
    limits = document["components"]["schemas"]["GenerationRequest"]["properties"]
    assert limits["steps"]["maximum"] == site.running.settings.limits.max_steps


def _request_validator(site: Site) -> Any:
    import jsonschema_rs  # the validator schemathesis itself uses

    document = site.client().get("/api/v1/openapi.json").get_json()
    return jsonschema_rs.Draft202012Validator(
        document["components"]["schemas"]["GenerationRequest"]
    )


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": ""},
        {"prompt": "\u200b\u200d"},
        {"prompt": "a fox --steps 1000"},
        {"prompt": "a fox", "aspect": "foo"},
        {"prompt": "a fox", "idempotency_key": ""},
        {"prompt": "a fox", "kind": "variation"},
        {"prompt": "a fox", "source_image_id": "abc-0"},
    ],
)
def test_bodies_the_api_refuses_are_not_schema_valid(site: Site, body: dict[str, Any]) -> None:
    assert not _request_validator(site).is_valid(body)
    assert site.client().post("/api/v1/generations", json=body).status_code == 400


def test_a_body_over_the_budget_is_schema_valid_and_a_documented_422(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site()
    body = {"prompt": "a fox", "width": 1024, "height": 1024, "steps": 100, "count": 4}
    assert _request_validator(site).is_valid(body)
    response = site.client().post("/api/v1/generations", json=body)
    assert response.status_code == 422 and response.get_json()["error"] == "too_big"
    document = site.client().get("/api/v1/openapi.json").get_json()
    responses = document["paths"]["/api/v1/generations"]["post"]["responses"]
    assert "work budget" in responses["422"]["description"]
    assert {"400", "403", "404", "413", "422", "429", "503"} <= set(responses)
    assert "Retry-After" in responses["429"]["headers"]


def test_a_bad_idempotency_header_is_not_schema_valid_and_refused(site: Site) -> None:
    document = site.client().get("/api/v1/openapi.json").get_json()
    [header] = document["paths"]["/api/v1/generations"]["post"]["parameters"]
    assert not re.fullmatch(header["schema"]["pattern"][1:-1], "a b")
    response = site.client().post(
        "/api/v1/generations", json={"prompt": "a fox"}, headers={"Idempotency-Key": "a b"}
    )
    assert response.status_code == 400 and response.get_json()["field"] == "idempotency_key"


def test_json_integers_may_be_written_with_a_zero_fraction(site: Site) -> None:
    response = site.client().post(
        "/api/v1/generations", json={"prompt": "a fox", "width": 64.0, "steps": 2.0}
    )
    assert response.status_code == 202


def test_api_cancel_stops_the_callers_job_and_refuses_others(make_site) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from tests.web.test_generate import _hold

    site = make_site(gated=True)
    hold = asyncio.run_coroutine_threadsafe(
        _hold(site.running.engine.workers[0]), site.running.loop
    )
    try:
        mine, other = site.client(), site.client()
        first = mine.post("/api/v1/generations", json={"prompt": "a fox"}).get_json()["job_id"]
        second = mine.post("/api/v1/generations", json={"prompt": "a cat"}).get_json()["job_id"]
        assert mine.post(f"/api/v1/jobs/{second}/cancel", data="{}").status_code == 400
        elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
        refused = other.post(f"/api/v1/jobs/{second}/cancel", json={}, environ_base=elsewhere)
        assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
        answer = mine.post(f"/api/v1/jobs/{second}/cancel", json={})
        assert answer.status_code == 200 and answer.get_json()["state"] == "cancelled"
        assert mine.post("/api/v1/jobs/nope!/cancel", json={}).status_code == 404
        running = mine.post(f"/api/v1/jobs/{first}/cancel", json={})
        assert running.status_code == 200
    finally:
        hold.cancel()
    assert wait_job(mine, first)["state"] == "cancelled"
    again = mine.post(f"/api/v1/jobs/{first}/cancel", json={})
    assert again.status_code == 200 and again.get_json()["state"] == "cancelled"
