"""A signed-in person is their Discord user in the engine: same caps as /imagine, their name on
images, My images, and the server's moderators moderate the gallery too."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest

from engine import Engine, EngineBridge, Settings
from tests.bot.conftest import (  # noqa: F401 (fixtures)
    Harness,
    bot_settings,
    fake,
    fake_options,
    harness,
)
from tests.conftest import gate
from tests.fakes.discord import FakeDiscord
from tests.fakes.worker import GatedWorker
from tests.web.conftest import form_tokens, make_image, seed_images, wait_job
from tests.web.discord_signin import SECRET_ENV, Discord, sign_in
from web import create_app

pytestmark = pytest.mark.timeout(90)


def generate(client, prompt: str = "a fox") -> str:  # type: ignore[no-untyped-def]
    response = client.post(
        "/generate", data={"prompt": prompt, "steps": "2", **form_tokens(client)}
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    return str(response.headers["Location"].rsplit("/", 1)[1])


def test_a_web_job_runs_as_the_signed_in_discord_user(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    alice = server.guild.member(server.user("alice").id)
    alice.nick = "Alice the Painter"
    site = make_signin_site()
    client = site.client()
    sign_in(server, client, "alice")
    job_id = generate(client)
    requester = site.running.bridge.job(job_id).requester
    assert requester.key == f"discord:{server.user('alice').id}"
    assert requester.guild_id == str(server.guild.id)
    assert requester.name == "Alice the Painter"
    image_id = wait_job(client, job_id)["image_ids"][0]
    image = site.store.image(image_id)
    assert image is not None and image.author_name == "Alice the Painter"
    assert "Alice the Painter" in client.get(f"/images/{image_id}").get_data(as_text=True)


def test_my_images_shows_the_persons_images_from_discord_and_the_web(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site()
    alice_id = str(server.user("alice").id)
    mine, theirs = seed_images(
        site.store,
        make_image(source="discord", author_id=alice_id, prompt="a lighthouse by alice"),
        make_image(source="discord", author_id=str(server.user("bob").id), prompt="a boat by bob"),
    )
    client = site.client()
    sign_in(server, client, "alice")
    page = client.get("/?mine=1").get_data(as_text=True)
    assert mine.prompt in page and theirs.prompt not in page
    assert "My images" in client.get("/").get_data(as_text=True)
    api = client.get("/api/v1/images?mine=1").get_json()
    assert [i["id"] for i in api["images"]] == [mine.id]


def test_a_member_deletes_their_own_image_but_not_anothers(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site()
    mine, theirs = seed_images(
        site.store,
        make_image(source="discord", author_id=str(server.user("alice").id)),
        make_image(source="discord", author_id=str(server.user("bob").id)),
    )
    client = site.client()
    sign_in(server, client, "alice")
    tokens = form_tokens(client, "/")
    assert client.post(f"/images/{theirs.id}/delete", data=tokens).status_code == 403
    assert client.post(f"/images/{mine.id}/delete", data=tokens).status_code == 303
    assert site.store.image(mine.id) is None and site.store.image(theirs.id) is not None


def test_manage_messages_in_the_guild_makes_a_web_moderator(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site(env={"DISCORD_TOKEN": server.token}, bot=discord.bot_section())
    (image,) = seed_images(site.store, make_image(source="discord", author_id="1"))
    alice, mod = site.client(), site.client()
    sign_in(server, alice, "alice")
    sign_in(server, mod, "mod")  # holds the Moderator role: Manage Messages, no config needed
    assert alice.post(f"/images/{image.id}/delete", data=form_tokens(alice, "/")).status_code == 403
    assert mod.post(f"/images/{image.id}/delete", data=form_tokens(mod, "/")).status_code == 303
    assert site.store.image(image.id) is None


def test_a_configured_moderator_role_cancels_anyones_job(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site(
        gated=True, moderation={"moderator_roles": [str(server.moderator_role.id)]}
    )
    bob, mod = site.client(), site.client()
    sign_in(server, bob, "bob")
    sign_in(server, mod, "mod")
    running = site.running
    held = gate(running.engine).held()
    asyncio.run_coroutine_threadsafe(held.__aenter__(), running.loop).result(10)
    try:
        generate(bob)  # runs, held at the gate
        tokens = form_tokens(mod, "/")
        other = generate(bob, "another")  # waits behind it
        assert mod.post(f"/jobs/{other}/cancel", data=tokens).status_code == 303
    finally:
        asyncio.run_coroutine_threadsafe(held.__aexit__(None, None, None), running.loop).result(10)
    assert wait_job(bob, other)["state"] == "cancelled"


def test_a_discord_moderator_bans_and_unbans_on_the_web_and_reads_the_audit_log(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site(moderation={"moderator_roles": [str(server.moderator_role.id)]})
    alice, mod = site.client(), site.client()
    sign_in(server, alice, "alice")
    sign_in(server, mod, "mod")
    alice_id = str(server.user("alice").id)
    assert "Moderation" in mod.get("/").get_data(as_text=True)
    form = {"user": alice_id, "reason": "spam", **form_tokens(mod, "/mod")}
    assert mod.post("/mod/ban", data=form).status_code == 303
    refused = alice.post("/generate", data={"prompt": "a fox", **form_tokens(alice)})
    assert refused.status_code == 403
    log = mod.get("/mod").get_data(as_text=True)
    assert f"discord:{alice_id}" in log and "ban" in log
    form = {"user": f"discord:{alice_id}", **form_tokens(mod, "/mod")}
    assert mod.post("/mod/unban", data=form).status_code == 303
    generate(alice)


def test_the_moderation_page_is_for_moderators_only_and_checks_csrf(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site(moderation={"moderator_roles": [str(server.moderator_role.id)]})
    alice, mod = site.client(), site.client()
    sign_in(server, alice, "alice")
    sign_in(server, mod, "mod")
    assert alice.get("/mod").status_code == 403
    form = {"user": str(server.user("bob").id), **form_tokens(alice, "/")}
    assert alice.post("/mod/ban", data=form).status_code == 403
    assert mod.post("/mod/ban", data={"user": str(server.user("bob").id)}).status_code == 400
    assert site.client().get("/mod").status_code == 403


def make_board(client, name: str = "Lighthouses", public: bool = False) -> str:  # type: ignore[no-untyped-def]
    data = {"name": name, **form_tokens(client, "/boards")}
    if public:
        data["public"] = "1"
    response = client.post("/boards", data=data)
    assert response.status_code == 303, response.get_data(as_text=True)
    return str(response.headers["Location"].rsplit("/", 1)[1])


def test_a_person_makes_fills_renames_empties_and_deletes_a_board(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    first, second = seed_images(site.store, make_image(), make_image())
    client = site.client()
    sign_in(discord.fake, client, "alice")
    board = make_board(client)
    for image in (first, second, first):  # the second add of one image changes nothing
        form = {"board": board, **form_tokens(client, f"/images/{image.id}")}
        assert client.post(f"/images/{image.id}/board", data=form).status_code == 303
    page = client.get(f"/boards/{board}").get_data(as_text=True)
    assert first.prompt in page and second.prompt in page and "2 images · private" in page
    tokens = form_tokens(client, f"/boards/{board}")
    client.post(f"/boards/{board}/rename", data={"name": "Sea and light", **tokens})
    client.post(f"/boards/{board}/remove", data={"image": first.id, **tokens})
    page = client.get(f"/boards/{board}").get_data(as_text=True)
    assert "Sea and light" in page and first.prompt not in page and second.prompt in page
    assert "Sea and light" in client.get("/boards").get_data(as_text=True)
    assert client.post(f"/boards/{board}/delete", data=tokens).status_code == 303
    assert client.get(f"/boards/{board}").status_code == 404
    assert site.store.image(first.id) is not None and site.store.image(second.id) is not None


def test_nobody_else_sees_or_changes_a_private_board(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    (image,) = seed_images(site.store, make_image())
    alice, bob, anonymous = site.client(), site.client(), site.client()
    sign_in(discord.fake, alice, "alice")
    sign_in(discord.fake, bob, "bob")
    board = make_board(alice)
    assert bob.get(f"/boards/{board}").status_code == 404
    assert anonymous.get(f"/boards/{board}").status_code == 404
    tokens = form_tokens(bob, "/boards")
    for action, data in (
        ("rename", {"name": "mine now"}),
        ("visibility", {"public": "1"}),
        ("remove", {"image": image.id}),
        ("delete", {}),
    ):
        assert bob.post(f"/boards/{board}/{action}", data={**data, **tokens}).status_code == 404
    add = {"board": board, **tokens}
    assert bob.post(f"/images/{image.id}/board", data=add).status_code == 404
    assert site.store.board(board).name == "Lighthouses"  # type: ignore[union-attr]
    assert site.store.board_image_ids(board, 10) == []
    public = {"public": "1", **form_tokens(alice, "/boards")}
    alice.post(f"/boards/{board}/visibility", data=public)
    assert bob.get(f"/boards/{board}").status_code == 200
    assert anonymous.get(f"/boards/{board}").status_code == 200
    assert bob.post(f"/boards/{board}/delete", data=tokens).status_code == 404


def test_boards_need_sign_in_and_the_csrf_token(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    anonymous = site.client()
    assert anonymous.get("/boards").status_code == 401
    form = {"name": "x", **form_tokens(anonymous, "/login")}
    assert anonymous.post("/boards", data=form).status_code == 401
    client = site.client()
    sign_in(discord.fake, client, "alice")
    assert client.post("/boards", data={"name": "no token"}).status_code == 400
    assert site.store.boards_of(f"discord:{discord.fake.user('alice').id}") == []


def bulk(client, action: str, ids: list[str], **fields: str):  # type: ignore[no-untyped-def]
    """Tick images and pick an action; confirm on the page that follows; return both answers."""
    data = {"action": action, "image": ids, **fields, **form_tokens(client, "/")}
    asked = client.post("/bulk", data=data)
    return asked, client.post("/bulk/confirm", data=data)


def test_bulk_delete_asks_once_then_deletes_own_and_skips_others(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site()
    mine, theirs = seed_images(
        site.store,
        make_image(source="discord", author_id=str(server.user("alice").id)),
        make_image(source="discord", author_id=str(server.user("bob").id)),
    )
    client = site.client()
    sign_in(server, client, "alice")
    data = {"action": "delete", "image": [mine.id, theirs.id], **form_tokens(client, "/")}
    asked = client.post("/bulk", data=data)
    assert asked.status_code == 200 and "Delete: 2 images" in asked.get_data(as_text=True)
    assert site.store.image(mine.id) is not None  # nothing happens before the confirm
    done = client.post("/bulk/confirm", data=data).get_data(as_text=True)
    assert "Deleted 1 image" in done and "1 skipped" in done
    assert site.store.image(mine.id) is None and site.store.image(theirs.id) is not None


def test_a_moderator_bulk_deletes_anyones_images(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site(moderation={"moderator_roles": [str(server.moderator_role.id)]})
    images = seed_images(site.store, make_image(author_id="1"), make_image(author_id="2"))
    mod = site.client()
    sign_in(server, mod, "mod")
    _, done = bulk(mod, "delete", [i.id for i in images])
    assert "Deleted 2 images" in done.get_data(as_text=True)
    assert all(site.store.image(i.id) is None for i in images)


def test_bulk_adds_to_a_board_and_downloads_a_zip(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    images = seed_images(site.store, make_image(), make_image())
    ids = [i.id for i in images]
    client = site.client()
    sign_in(discord.fake, client, "alice")
    board = make_board(client)
    asked, done = bulk(client, "board", ids, board=board)
    assert "Lighthouses" in asked.get_data(as_text=True) and done.status_code == 200
    assert sorted(site.store.board_image_ids(board, 10)) == sorted(ids)
    _, archive = bulk(client, "zip", ids)
    assert archive.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.get_data())) as opened:
        assert sorted(opened.namelist()) == sorted(f"imagine-{i}.png" for i in ids)
        assert opened.read(f"imagine-{ids[0]}.png").startswith(b"\x89PNG")


def test_bulk_is_bounded_needs_csrf_and_never_touches_anothers_board(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    (image,) = seed_images(site.store, make_image())
    alice, bob = site.client(), site.client()
    sign_in(discord.fake, alice, "alice")
    sign_in(discord.fake, bob, "bob")
    board = make_board(alice)
    too_many = [f"img{n}" for n in range(101)]
    assert bulk(bob, "zip", too_many)[0].status_code == 400
    assert bob.post("/bulk", data={"action": "zip", "image": [image.id]}).status_code == 400
    asked, done = bulk(bob, "board", [image.id], board=board)
    assert asked.status_code == 404 and done.status_code == 404
    assert site.store.board_image_ids(board, 10) == []


def csrf_header(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"X-CSRFToken": form_tokens(client, "/")["csrf_token"]}


def make_token(client, label: str = "my script") -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/tokens", json={"label": label}, headers=csrf_header(client))
    assert response.status_code == 201, response.get_data(as_text=True)
    data: dict[str, Any] = response.get_json()
    return data


def test_likes_are_one_per_person_and_count_with_their_discord_star(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site()
    (image,) = seed_images(site.store, make_image())
    alice_key = f"discord:{server.user('alice').id}"
    site.store.set_favourite(image.id, alice_key, True, 1.0)  # her ⭐ on the result message
    laptop, phone, bob = site.client(), site.client(), site.client()
    sign_in(server, laptop, "alice")
    sign_in(server, phone, "alice")
    sign_in(server, bob, "bob")
    like = f"/images/{image.id}/favourite"
    assert laptop.post(like, data={"on": "1", **form_tokens(laptop, "/")}).status_code == 303
    assert site.store.image(image.id).favourites == 1  # type: ignore[union-attr]
    assert "Unfavourite" in phone.get(f"/images/{image.id}").get_data(as_text=True)
    bob.post(like, data={"on": "1", **form_tokens(bob, "/")})
    assert site.store.image(image.id).favourites == 2  # type: ignore[union-attr]
    assert "⭐ 2" in bob.get(f"/images/{image.id}").get_data(as_text=True)


def test_a_personal_token_acts_as_its_person_and_is_stored_hashed(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    server = discord.fake
    site = make_signin_site(web={"generate": "members"})
    client = site.client()
    sign_in(server, client, "alice")
    made = make_token(client)
    assert made["token"].startswith("imt_") and made["label"] == "my script"
    script = site.client()
    bearer = {"Authorization": f"Bearer {made['token']}"}
    body = {"prompt": "a fox", "steps": 2}
    response = script.post("/api/v1/generations", json=body, headers=bearer)
    assert response.status_code == 202
    job = site.running.bridge.job(response.get_json()["job_id"])
    assert job.requester.key == f"discord:{server.user('alice').id}"
    rows = site.store.db.connection().execute("SELECT token_hash FROM api_tokens").fetchall()
    assert [r[0] for r in rows] == [hashlib.sha256(made["token"].encode()).hexdigest()]
    listed = client.get("/api/v1/tokens").get_json()["tokens"]
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    assert listed[0]["last_used_at"] is not None


def test_a_revoked_token_stops_working_at_once(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site(web={"generate": "members", "browse": "members"})
    client = site.client()
    sign_in(discord.fake, client, "alice")
    made = make_token(client)
    bearer = {"Authorization": f"Bearer {made['token']}"}
    script = site.client()
    assert script.get("/api/v1/images", headers=bearer).status_code == 200
    revoked = client.delete(f"/api/v1/tokens/{made['id']}", headers=csrf_header(client))
    assert revoked.status_code == 204
    assert script.get("/api/v1/images", headers=bearer).status_code == 401
    body = {"prompt": "a fox", "steps": 2}
    assert script.post("/api/v1/generations", json=body, headers=bearer).status_code == 401
    assert client.get("/api/v1/tokens").get_json()["tokens"][0]["revoked_at"] is not None


def test_tokens_need_a_session_and_the_csrf_header(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    anonymous = site.client()
    assert anonymous.get("/api/v1/tokens").status_code == 401
    assert anonymous.post("/api/v1/tokens", json={}).status_code == 401
    client = site.client()
    sign_in(discord.fake, client, "alice")
    assert client.post("/api/v1/tokens", json={}).status_code == 400  # no X-CSRFToken
    made = make_token(client)
    bearer = {"Authorization": f"Bearer {made['token']}"}
    assert site.client().get("/api/v1/tokens", headers=bearer).status_code == 401


def test_a_person_cannot_see_or_revoke_anothers_token(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    alice, bob = site.client(), site.client()
    sign_in(discord.fake, alice, "alice")
    sign_in(discord.fake, bob, "bob")
    made = make_token(alice)
    assert bob.get("/api/v1/tokens").get_json()["tokens"] == []
    assert bob.delete(f"/api/v1/tokens/{made['id']}", headers=csrf_header(bob)).status_code == 404
    assert alice.get("/api/v1/tokens").get_json()["tokens"][0]["revoked_at"] is None


async def test_web_jobs_and_imagine_share_one_per_user_cap(
    harness: Harness,  # noqa: F811
    fake: FakeDiscord,  # noqa: F811
    make_settings: Callable[..., Settings],
) -> None:
    """Acceptance: max_per_user = 3, three web jobs queued by alice → her /imagine is refused."""
    web = Discord(fake, asyncio.get_running_loop()).web_section()
    settings = make_settings(
        env=SECRET_ENV,
        bot={"api_base": fake.api_base, "gateway_url": fake.gateway_url},
        limits={"max_per_user": 3, "default_steps": 2},
        web=web,
    )
    await harness.start(settings=settings, worker_wrapper=GatedWorker)
    engine: Engine = harness.engine  # type: ignore[assignment]
    app = create_app(settings, EngineBridge(engine, asyncio.get_running_loop()))
    app.config["TESTING"] = True
    client = app.test_client()
    async with gate(engine).held():
        await asyncio.to_thread(sign_in, fake, client, "alice")
        for n in range(3):
            await asyncio.to_thread(generate, client, f"web job {n}")
        alice_key = f"discord:{fake.user('alice').id}"
        assert sum(j.requester.key == alice_key for j in engine.jobs()) == 3
        handle = await harness.imagine("one more from Discord", user="alice")
        reply = await harness.answer(handle)
        assert reply.is_ephemeral
        assert reply.content.startswith("You already have 3 jobs queued (limit 3)")
        refused = await asyncio.to_thread(
            client.post, "/generate", data={"prompt": "and one more", **form_tokens(client)}
        )
        assert refused.status_code == 429
