"""Settings: config.toml with safe defaults, environment variables on top, frozen dataclasses.

Precedence, lowest first: the dataclass defaults, config.toml, COMMPRO_<SECTION>_<KEY>, then the
Railway-style names in ENV_NAMES. Every value is converted to its field's type; a bad value stops
start-up with a ConfigError naming the variable or key.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path

from commpro.config_secrets import fill_secrets
from commpro.settings import Config, ConfigError

# A checkout's config.toml, found when the code runs from the repository (make, an editable
# install). An installed package has none beside it and starts from the defaults of settings.py,
# unless COMMPRO_CONFIG names a file.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.toml"
ALLOWED_JWT_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"})
LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


# The exact names operators (and Railway) use, mapped to section.key.
ENV_NAMES: dict[str, tuple[str, str]] = {
    "PORT": ("server", "port"),
    "HOST": ("server", "host"),
    "PUBLIC_BASE_URL": ("server", "public_base_url"),
    "DATABASE_URL": ("database", "url"),
    "JWT_SECRET": ("auth", "jwt_secret"),
    "JWT_PUBLIC_KEY": ("auth", "jwt_public_key"),
    "JWT_ALGORITHMS": ("auth", "jwt_algorithms"),
    "JWT_AUDIENCE": ("auth", "jwt_audience"),
    "JWT_ISSUER": ("auth", "jwt_issuer"),
    "TWILIO_ACCOUNT_SID": ("twilio", "account_sid"),
    "TWILIO_AUTH_TOKEN": ("twilio", "auth_token"),
    "TWILIO_API_BASE_URL": ("twilio", "api_base_url"),
    "TWILIO_INSIGHTS_BASE_URL": ("twilio", "insights_base_url"),
    "TWILIO_API_KEY_SID": ("twilio", "api_key_sid"),
    "TWILIO_API_KEY_SECRET": ("twilio", "api_key_secret"),
    "TWILIO_TWIML_APP_SID": ("twilio", "twiml_app_sid"),
    "TWILIO_PUSH_CREDENTIAL_SID": ("twilio", "push_credential_sid"),
    "TWILIO_WEBHOOK_SIGNING_KEY": ("twilio", "webhook_signing_key"),
    "COMMPRO_MASTER_KEY": ("crypto", "master_key"),
    "ALERT_WEBHOOK_URL": ("alerts", "webhook_url"),
    "ALERT_WEBHOOK_SECRET": ("alerts", "webhook_secret"),
    "COMMPRO_ENV": ("app", "env"),
    "LOG_LEVEL": ("log", "level"),
    "LOG_FORMAT": ("log", "format"),
}
# Read by load_config itself, not settings.
META_ENV_NAMES = frozenset({"COMMPRO_CONFIG", "RAILWAY_PUBLIC_DOMAIN"})
# Fields the loader derives; neither config.toml nor the environment may set them.
DERIVED = frozenset({("twilio", "sandbox"), ("twilio", "credentials_from")})

_SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if f.name != "notices"
}


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load settings; raise ConfigError naming every bad key.

    `env` defaults to os.environ; tests pass their own mapping.
    """
    env = os.environ if env is None else env
    path = path or env.get("COMMPRO_CONFIG") or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None)
    if path:
        path = Path(path)
        raw, origin = _read_toml(path)
    else:
        # Relative paths (app.data_dir) are then relative to the working directory.
        path, raw, origin = Path.cwd() / "config.toml", {}, {}
    _overlay_env(raw, origin, env)
    # Erasure at Twilio is on by default in production only; config.toml or the environment
    # may say otherwise anywhere.
    production = str(raw.get("app", {}).get("env", "")).strip() == "production"
    raw.setdefault("messages", {}).setdefault("erase_at_twilio", production)

    errors: list[str] = []
    sections = {}
    for name, cls in _SECTIONS.items():
        sections[name] = _build_section(cls, name, raw.get(name, {}), origin, errors)
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    config = Config(**sections)
    config = _resolve_paths(config, path)
    config = _validate(config, origin)
    return fill_secrets(config, origin)


