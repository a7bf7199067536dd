"""LoRAs: `[loras.<name>]` in config, `--lora NAME:0.8` and the `loras` field, checked at
admission and at start/reload, applied by the worker only for their batch, recorded on the image
and in its PNG parameters."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine import (
    ConfigError,
    Engine,
    Finished,
    GenerationRequest,
    InvalidRequest,
    ModelRegistry,
    Settings,
    Store,
    load_settings,
    local_workers,
    read_parameters,
)
from engine.config import LimitSettings, LoraSettings, from_mapping
from engine.request import resolve
from engine.worker import Batch, BatchItem, check_batch
from tests.conftest import wait_done

pytestmark = pytest.mark.timeout(180)

LIMITS = LimitSettings()
LORAS = {
    "fox": LoraSettings(path="/x/fox.safetensors", weight=0.7, label="Fox fur"),
    "ink": LoraSettings(path="/x/ink.safetensors"),
    "sd15": LoraSettings(path="/x/sd15.safetensors", models=("sd15",)),
    "noir": LoraSettings(path="/x/noir.safetensors"),
}

MakeEngine = Callable[..., Any]


def run(prompt: str = "a fox", model: str = "tiny", **fields: Any) -> GenerationRequest:
    request = GenerationRequest(prompt=prompt, model=model, **fields)
    return resolve(request, LIMITS, 768, "DPM++ 2M", loras=LORAS)


def pixels(engine: Engine, event: Any) -> bytes:
    [image] = event.images
    data = engine.store.image_path(image.file_name).read_bytes()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).tobytes()


def with_lora(path: Path, **values: Any) -> dict[str, Any]:
    return {"fox": {"path": str(path), **values}}


# -- config --------------------------------------------------------------------------------


def test_a_lora_table_is_read_with_its_path_beside_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[loras.fox]\npath = "loras/fox.safetensors"\nweight = 0.8\nlabel = "Fox"\n',
        encoding="utf-8",
    )
    lora = load_settings(config, env={}).loras["fox"]
    assert lora.path == str(tmp_path / "loras" / "fox.safetensors")
    assert (lora.weight, lora.models, lora.label) == (0.8, (), "Fox")
    assert load_settings(None, env={}).limits.max_loras == 3


def test_the_example_configs_lora_is_valid_once_uncommented(tmp_path: Path) -> None:
    example = (Path(__file__).parents[2] / "config.example.toml").read_text()
    start = example.index("# [loras.fox-fur]")
    lines = example[start:].split("\n\n", 1)[0].splitlines()
    table = [line[2:] for line in lines if re.match(r"# (\[loras\.|\w+ = )", line)]
    config = tmp_path / "config.toml"
    config.write_text("\n".join(table) + "\n")
    lora = load_settings(config, env={}).loras["fox-fur"]
    assert lora.path == str(tmp_path / "loras" / "fox-fur.safetensors")
    assert (lora.weight, lora.models, lora.label) == (0.8, ("sd21",), "Fox fur")


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"path": "fox.ckpt"}, "loras.fox.path", "expected a .safetensors file"),
        ({}, "loras.fox.path", "required"),
        ({"path": "/a/fox.safetensors", "weight": 3}, "loras.fox.weight", "-2–2"),
    ],
)
def test_a_bad_lora_table_is_refused_naming_the_key(
    table: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"loras": {"fox": table}}, {})
    assert caught.value.key == key and words in caught.value.reason


def test_max_loras_is_bounded() -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"limits": {"max_loras": 9}}, {})
    assert caught.value.key == "limits.max_loras"


async def test_a_missing_lora_file_is_refused_at_start_with_its_name(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(loras=with_lora(tmp_path / "gone.safetensors"))
    engine = Engine(settings, Store(settings.engine.data_dir))
    with pytest.raises(ConfigError) as caught:
        await engine.start()
    await engine.close(grace_s=1)
    assert caught.value.key == "loras.fox.path" and "no such file" in caught.value.reason


async def test_a_file_that_is_not_safetensors_is_refused_at_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    fake = tmp_path / "fox.safetensors"
    fake.write_bytes(b"\x00" * 64)
    settings = make_settings(loras=with_lora(fake))
    engine = Engine(settings, Store(settings.engine.data_dir))
    with pytest.raises(ConfigError) as caught:
        await engine.start()
    await engine.close(grace_s=1)
    assert caught.value.key == "loras.fox.path" and "not a safetensors file" in str(caught.value)


async def test_a_lora_of_the_wrong_shapes_is_refused_at_start_with_its_name(
    make_settings: Callable[..., Settings], wide_lora: Path
) -> None:
    settings = make_settings(loras={"wide": {"path": str(wide_lora)}})
    engine = Engine(settings, Store(settings.engine.data_dir))
    with pytest.raises(ConfigError) as caught:
        await engine.start()
    await engine.close(grace_s=1)
    assert caught.value.key == "loras.wide"
    assert "does not fit model tiny" in caught.value.reason


async def test_the_worker_refuses_a_wrong_shape_lora_when_it_loads_the_model(
    make_settings: Callable[..., Settings], wide_lora: Path
) -> None:
    # The worker's own check (diffusers loading it) stands behind the header check: it reads
    # every LoRA layout, and covers models that are no local folder.
    settings = make_settings(loras={"wide": {"path": str(wide_lora)}})
    registry = ModelRegistry.from_settings(settings)
    [worker] = local_workers(settings.engine, registry, settings.data_path)
    with pytest.raises(ConfigError) as caught:
        await worker.start()
    await worker.close()
    assert caught.value.key == "loras.wide" and "size mismatch" in caught.value.reason


async def test_a_reload_with_a_lora_that_does_not_fit_keeps_the_old_settings(
    make_engine: MakeEngine,
    make_settings: Callable[..., Settings],
    tiny_lora: Path,
    wide_lora: Path,
) -> None:
    engine = await make_engine(loras=with_lora(tiny_lora))
    with pytest.raises(ConfigError) as caught:
        engine.reload(make_settings(loras={"wide": {"path": str(wide_lora)}}))
    assert caught.value.key == "loras.wide"
    assert list(engine.settings.loras) == ["fox"]
    assert [lora.name for lora in engine.status().loras] == ["fox"]


async def test_a_reload_brings_new_loras_to_admission(
    make_engine: MakeEngine,
    make_settings: Callable[..., Settings],
    make_request: Any,
    make_requester: Any,
    tiny_lora: Path,
) -> None:
    engine = await make_engine()
    with pytest.raises(InvalidRequest):
        engine.admit(make_request("a fox --lora fox"), make_requester())
    engine.reload(make_settings(loras=with_lora(tiny_lora)))
    job = await engine.submit(make_request("a fox --lora fox:0.5"), make_requester())
    assert job.request.loras == (("fox", 0.5),)
    assert isinstance(await wait_done(engine, job.id), Finished)


# -- requests ------------------------------------------------------------------------------


def test_lora_flags_are_read_with_their_weights_and_several_are_allowed() -> None:
    request = run("a fox --lora fox:0.8 --lora ink, noir:-0.5 --seed 3")
    assert request.prompt == "a fox"
    assert request.loras == (("fox", 0.8), ("ink", 1.0), ("noir", -0.5))
    assert request.seed == 3


def test_a_lora_without_a_weight_takes_its_default_weight() -> None:
    assert run("a fox", loras=(("fox", None),)).loras == (("fox", 0.7),)


def test_lora_names_are_matched_whatever_their_case() -> None:
    assert run("a fox --lora FOX:1").loras == (("fox", 1.0),)


def test_an_unknown_lora_is_refused_with_the_closest_names() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox --lora fxo:0.8")
    assert caught.value.field == "loras"
    assert "unknown LoRA 'fxo'; did you mean fox?" in caught.value.reason


@pytest.mark.parametrize("weight", ["2.5", "-3", "nan", "heavy"])
def test_a_weight_out_of_range_is_refused_with_the_range(weight: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        run(f"a fox --lora fox:{weight}")
    assert caught.value.field == "loras"
    assert "expected a weight -2–2" in caught.value.reason


def test_more_loras_than_max_loras_are_refused_naming_the_limit() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox --lora fox --lora ink --lora noir --lora sd15")
    assert "expected at most 3 LoRAs per image (limits.max_loras), got 4" in caught.value.reason


async def test_a_role_may_have_more_loras_than_max_loras(
    make_engine: MakeEngine, make_request: Any, make_requester: Any, tiny_lora: Path
) -> None:
    engine = await make_engine(
        loras={"fox": {"path": str(tiny_lora)}, "fox2": {"path": str(tiny_lora)}},
        limits={"max_loras": 1, "roles": {"7": {"max_loras": 2}}},
    )
    two = make_request("a fox --lora fox --lora fox2")
    with pytest.raises(InvalidRequest, match="at most 1 LoRAs per image"):
        engine.admit(two, make_requester())
    job = await engine.submit(two, make_requester(source="discord", role_ids=("7",)))
    assert [name for name, _ in job.request.loras] == ["fox", "fox2"]
    await wait_done(engine, job.id)


def test_a_lora_named_twice_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox --lora fox:0.5 --lora fox:1")
    assert "LoRA fox is named twice" in caught.value.reason


def test_a_lora_for_another_model_is_refused_naming_both() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox --lora sd15")
    assert "LoRA sd15 does not fit model tiny; it fits sd15" in caught.value.reason


def test_the_loras_are_stored_with_the_job() -> None:
    import json

    for request in (run("a fox --lora fox:0.8"), run("a fox")):
        stored = GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict())))
        assert stored.loras == request.loras
        assert stored.batch_key == request.batch_key


def test_only_requests_with_the_same_loras_and_weights_batch_together() -> None:
    plain, fox, fox_again = run(seed=1), run(seed=2, loras=(("fox", 0.8),)), run(seed=3)
    assert plain.batch_key == fox_again.batch_key
    assert fox.batch_key != plain.batch_key
    assert run(loras=(("fox", 0.8),)).batch_key == fox.batch_key
    assert run(loras=(("fox", 0.9),)).batch_key != fox.batch_key
    assert run(loras=(("fox", 0.8), ("ink", 1.0))).batch_key != fox.batch_key


# -- over the network ----------------------------------------------------------------------


def make_batch(**overrides: Any) -> Batch:
    values: dict[str, Any] = {
        "id": "j1:1", "model": "tiny", "kind": "txt2img", "width": 32, "height": 32,
        "steps": 2, "guidance": 7.0, "scheduler": "DPM++ 2M",
        "items": (BatchItem("j1", "a fox", "", (7,)),), "loras": (("fox", 0.8),),
    }  # fmt: skip
    values.update(overrides)
    return Batch(**values)


def test_a_batch_carries_its_loras_by_name_and_weight_as_json() -> None:
    import json

    batch = make_batch()
    wire = json.loads(json.dumps(batch.to_json()))
    assert wire["loras"] == [["fox", 0.8]]
    assert Batch.from_json(wire) == batch


@pytest.mark.parametrize(
    "loras", [[["fox"]], [["fox", "0.8"]], [["fox", True]], "fox", [[3, 0.8]], [["fox", None]]]
)
def test_a_batch_with_malformed_loras_is_refused(loras: Any) -> None:
    wire = {**make_batch().to_json(), "loras": loras}
    with pytest.raises(ValueError, match="loras"):
        Batch.from_json(wire)


@pytest.mark.parametrize(
    "loras",
    [
        (("ink", 0.8),),  # not configured on this box
        (("fox", 2.5),),  # weight out of range
        (("sd15", 1.0),),  # for another model
        (("fox", 0.5), ("fox", 1.0)),  # twice
        tuple((f"l{i}", 1.0) for i in range(9)),  # too many
    ],
)
def test_a_box_refuses_a_batch_with_loras_it_would_never_build(loras: Any) -> None:
    served = {"fox": (), "sd15": ("sd15",), **{f"l{i}": () for i in range(9)}}
    check_batch(make_batch(), ["tiny"], served)
    with pytest.raises(ValueError, match="batch loras"):
        check_batch(make_batch(loras=loras), ["tiny"], served)


# -- the engine ----------------------------------------------------------------------------


async def test_a_lora_changes_the_image_and_the_next_job_is_byte_identical_without_it(
    make_engine: MakeEngine, make_request: Any, make_requester: Any, tiny_lora: Path
) -> None:
    plain_engine = await make_engine()  # never loads a LoRA
    who = make_requester()
    never = pixels(plain_engine, await wait_done(plain_engine, (await plain_engine.submit(
        make_request("a fox"), who)).id))  # fmt: skip
    engine = await make_engine(loras=with_lora(tiny_lora))
    events = []
    for prompt in ("a fox --lora fox:0.8", "a fox", "a fox --lora fox:0.8", "a fox"):
        job = await engine.submit(make_request(prompt), who)
        events.append(await wait_done(engine, job.id))
    with_fox, after, again, after_again = (pixels(engine, event) for event in events)
    assert with_fox != never
    assert after == never and after_again == never
    assert again == with_fox


async def test_an_evicted_adapter_leaves_the_model_byte_identical(
    make_engine: MakeEngine,
    make_request: Any,
    make_requester: Any,
    tiny_lora: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine import pipeline

    monkeypatch.setattr(pipeline, "LORA_CACHE", 1)
    engine = await make_engine(
        loras={"fox": {"path": str(tiny_lora)}, "fox2": {"path": str(tiny_lora)}}
    )
    who = make_requester()
    events = []
    for prompt in ("a fox", "a fox --lora fox2:1 --lora fox:0.3", "a fox --lora fox", "a fox"):
        events.append(await wait_done(engine, (await engine.submit(make_request(prompt), who)).id))
    before, *_, after = (pixels(engine, event) for event in events)
    assert all(isinstance(event, Finished) for event in events)
    assert after == before


async def test_the_loras_are_recorded_on_the_image_and_written_into_the_png_prompt(
    make_engine: MakeEngine, make_request: Any, make_requester: Any, tiny_lora: Path
) -> None:
    engine = await make_engine(loras=with_lora(tiny_lora))
    job = await engine.submit(make_request("a fox --lora fox:0.8"), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished)
    [image] = event.images
    assert (image.loras, image.prompt) == ("fox:0.8", "a fox")
    assert engine.store.image(image.id).loras == "fox:0.8"  # type: ignore[union-attr]
    png = engine.store.image_path(image.file_name).read_bytes()
    params = read_parameters(png)
    assert params is not None and params.prompt == "a fox <lora:fox:0.8>"
    from sd_parsers import ParserManager

    with Image.open(io.BytesIO(png)) as opened:
        info = ParserManager().parse(opened)
    assert info is not None and info.generator.value == "AUTOMATIC1111"
    assert info.samplers[0].prompts[0].value == "a fox <lora:fox:0.8>"


async def test_an_image_without_loras_records_none(
    make_engine: MakeEngine, make_request: Any, make_requester: Any, tiny_lora: Path
) -> None:
    engine = await make_engine(loras=with_lora(tiny_lora))
    event = await wait_done(engine, (await engine.submit(make_request(), make_requester())).id)
    assert event.images[0].loras == ""
    params = read_parameters(engine.store.image_path(event.images[0].file_name).read_bytes())
    assert params is not None and "<lora:" not in params.prompt


async def test_a_variation_keeps_its_sources_loras(
    make_engine: MakeEngine, make_request: Any, make_requester: Any, tiny_lora: Path
) -> None:
    engine = await make_engine(loras=with_lora(tiny_lora))
    who = make_requester()
    first = await wait_done(
        engine, (await engine.submit(make_request("a fox --lora fox:0.8"), who)).id
    )
    request = GenerationRequest(prompt="", kind="variation", source_image_id=first.images[0].id)  # type: ignore[arg-type]
    job = await engine.submit(request, who)
    assert job.request.loras == (("fox", 0.8),)
    assert (await wait_done(engine, job.id)).images[0].loras == "fox:0.8"


async def test_a_reroll_keeps_the_loras_and_their_weights(
    make_engine: MakeEngine, make_request: Any, make_requester: Any, tiny_lora: Path
) -> None:
    engine = await make_engine(loras=with_lora(tiny_lora))
    first = await engine.submit(make_request("a fox --lora fox:0.8"), make_requester())
    await wait_done(engine, first.id)
    again = await engine.submit(await engine.reroll_request(first.id), make_requester())
    assert again.request.loras == (("fox", 0.8),)
    await wait_done(engine, again.id)


async def test_a_worker_serves_its_own_loras_by_name_with_their_models(
    make_settings: Callable[..., Settings], tiny_lora: Path
) -> None:
    settings = make_settings(
        loras={"fox": {"path": str(tiny_lora)}, "only": {"path": str(tiny_lora), "models": ["x"]}}
    )
    [worker] = local_workers(
        settings.engine, ModelRegistry.from_settings(settings), settings.data_path
    )
    assert worker.served_loras() == {"fox": (), "only": ("x",)}


async def test_status_lists_the_loras(make_engine: MakeEngine, tiny_lora: Path) -> None:
    engine = await make_engine(loras=with_lora(tiny_lora, weight=0.6, label="Fox fur"))
    [lora] = engine.status().loras
    assert (lora.name, lora.label, lora.weight, lora.models) == ("fox", "Fox fur", 0.6, ())


def test_a_lora_that_fails_to_load_leaves_the_others_off(
    tiny_model_dir: Path,
    tiny_lora: Path,
    wide_lora: Path,
    make_settings: Callable[..., Settings],
) -> None:
    from engine import GenerationFailed
    from engine.models import ModelSpec
    from engine.pipeline import Pipeline

    settings = make_settings()
    specs = {"fox": LoraSettings(path=str(tiny_lora)), "wide": LoraSettings(path=str(wide_lora))}
    pipe = Pipeline(
        ModelSpec("tiny", str(tiny_model_dir)), settings.engine, settings.data_path, "cpu"
    )
    pipe.load()

    def image(loras: tuple[tuple[str, float], ...] = ()) -> bytes:
        batch = make_batch(loras=loras)
        [[out]] = pipe.run(batch, lambda *_: None, lambda: False, specs)
        return out.data

    never = image()
    with pytest.raises(GenerationFailed, match="LoRA wide does not fit model tiny: size mismatch"):
        image((("fox", 0.8), ("wide", 1.0)))
    assert image() == never
    assert image((("fox", 0.8),)) != never
