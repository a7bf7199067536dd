"""The demo model: its caption grammar, drawn dataset, vocabulary, shipped folder and accuracy."""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest

from engine.demo import HELD_OUT_PAIRS, parse_caption, read_image, sample_caption
from engine.demo.captions import caption_words
from engine.demo.dataset import draw
from engine.demo.evaluate import MODEL_DIR

GRAMMAR = re.compile(
    r"a (small |large )?(red|green|blue|yellow|white|black) (circle|square|triangle|star)"
    r"( at the left| at the right| at the top| at the bottom| in the center)?"
    r" on a (red|green|blue|yellow|white|black) background"
)
# Set from what the shipped model measured with `python -m engine.demo eval --n 200` (seen:
# colour 0.995, background 1.0, shape 0.98, position 0.995; held out: colour 0.97, background
# 0.985, shape 0.955, position 0.975), lowered by about 2.5 binomial standard deviations for this
# test's n = 100 (the previous models' held-out shape floors: 0.31, 0.62, then 0.70).
# Never lower them to let a change pass.
SEEN_MIN = {"colour": 0.95, "background": 0.95, "shape": 0.94, "position": 0.95}
HELD_OUT_MIN = {"colour": 0.93, "background": 0.95, "shape": 0.90, "position": 0.93}
EVAL_N = 100
# `vae_round_trip` on the shipped VAE measured 0.96 (n = 300); the previous, seen-pairs-only VAE
# measured 0.81.
VAE_HELD_OUT_MIN = 0.90
# From `seed_spread` on the shipped model (seeds 0–15 of `a red circle on a blue background`:
# 3 sizes, 5 places, all red circles, 21.5 of 255 apart). The model before last drew 1 size and
# 1 place, 1.0–1.6 of 255 apart.
SPREAD_MIN = {"positions": 3, "sizes": 2, "colour_and_shape": 0.85, "mean_abs_difference": 8.0}


@pytest.fixture
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shipped_pipeline():
    from engine.demo.evaluate import load_pipeline

    return load_pipeline(MODEL_DIR)


def test_sampled_captions_follow_the_grammar():
    rng = random.Random(0)
    for _ in range(500):
        assert GRAMMAR.fullmatch(sample_caption(rng).text)


def test_caption_text_parses_back_to_the_same_caption():
    rng = random.Random(1)
    for _ in range(500):
        caption = sample_caption(rng, held_out=rng.random() < 0.5)
        read = parse_caption(caption.text)
        assert read is not None and read.text == caption.text
        assert (read.colour, read.shape, read.background) == (
            caption.colour,
            caption.shape,
            caption.background,
        )
        assert read.size == caption.size or not caption.says_size
        assert read.position == caption.position or not caption.says_position


def test_parse_caption_refuses_text_outside_the_grammar():
    for text in ("a purple circle on a blue background", "a red circle", "red circle on a blue"):
        assert parse_caption(text) is None


def test_training_captions_never_use_held_out_pairs():
    rng = random.Random(2)
    pairs = {(c.colour, c.shape) for c in (sample_caption(rng) for _ in range(2000))}
    assert pairs.isdisjoint(HELD_OUT_PAIRS)
    assert len(pairs) == 24 - len(HELD_OUT_PAIRS)


def test_only_the_autoencoder_may_see_held_out_pairs():
    # The VAE reads no captions; with any_pair it learns every colour on every shape. What the
    # UNet learns from (its latent bank's scenes and their captions) stays seen pairs only.
    from engine.demo.dataset import draw_batch

    texts, _ = draw_batch(random.Random(8), 400, 16, any_pair=True)
    pairs = {(c.colour, c.shape) for c in map(parse_caption, texts) if c is not None}
    assert pairs >= HELD_OUT_PAIRS and len(pairs) == 24
    texts, _ = draw_batch(random.Random(8), 400, 16)
    pairs = {(c.colour, c.shape) for c in map(parse_caption, texts) if c is not None}
    assert pairs.isdisjoint(HELD_OUT_PAIRS)


def test_shape_and_background_colours_always_differ():
    rng = random.Random(3)
    assert all(c.colour != c.background for c in (sample_caption(rng) for _ in range(1000)))