def _read_toml(path: Path) -> tuple[dict, dict]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw: dict[str, dict] = {}
    origin: dict[tuple[str, str], str] = {}
    for section, values in data.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        known = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        for key, value in values.items():
            if key not in known or (section, key) in DERIVED:
                raise ConfigError(f"{path}: unknown key {section}.{key}")
            raw.setdefault(section, {})[key] = value
            origin[(section, key)] = f"{section}.{key} in {path.name}"
    return raw, origin


def _overlay_env(raw: dict, origin: dict, env: Mapping[str, str]) -> None:
    generic: list[tuple[str, str, str]] = []
    for name in env:
        if name in ENV_NAMES or name in META_ENV_NAMES or not name.startswith("COMMPRO_"):
            continue
        section, key = _split_generic(name)
        generic.append((name, section, key))
    # Generic names first, so the Railway-style names win when both are set.
    for name, section, key in generic:
        raw.setdefault(section, {})[key] = env[name]
        origin[(section, key)] = name
    for name, (section, key) in ENV_NAMES.items():
        if name in env:
            raw.setdefault(section, {})[key] = env[name]
            origin[(section, key)] = name
    # On Railway the public domain is known: PUBLIC_BASE_URL defaults to it.
    domain = env.get("RAILWAY_PUBLIC_DOMAIN", "").strip()
    if domain and not raw.get("server", {}).get("public_base_url"):
        raw.setdefault("server", {})["public_base_url"] = f"https://{domain}"
        origin[("server", "public_base_url")] = "RAILWAY_PUBLIC_DOMAIN"


def _split_generic(name: str) -> tuple[str, str]:
    rest = name[len("COMMPRO_") :].lower()
    for section, cls in _SECTIONS.items():
        if rest.startswith(section + "_"):
            key = rest[len(section) + 1 :]
            if key in {f.name for f in dataclasses.fields(cls)} and (section, key) not in DERIVED:
                return section, key
    raise ConfigError(f"{name}: unknown setting (expected COMMPRO_<SECTION>_<KEY>, see config.toml)")


def _build_section(cls: type, section: str, values: dict, origin: dict, errors: list[str]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        where = origin.get((section, key), f"{section}.{key}")
        try:
            kwargs[key] = _convert(value, hints[key])
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    return cls(**kwargs)


def _convert(value: object, kind: object) -> object:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, (bool, float)):
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
    if kind is float:
        try:
            result = float(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            result = None
        if result is None or math.isnan(result) or math.isinf(result):
            raise ValueError(f"expected a number, got {value!r}")
        return result
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if typing.get_origin(kind) is tuple or isinstance(kind, types.GenericAlias):
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list):
            items = [str(v) for v in value]
        else:
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(items)
    raise ValueError(f"unsupported type {kind}")  # pragma: no cover - a bug in this module


def _resolve_paths(config: Config, path: Path) -> Config:
    data_dir = Path(config.app.data_dir)
    if not data_dir.is_absolute():
        data_dir = (path.parent / data_dir).resolve()
    return dataclasses.replace(config, app=dataclasses.replace(config.app, data_dir=str(data_dir)))


