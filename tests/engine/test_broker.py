"""What crosses the network to and from remote boxes: JSON only, validated, nothing trusted.

These need no Redis: they check the messages and the Celery settings themselves; the real
Redis and real boxes are in tests/system/test_remote.py.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from engine import Batch, BatchItem, broker
from engine.config import ConfigError, Settings
from engine.errors import GenerationFailed, Interrupted
from engine.models import ModelFacts
from engine.remote import CeleryPool, outcome
from engine.worker import BatchResult, GeneratedImage, check_batch

URL = "redis://127.0.0.1:1/0"  # never dialled by these tests


def _batch(**overrides: Any) -> Batch:
    values: dict[str, Any] = {
        "id": "job1:1",
        "model": "tiny",
        "kind": "txt2img",
        "width": 64,
        "height": 64,
        "steps": 4,
        "guidance": 7.0,
        "scheduler": "DPM++ 2M",
        "items": (BatchItem("job1", "a fox", "", (7,)),),
        **overrides,
    }
    return Batch(**values)


def test_the_celery_app_takes_json_only_one_task_at_a_time_acked_early() -> None:
    conf = broker.make_app(URL).conf
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.worker_prefetch_multiplier == 1 and conf.task_acks_late is False


def test_results_are_polled_not_subscribed() -> None:
    backend = broker.make_app(URL).backend
    assert isinstance(backend, broker.PolledRedisBackend)
    backend.on_task_call(None, "job1:1")  # subscribes to nothing (and dials nothing)
    assert backend.connparams["port"] == 1


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"model": "other"}, "model"),
        ({"kind": "shell"}, "kind"),
        ({"steps": 10_000}, "steps"),
        ({"steps": "4"}, "steps"),
        ({"width": 65}, "width"),
        ({"guidance": float("inf")}, "guidance"),
        ({"items": ()}, "items"),
        ({"items": (BatchItem("job1", "a fox", "", (1, 2, 3, 4, 5)),)}, "seeds"),
        ({"items": (BatchItem("job1", "a fox", "", (2**40,)),)}, "seeds"),
    ],
)
def test_a_box_refuses_a_batch_no_front_would_build(overrides: dict[str, Any], name: str) -> None:
    check_batch(_batch(), ["tiny"])
    with pytest.raises(ValueError, match=name):
        check_batch(_batch(**overrides), ["tiny"])


def test_a_batch_with_urls_or_unknown_keys_is_not_a_batch() -> None:
    with pytest.raises(ValueError, match="unknown batch keys"):
        Batch.from_json({**_batch().to_json(), "init_url": "http://169.254.169.254/"})
    with pytest.raises((TypeError, ValueError)):
        Batch.from_json({**_batch().to_json(), "items": [{"job_id": "j", "url": "http://x/"}]})


def _png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def _result(image: GeneratedImage) -> BatchResult:
    return BatchResult(((image,),), 1.5, ModelFacts(name="tiny", native_px=32))


def test_a_result_travels_as_png_and_comes_back_the_same() -> None:
    raw = GeneratedImage(data=b"\xff\x00\x00" * 64, seed=7, width=8, height=8, format="rgb")
    data = json.loads(json.dumps(broker.result_json(_result(raw))))
    back = outcome(data, 1, "box/gpu0")
    image = back.images[0][0]
    assert image.format == "png" and image.seed == 7
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.size == (8, 8) and decoded.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"ok": True},
        {"ok": True, "images": [[{"data": "!!not base64!!", "seed": 1}]], "seconds": 1},
        {"ok": True, "images": [], "seconds": 1, "facts": {"name": "tiny", "native_px": 32}},
    ],
)
def test_a_bad_result_fails_the_job_with_a_reason(data: Any) -> None:
    with pytest.raises(GenerationFailed):
        outcome(data, 1, "box/gpu0")


def test_an_interrupted_or_refused_task_says_so() -> None:
    with pytest.raises(Interrupted):
        outcome(broker.failure_json("interrupted", "stopped"), 1, "box/gpu0")
    with pytest.raises(GenerationFailed, match="box/gpu0 refused the batch: batch steps"):
        outcome(broker.failure_json("refused", "batch steps out of range"), 1, "box/gpu0")


def test_a_heartbeat_is_read_strictly() -> None:
    slot = broker.Slot(name="gpu0", device="cuda:0", pid=42, models=("tiny",), tasks=("j:1",))
    beat = broker.Heartbeat(box="box-a", host="h", pid=42, slots=(slot,))
    assert broker.Heartbeat.from_json(beat.to_json()) == beat
    for bad in ["", "[]", '{"box": "b"}', '{"box": "b", "host": "h", "pid": "x", "slots": []}']:
        with pytest.raises(ValueError, match="not a heartbeat"):
            broker.Heartbeat.from_json(bad)


def test_progress_from_the_network_keeps_only_small_pngs(
    make_settings: Callable[..., Settings],
) -> None:
    pool = CeleryPool(make_settings(engine={"workers": "celery", "broker_url": URL}), print)
    seen: list[tuple[int, int, bytes | None]] = []

    class Sink:
        def __call__(self, step: int, total: int, png: bytes | None) -> None:
            seen.append((step, total, png))

        def wants_preview(self) -> bool:
            return True

        def stopped(self) -> set[str]:
            return set()

    pool.expect("job1:1", Sink())
    png = _png()

    def message(**fields: Any) -> bytes:
        return json.dumps({"task": "job1:1", "step": 2, "total": 4, **fields}).encode()

    pool._forward(message(preview=base64.b64encode(png).decode()))
    pool._forward(message(preview=base64.b64encode(b"GIF89a...").decode()))
    pool._forward(message(step="two"))
    pool._forward(b"\x80\x04pickle")
    pool._forward(message(task="someone-else:1"))
    assert seen == [(2, 4, png), (2, 4, None)]


@pytest.mark.parametrize("url", ["amqp://guest@localhost//", "http://redis/", "redis+socket:///x"])
def test_a_broker_url_must_be_redis(make_settings: Callable[..., Settings], url: str) -> None:
    with pytest.raises(ConfigError, match=r"engine\.broker_url"):
        make_settings(engine={"workers": "celery", "broker_url": url})


def test_remote_workers_need_a_broker(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match=r"required when engine\.workers is 'celery'"):
        make_settings(engine={"workers": "celery"})


def test_a_box_name_must_be_a_plain_name(make_settings: Callable[..., Settings]) -> None:
    from engine.box import Box

    settings = make_settings(engine={"workers": "celery", "broker_url": URL})
    with pytest.raises(ConfigError, match=r"engine\.box_name: expected 1–63 letters"):
        Box(settings, "attic 4090/../x")