def test_drawn_scene_reads_back_as_its_caption():
    rng = random.Random(4)
    for _ in range(300):
        caption = sample_caption(rng, held_out=rng.random() < 0.3, full=True)
        reading = read_image(np.asarray(draw(caption, 64, rng)))
        assert (reading.colour, reading.background, reading.shape, reading.position) == (
            caption.colour,
            caption.background,
            caption.shape,
            caption.position,
        )


def test_training_scenes_of_open_captions_use_every_size_and_place():
    # What a caption leaves open, the training data varies: that is what makes seeds matter.
    from engine.demo.captions import POSITIONS, SIZES

    rng = random.Random(5)
    captions = [sample_caption(rng) for _ in range(3000)]
    open_size = Counter(c.size for c in captions if not c.says_size)
    open_place = Counter(c.position for c in captions if not c.says_position)
    assert set(open_size) == set(SIZES) and min(open_size.values()) > 200
    assert set(open_place) == set(POSITIONS) and min(open_place.values()) > 120
    named = {c.size for c in captions if c.says_size}
    assert named == {"small", "large"}


def test_an_open_caption_draws_several_sizes_and_places_over_sixteen_seeds(
    shipped_pipeline, one_thread
):
    from engine.demo.evaluate import seed_spread

    spread = seed_spread(shipped_pipeline)
    assert spread["seeds"] == 16
    assert len(spread["positions"]) >= SPREAD_MIN["positions"], spread
    assert len(spread["sizes"]) >= SPREAD_MIN["sizes"], spread
    assert spread["colour_and_shape"] >= SPREAD_MIN["colour_and_shape"], spread
    assert spread["mean_abs_difference"] >= SPREAD_MIN["mean_abs_difference"], spread


def test_the_shipped_text_encoder_keeps_the_shape_readable_for_held_out_pairs(shipped_pipeline):
    # Trained jointly with the UNet, the previous encoder bound colour to shape: a linear probe
    # fitted on seen pairs read held-out shapes at 76 % from the shape word and 6–7 % (below
    # chance) from the end-of-text and padding states. Kept at its random start, it reads 100 %.
    from engine.demo.evaluate import text_probe

    probe = text_probe(shipped_pipeline, n=600)
    assert min(probe.values()) >= 0.95, probe


def test_the_shipped_autoencoder_redraws_held_out_shapes(shipped_pipeline, one_thread):
    # No UNet draws a shape better than its VAE redraws it. Trained on seen pairs only, the
    # previous VAE redrew 81 % of held-out scenes' shapes (the three UNet seeds on it: 79.5–82 %);
    # trained on scenes of all pairs (it reads no captions), this one redraws VAE_HELD_OUT_MIN+.
    from engine.demo.evaluate import vae_round_trip

    trip = vae_round_trip(shipped_pipeline, n=100)
    assert trip["seen"]["shape"] >= 0.95 and trip["seen"]["colour"] >= 0.98, trip
    assert trip["held_out"]["shape"] >= VAE_HELD_OUT_MIN and trip["held_out"]["colour"] >= 0.98


def test_the_recipe_keeps_the_text_encoder_at_its_random_start(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import CLIPTextModel

    from engine.demo.model import build_text_encoder, build_tokenizer
    from engine.demo.train import Recipe, train

    recipe = Recipe(seed=5, vae_steps=2, bank_size=256, steps=2, batch=2, threads=1)
    train(recipe, tmp_path / "m", progress=False)
    saved = CLIPTextModel.from_pretrained(str(tmp_path / "m" / "text_encoder"))
    torch.manual_seed(recipe.seed + 2)
    start = build_text_encoder(recipe.shape, build_tokenizer(tmp_path / "vocab"))
    for (name, value), (_, initial) in zip(
        saved.state_dict().items(), start.state_dict().items(), strict=True
    ):
        assert torch.equal(value, initial), name


def test_tokenizer_makes_every_caption_word_one_token():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(MODEL_DIR / "tokenizer"))
    for word in caption_words():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def test_tokenizer_spells_unknown_words_out_in_characters():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(MODEL_DIR / "tokenizer"))
    ids = tokenizer("a purple cube ✨").input_ids
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[2:8] == ["p", "u", "r", "p", "l", "e</w>"]
    assert tokenizer.unk_token_id not in ids[1:-1]


