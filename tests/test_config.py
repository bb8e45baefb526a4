"""Settings: defaults < config.toml < COMMPRO_<SECTION>_<KEY> < Railway-style names."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from commpro.config import Config, ConfigError, load_config

PROD_SECRETS = {
    "COMMPRO_ENV": "production",
    "JWT_SECRET": "s" * 40,
    "COMMPRO_MASTER_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "t" * 32,
    "PUBLIC_BASE_URL": "https://commpro.example.com",
}


@pytest.fixture
def toml(tmp_path):
    def write(text: str = "") -> str:
        path = tmp_path / "config.toml"
        path.write_text(f'[app]\ndata_dir = "{tmp_path / "data"}"\n' + text)
        return str(path)

    return write


def test_defaults_come_from_config_toml(tmp_path):
    config = load_config(env={"COMMPRO_APP_DATA_DIR": str(tmp_path)})
    assert config.server.port == 8080
    assert config.quality.poll_interval_s == 60
    assert config.auth.jwt_algorithms == ("HS256",)
    assert config.log.level == "INFO"


def test_precedence_toml_then_generic_then_named(toml):
    path = toml("[server]\nport = 9000\n[quality]\npoll_interval_s = 15\n")
    assert load_config(path, env={}).server.port == 9000
    assert load_config(path, env={}).quality.poll_interval_s == 15
    assert load_config(path, env={"COMMPRO_SERVER_PORT": "9100"}).server.port == 9100
    both = load_config(path, env={"COMMPRO_SERVER_PORT": "9100", "PORT": "9200"})
    assert both.server.port == 9200
    assert load_config(path, env={"COMMPRO_QUALITY_POLL_INTERVAL_S": "30"}).quality.poll_interval_s == 30


def test_every_named_variable_reaches_its_setting(toml):
    env = {
        **PROD_SECRETS,
        "PORT": "8181", "HOST": "127.0.0.2", "DATABASE_URL": "postgresql://u:p@db/x",
        "JWT_ALGORITHMS": "HS256,HS512", "JWT_AUDIENCE": "apps", "JWT_ISSUER": "https://id.example.com",
        "JWT_PUBLIC_KEY": "", "TWILIO_API_BASE_URL": "http://twilio.local/api",
        "TWILIO_INSIGHTS_BASE_URL": "http://twilio.local/insights", "LOG_LEVEL": "warning",
    }
    c = load_config(toml(), env=env)
    assert (c.server.port, c.server.host, c.database.url) == (8181, "127.0.0.2", "postgresql://u:p@db/x")
    assert c.auth.jwt_algorithms == ("HS256", "HS512")
    assert (c.auth.jwt_audience, c.auth.jwt_issuer) == ("apps", "https://id.example.com")
    assert c.auth.jwt_secret == "s" * 40
    assert c.crypto.master_key == PROD_SECRETS["COMMPRO_MASTER_KEY"]
    assert (c.twilio.account_sid, c.twilio.auth_token) == (PROD_SECRETS["TWILIO_ACCOUNT_SID"], "t" * 32)
    assert (c.twilio.api_base_url, c.twilio.insights_base_url) == ("http://twilio.local/api", "http://twilio.local/insights")
    assert c.server.public_base_url == "https://commpro.example.com"
    assert c.production and c.log.level == "WARNING" and not c.twilio.sandbox


@pytest.mark.parametrize(
    "env, named",
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"COMMPRO_QUALITY_POLL_INTERVAL_S": "soon"}, "COMMPRO_QUALITY_POLL_INTERVAL_S"),
        ({"COMMPRO_TWILIO_TIMEOUT_S": "nan"}, "COMMPRO_TWILIO_TIMEOUT_S"),
        ({"COMMPRO_ENV": "staging"}, "COMMPRO_ENV"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
        ({"PUBLIC_BASE_URL": "commpro.example.com"}, "PUBLIC_BASE_URL"),
        ({"COMMPRO_MASTER_KEY": "short"}, "COMMPRO_MASTER_KEY"),
        ({"COMMPRO_NOPE_THING": "1"}, "COMMPRO_NOPE_THING"),
        ({"COMMPRO_JOBS_JITTER": "1.5"}, "COMMPRO_JOBS_JITTER"),
        ({"COMMPRO_JOBS_JITTER": "-0.1"}, "COMMPRO_JOBS_JITTER"),
        ({"COMMPRO_JOBS_LEASE_S": "0.5"}, "COMMPRO_JOBS_LEASE_S"),
        ({"COMMPRO_JOBS_RATE_LIMIT_IDLE_S": "30"}, "COMMPRO_JOBS_RATE_LIMIT_IDLE_S"),
    ],
)
def test_invalid_values_name_their_key(toml, env, named):
    with pytest.raises(ConfigError, match=named):
        load_config(toml(), env=env)


def test_invalid_toml_key_is_named(toml):
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_config(toml("[server]\nprot = 1\n"), env={})
    with pytest.raises(ConfigError, match=r"server\.port in config.toml"):
        load_config(toml('[server]\nport = "x"\n'), env={})


def test_production_lists_every_missing_secret(toml):
    with pytest.raises(ConfigError) as info:
        load_config(toml(), env={"COMMPRO_ENV": "production"})
    for name in ("JWT_SECRET", "COMMPRO_MASTER_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"):
        assert name in str(info.value)
    rs = {**PROD_SECRETS, "JWT_ALGORITHMS": "RS256", "JWT_SECRET": ""}
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY"):
        load_config(toml(), env=rs)


def test_development_generates_secrets_once(toml, tmp_path):
    first = load_config(toml(), env={})
    assert first.notices and "development secrets generated" in first.notices[0]
    assert first.twilio.sandbox and first.twilio.account_sid.startswith("AC")
    assert first.twilio.api_base_url == f"{first.local_base_url}/_sandbox/api"
    secrets_file = tmp_path / "data" / "dev-secrets.json"
    assert oct(os.stat(secrets_file).st_mode & 0o777) == "0o600"
    second = load_config(toml(), env={})
    assert second.notices == ()
    assert second.auth.jwt_secret == first.auth.jwt_secret == json.loads(secrets_file.read_text())["jwt_secret"]
    assert second.crypto.master_key == first.crypto.master_key


def test_secrets_stay_out_of_repr(toml):
    config = load_config(toml(), env=PROD_SECRETS)
    text = repr(config)
    assert "s" * 40 not in text and "t" * 32 not in text and PROD_SECRETS["COMMPRO_MASTER_KEY"] not in text


def test_config_is_frozen(toml):
    config = load_config(toml(), env={})
    assert isinstance(config, Config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


def test_erasure_at_twilio_is_on_by_default_in_production_only(toml):
    assert load_config(toml(), env=PROD_SECRETS).messages.erase_at_twilio is True
    assert load_config(toml(), env={}).messages.erase_at_twilio is False
    off = {**PROD_SECRETS, "COMMPRO_MESSAGES_ERASE_AT_TWILIO": "false"}
    assert load_config(toml(), env=off).messages.erase_at_twilio is False
    assert load_config(toml("[messages]\nerase_at_twilio = true\n"), env={}).messages.erase_at_twilio is True


def test_the_webhook_signing_key_is_read_and_never_shown(toml):
    c = load_config(toml(), env={**PROD_SECRETS, "TWILIO_WEBHOOK_SIGNING_KEY": "k" * 32})
    assert c.twilio.webhook_signing_key == "k" * 32 and "k" * 32 not in repr(c)