def _validate(config: Config, origin: dict) -> Config:
    def where(section: str, key: str) -> str:
        return origin.get((section, key), f"{section}.{key}")

    errors = []
    if config.app.env not in ("development", "production"):
        errors.append(f"{where('app', 'env')}: expected development or production, got {config.app.env!r}")
    if not 0 < config.server.port < 65536:
        errors.append(f"{where('server', 'port')}: expected a port from 1 to 65535, got {config.server.port}")
    for key in ("public_base_url",):
        url = getattr(config.server, key)
        if url and not url.startswith(("http://", "https://")):
            errors.append(f"{where('server', key)}: expected an http(s) URL, got {url!r}")
    if config.alerts.webhook_url:
        if not config.alerts.webhook_url.startswith(("http://", "https://")):
            errors.append(f"{where('alerts', 'webhook_url')}: expected an http(s) URL")
        if not config.alerts.webhook_secret:
            errors.append(f"{where('alerts', 'webhook_url')}: needs ALERT_WEBHOOK_SECRET to sign with")
    for key in ("api_base_url", "insights_base_url"):
        url = getattr(config.twilio, key)
        if url and not url.startswith(("http://", "https://")):
            errors.append(f"{where('twilio', key)}: expected an http(s) URL, got {url!r}")
    bad_algs = [a for a in config.auth.jwt_algorithms if a not in ALLOWED_JWT_ALGORITHMS]
    if bad_algs or not config.auth.jwt_algorithms:
        errors.append(
            f"{where('auth', 'jwt_algorithms')}: expected some of {sorted(ALLOWED_JWT_ALGORITHMS)}, "
            f"got {list(config.auth.jwt_algorithms)}"
        )
    if config.log.level.upper() not in LOG_LEVELS:
        errors.append(f"{where('log', 'level')}: expected one of {sorted(LOG_LEVELS)}, got {config.log.level!r}")
    for section, key, value, low in (
        ("database", "pool_min", config.database.pool_min, 0),
        ("database", "pool_max", config.database.pool_max, 1),
        ("twilio", "timeout_s", config.twilio.timeout_s, 0.001),
        ("server", "max_body_bytes", config.server.max_body_bytes, 1024),
        ("server", "webhook_max_body_bytes", config.server.webhook_max_body_bytes, 1024),
        ("quality", "concurrency", config.quality.concurrency, 1),
        ("auth", "leeway_s", config.auth.leeway_s, 0),
        ("calls", "rate_per_minute", config.calls.rate_per_minute, 1),
        ("messages", "rate_per_minute", config.messages.rate_per_minute, 1),
        ("messages", "fetch_attempts", config.messages.fetch_attempts, 1),
        ("crypto", "key_cache_size", config.crypto.key_cache_size, 1),
        ("voice", "ring_timeout_s", config.voice.ring_timeout_s, 5),
        ("jobs", "lease_s", config.jobs.lease_s, 1),
        ("events", "listen_lease_s", config.events.listen_lease_s, 1),
        ("jobs", "jitter", config.jobs.jitter, 0),
        ("jobs", "rate_limit_idle_s", config.jobs.rate_limit_idle_s, 60),
    ):
        if value < low:
            errors.append(f"{where(section, key)}: must be at least {low}, got {value}")
    if config.idempotency.lease_s <= config.twilio.timeout_s:
        errors.append(f"{where('idempotency', 'lease_s')}: must be longer than twilio.timeout_s "
                      f"({config.twilio.timeout_s:g}), or a slow request would lose its key mid-way")
    if config.jobs.jitter >= 1:
        errors.append(f"{where('jobs', 'jitter')}: must be below 1, got {config.jobs.jitter}")
    if config.database.pool_min > config.database.pool_max:
        errors.append(f"{where('database', 'pool_min')}: larger than database.pool_max")
    for key_name, values in (("master_key", [config.crypto.master_key]),
                             ("previous_master_keys", list(config.crypto.previous_master_keys))):
        for value in filter(None, values):
            try:
                if len(base64.b64decode(value, validate=True)) != 32:
                    raise ValueError
            except ValueError:
                errors.append(f"{where('crypto', key_name)}: expected base64 of 32 bytes")
    if config.log.format not in ("", "console", "json"):
        errors.append(f"{where('log', 'format')}: expected console or json, got {config.log.format!r}")
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    log = dataclasses.replace(config.log, level=config.log.level.upper(),
                              format=config.log.format or ("json" if config.production else "console"))
    server = config.server
    if server.public_base_url.endswith("/"):
        server = dataclasses.replace(server, public_base_url=server.public_base_url.rstrip("/"))
    return dataclasses.replace(config, log=log, server=server)