def test_tokenizer_truncates_a_long_prompt_to_its_window():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(MODEL_DIR / "tokenizer"))
    ids = tokenizer("a dodecahedron " * 40, truncation=True, padding="max_length").input_ids
    assert len(ids) == tokenizer.model_max_length


def test_shipped_folder_loads_offline_as_a_stable_diffusion_2_pipeline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(MODEL_DIR), use_safetensors=True, dtype=torch.float32, safety_checker=None
    )
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.use_linear_projection
    assert pipe.text_encoder.dtype == torch.float32
    assert pipe.safety_checker is None


def test_shipped_folder_is_safetensors_only_and_small():
    files = [p for p in MODEL_DIR.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20


def test_shipped_model_draws_what_its_captions_ask_for(shipped_pipeline, one_thread):
    from engine.demo.evaluate import evaluate

    result = evaluate(shipped_pipeline, n=EVAL_N, seed=99)
    for name, low in SEEN_MIN.items():
        assert result["seen"][name] >= low, (name, result["seen"])
    for name, low in HELD_OUT_MIN.items():
        assert result["held_out"][name] >= low, (name, result["held_out"])


def test_drawn_scenes_read_back_at_the_shipped_models_32_px():
    # At 32 px a small square is 7 px wide; read as coverage (anti-aliased edges), not as a
    # thresholded mask, it still tells from a circle (thresholded masks read 82.5 % of squares).
    rng = random.Random(6)
    captions = [sample_caption(rng, full=True) for _ in range(400)]
    readings = [read_image(np.asarray(draw(c, 32, rng))) for c in captions]
    shapes = sum(r.shape == c.shape for c, r in zip(captions, readings, strict=True))
    places = sum(r.position == c.position for c, r in zip(captions, readings, strict=True))
    assert shapes == len(captions) and places == len(captions)


def test_recipe_settings_override_fields_and_refuse_unknown_names():
    from engine.demo.train import Recipe

    recipe = Recipe().with_settings(
        ["steps=10", "weighting=minsnr", "unet_channels=8,16", "unet_attention=0,1"]
    )
    assert (recipe.steps, recipe.weighting) == (10, "minsnr")
    assert (recipe.shape.unet_channels, recipe.shape.unet_attention) == ((8, 16), (False, True))
    for bad in ("nonsense=1", "steps", "steps=many", "shape=1", "unet_channels=8,x"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            Recipe().with_settings([bad])
    assert Recipe().vae_pairs == "all"
    assert Recipe().with_settings(["vae_pairs=seen"]).vae_pairs == "seen"
    with pytest.raises(ValueError, match="vae_pairs: expected 'seen' or 'all'"):
        Recipe().with_settings(["vae_pairs=some"])


def test_train_command_reports_a_bad_setting_without_training(tmp_path, capsys):
    from engine.demo.__main__ import main

    assert main(["train", "--out", str(tmp_path / "m"), "--set", "nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_plain_request_on_the_offline_default_uses_the_settings_the_eval_measures(tmp_path):
    from engine.config import from_mapping
    from engine.demo.evaluate import GUIDANCE, SCHEDULER, STEPS, model_defaults
    from engine.models import ModelRegistry, inspect
    from engine.request import GenerationRequest, resolve

    settings = from_mapping({"engine": {"data_dir": str(tmp_path)}}, {})
    registry = ModelRegistry.from_settings(settings)
    spec = registry.get(None)
    registry.learn(inspect(spec, tmp_path))
    defaults = registry.defaults(spec.name)
    resolved = resolve(
        GenerationRequest(prompt="a red circle on a blue background"),
        settings.limits,
        registry.facts(spec.name).native_px,
        settings.engine.default_scheduler,
        defaults,
    )
    assert (resolved.steps, resolved.guidance, resolved.scheduler) == (STEPS, GUIDANCE, SCHEDULER)
    assert model_defaults(MODEL_DIR) == (STEPS, GUIDANCE)
    assert settings.limits.default_guidance != GUIDANCE  # the folder's file is what decides
