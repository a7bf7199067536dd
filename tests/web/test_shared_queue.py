"""The web and Discord share one engine queue, and fairness holds across both."""

from __future__ import annotations

import time

from engine import ImageQuery
from tests.web.conftest import Site, form_tokens, wait_job


def test_web_and_discord_jobs_share_one_fair_queue(
    site: Site, make_request, make_requester
) -> None:  # type: ignore[no-untyped-def]
    bridge = site.running.bridge
    blocker_owner = make_requester("blocker", source="discord")
    blocker = bridge.submit(make_request(steps=100, width=64, height=64), blocker_owner)
    deadline = time.monotonic() + 30
    while bridge.job(blocker.id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    discord_user = make_requester("123", source="discord", guild_id="1", channel_id="2")
    discord_jobs = [bridge.submit(make_request(f"discord {i}"), discord_user) for i in range(3)]
    client = site.client()
    response = client.post(
        "/generate", data={"prompt": "from the web", "steps": "4", **form_tokens(client)}
    )
    web_job_id = response.headers["Location"].rsplit("/", 1)[1]

    waiting = [v.id for v in bridge.jobs() if v.state == "queued"]
    assert waiting[:2] == [discord_jobs[0].id, web_job_id]
    assert client.get(f"/api/v1/jobs/{web_job_id}").get_json()["position"] == 2
    assert bridge.job(web_job_id).requester.source == "web"

    bridge.cancel(blocker.id, blocker_owner)
    assert wait_job(client, web_job_id)["state"] == "done"
    for job in discord_jobs:
        assert wait_job(client, job.id)["state"] == "done"
    sources = {i.source for i in site.store.list_images(ImageQuery())}
    assert sources == {"web", "discord"}
