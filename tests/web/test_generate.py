"""The generate form, the job page and its live events."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

from tests.web.conftest import Site, form_tokens, serving, wait_job


def _job_id(response) -> str:  # type: ignore[no-untyped-def]
    return str(response.headers["Location"].rsplit("/", 1)[1])


def test_form_folds_advanced_options_away(client) -> None:  # type: ignore[no-untyped-def]
    html = client.get("/generate").get_data(as_text=True)
    assert '<details class="advanced" >' in html or '<details class="advanced">' in html
    assert 'name="csrf_token"' in html and 'name="nonce"' in html
    assert 'maxlength="1000"' in html


def test_submit_queues_a_job_and_redirects_at_once(site: Site) -> None:
    client = site.client()
    response = client.post("/generate", data={"prompt": "a red fox", **form_tokens(client)})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/jobs/")
    job = wait_job(client, _job_id(response))
    assert job["state"] == "done" and len(job["image_ids"]) == 1
    html = client.get(f"/jobs/{job['job_id']}").get_data(as_text=True)
    assert "Done" in html and f"/images/{job['image_ids'][0]}" in html


def test_advanced_fields_reach_the_engine(site: Site) -> None:
    client = site.client()
    data = {
        "prompt": "a fox",
        "width": "48",
        "height": "40",
        "steps": "3",
        "seed": "9",
        "guidance": "5.5",
        "count": "2",
        "scheduler": "Euler",
        "negative_prompt": "rain",
    }
    response = client.post("/generate", data={**data, **form_tokens(client)})
    job = wait_job(client, _job_id(response))
    image = site.store.image(job["image_ids"][1])
    assert image is not None
    assert (image.width, image.height, image.steps, image.seed) == (48, 40, 3, 10)
    assert (image.guidance, image.scheduler, image.negative_prompt) == (5.5, "Euler", "rain")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("width", "7", "width: expected 32–1024, got 7"),
        ("width", "0", "width: expected 32–1024"),
        ("width", "-64", "width: expected 32–1024"),
        ("width", "1000000000", "width: expected 32–1024"),
        ("height", "100", "height: expected a multiple of 8"),
        ("steps", "0", "steps: expected 1–100"),
        ("steps", "100000", "steps: expected 1–100"),
        ("count", "1000", "count: expected 1–4"),
        ("seed", "4294967296", "seed: expected 0–4294967295"),
        ("seed", "-1", "seed: expected 0–4294967295"),
        ("guidance", "nan", "guidance: expected a finite number"),
        ("guidance", "inf", "guidance: expected a finite number"),
        ("steps", "ten", "steps: expected a whole number"),
        ("scheduler", "PLMS", "scheduler: expected one of"),
        ("prompt", "   ", "prompt: must not be empty"),
        ("prompt", "x" * 1001, "prompt: expected at most 1000 characters"),
    ],
)
def test_bad_field_is_shown_beside_it_and_nothing_is_queued(
    site: Site, field: str, value: str, words: str
) -> None:
    client = site.client()
    data = {"prompt": "a fox", field: value, **form_tokens(client)}
    response = client.post("/generate", data=data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f'id="{field}-error"' in html and words in html
    assert site.running.bridge.jobs() == [] and site.store.recent_jobs() == []


def test_budget_error_names_the_budget(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(limits={"max_pixel_steps": 1000})
    client = site.client()
    response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    # 422, not 400: every field is in range, only together they are too much (the OpenAPI
    # document can't express a product of fields, so the API says it with its own status).
    assert response.status_code == 422
    assert "the limit is 1,000" in response.get_data(as_text=True)


def test_blocked_prompt_is_refused_without_saying_why_in_detail(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(moderation={"blocklist": ["forbidden"]})
    client = site.client()
    response = client.post("/generate", data={"prompt": "forbidden fruit", **form_tokens(client)})
    assert response.status_code == 422
    assert "not allowed" in response.get_data(as_text=True)
    assert site.store.recent_jobs() == []


def test_duplicate_submission_queues_one_job(site: Site) -> None:
    client = site.client()
    data = {"prompt": "a fox", **form_tokens(client)}
    first = client.post("/generate", data=data)
    second = client.post("/generate", data=data)
    assert first.headers["Location"] == second.headers["Location"]
    assert len(site.store.recent_jobs()) == 1


def test_post_without_csrf_token_is_refused_and_queues_nothing(site: Site) -> None:
    client = site.client()
    client.get("/generate")
    response = client.post("/generate", data={"prompt": "a fox"})
    assert response.status_code == 400
    assert "another site" in response.get_data(as_text=True)
    assert site.store.recent_jobs() == []


def test_cross_site_post_with_a_forged_token_is_refused(site: Site) -> None:
    victim, attacker = site.client(), site.client()
    attacker_tokens = form_tokens(attacker)
    victim.get("/generate")
    response = victim.post("/generate", data={"prompt": "a fox", **attacker_tokens})
    assert response.status_code == 400
    assert site.store.recent_jobs() == []


def test_generate_flood_from_one_client_gets_429(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(web={"generate_rate_limit": "3 per minute"})
    client = site.client()
    statuses = []
    for index in range(5):
        data = {"prompt": f"fox {index}", **form_tokens(client)}
        statuses.append(client.post("/generate", data=data).status_code)
    assert statuses == [303, 303, 303, 429, 429]
    assert len(site.store.recent_jobs()) == 3


def test_generate_off_refuses_the_form(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(web={"generate": "off"})
    client = site.client()
    assert client.get("/generate").status_code == 403
    assert 'href="/generate"' not in client.get("/").get_data(as_text=True)


def test_generate_token_mode_needs_the_admin_sign_in(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(env={"IMAGINE_ADMIN_TOKEN": "s3cret"}, web={"generate": "token"})
    client = site.client()
    assert client.get("/generate").status_code == 403
    client.post("/login", data={"token": "s3cret", **form_tokens(client, "/login")})
    response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    assert response.status_code == 303
    job = client.get(f"/api/v1/jobs/{_job_id(response)}").get_json()
    assert job["state"] in ("queued", "running", "done")
    logout = client.post("/logout", data=form_tokens(client, "/"))
    assert logout.status_code == 303
    assert client.get("/generate").status_code == 403


def test_queue_full_is_503(make_site, make_request, make_requester) -> None:  # type: ignore[no-untyped-def]
    site = make_site(limits={"max_queue": 1}, gated=True)
    gate = site.running.engine.workers[0]
    hold = asyncio.run_coroutine_threadsafe(_hold(gate), site.running.loop)
    try:
        site.running.bridge.submit(make_request(), make_requester("someone-else"))
        client = site.client()
        response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
        assert response.status_code == 503
        assert "try again in" in response.get_data(as_text=True)
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        hold.cancel()


async def _hold(gate) -> None:  # type: ignore[no-untyped-def]
    async with gate.held():
        await asyncio.sleep(3600)


def test_your_share_of_the_queue_full_is_429_with_its_own_code(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(limits={"max_per_user": 0})
    client = site.client()
    response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    assert response.status_code == 429
    assert "try again in" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) >= 1
    api = client.post("/api/v1/generations", json={"prompt": "a fox"})
    assert api.status_code == 429 and api.get_json()["error"] == "too_many_jobs"
    assert int(api.headers["Retry-After"]) >= 1


def test_cooldown_is_429_with_retry_after(make_site) -> None:  # type: ignore[no-untyped-def]
    site = make_site(limits={"cooldown_s": 60})
    client = site.client()
    client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    assert response.status_code == 429
    assert "try again in" in response.get_data(as_text=True)


def test_job_events_stream_ends_with_the_images(site: Site) -> None:
    client = site.client()
    response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    job_id = _job_id(response)
    with serving(site) as base, urllib.request.urlopen(f"{base}/jobs/{job_id}/events") as stream:
        assert stream.headers.get_content_type() == "text/event-stream"
        text = stream.read().decode()
    assert "event: done" in text and f"/images/{job_id}-0" in text


def test_cancel_a_queued_job(site: Site, make_request, make_requester) -> None:  # type: ignore[no-untyped-def]
    blocker = site.running.bridge.submit(
        make_request(steps=100, width=64, height=64), make_requester("blocker", source="discord")
    )
    client = site.client()
    response = client.post("/generate", data={"prompt": "a fox", **form_tokens(client)})
    job_id = _job_id(response)
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Waiting in the queue" in html and "Cancel" in html
    tokens = form_tokens(client, f"/jobs/{job_id}")
    assert client.post(f"/jobs/{job_id}/cancel", data=tokens).status_code == 303
    assert "Cancelled" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    site.running.bridge.cancel(blocker.id, make_requester("blocker", source="discord"))


def test_someone_elses_job_cannot_be_cancelled(site: Site, make_request, make_requester) -> None:  # type: ignore[no-untyped-def]
    owner = make_requester("owner", source="discord")
    blocker = site.running.bridge.submit(make_request(steps=100, width=64, height=64), owner)
    client = site.client()
    tokens = form_tokens(client, "/generate")
    response = client.post(f"/jobs/{blocker.id}/cancel", data={"csrf_token": tokens["csrf_token"]})
    assert response.status_code == 403
    site.running.bridge.cancel(blocker.id, owner)


@pytest.mark.parametrize("job_id", ["nope", "0" * 12, "../etc", "a" * 40])
def test_unknown_job_is_404(client, job_id: str) -> None:  # type: ignore[no-untyped-def]
    assert client.get(f"/jobs/{job_id}").status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404


def test_the_demo_model_form_shows_its_grammar_and_clickable_examples(make_site) -> None:  # type: ignore[no-untyped-def]
    from engine.demo import EXAMPLES, GRAMMAR

    client = make_site(engine={"model": "builtin:demo"}).client()
    html = client.get("/generate").get_data(as_text=True)
    assert f'placeholder="{EXAMPLES[0]}"' in html
    assert GRAMMAR.replace("<", "&lt;").replace(">", "&gt;") in html
    links = re.findall(r'<a href="(/generate\?prompt=[^"]+)">', html)
    assert len(links) == len(EXAMPLES)
    prefilled = client.get(links[1].replace("&amp;", "&")).get_data(as_text=True)
    assert f">{EXAMPLES[1]}</textarea>" in prefilled
    assert "demo model" in html[html.index("<footer") :]


def test_another_model_keeps_a_free_example_and_names_itself_in_the_footer(client) -> None:  # type: ignore[no-untyped-def]
    html = client.get("/generate").get_data(as_text=True)
    assert "lighthouse" in html and 'id="demo-guide"' not in html
    footer = html[html.index("<footer") :]
    assert "Made with" in footer and "tiny" in footer  # the tests' model folder is named tiny
    assert "Stable Diffusion 2.1" not in footer and "random tiny model" not in footer


def test_the_form_offers_the_models_and_the_job_runs_on_the_one_picked(
    make_site,
    tiny_model_dir,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from engine import tinymodel

    other = tinymodel.build(tmp_path / "tiny-b", seed=1)
    site = make_site(
        models={"a": {"path": str(tiny_model_dir)}, "b": {"path": str(other), "label": "Tiny B"}},
        engine={"model": "a"},
    )
    client = site.client()
    html = client.get("/generate").get_data(as_text=True)
    assert '<option value="">Default (a)</option>' in html
    assert '<option value="a" >a</option>' in html
    assert '<option value="b" >Tiny B</option>' in html
    response = client.post(
        "/generate", data={"prompt": "a fox", "model": "b", **form_tokens(client)}
    )
    job = wait_job(client, response.headers["Location"].rsplit("/", 1)[1])
    image = client.get(f"/api/v1/images/{job['image_ids'][0]}").get_json()
    assert image["model"] == "b"
    bad = client.post("/generate", data={"prompt": "a fox", "model": "c", **form_tokens(client)})
    assert bad.status_code == 400 and "unknown model" in bad.get_data(as_text=True)
