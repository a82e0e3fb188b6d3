"""Settings: YAML layers, environment variables winning, clear one-line errors, production safety."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from spotik.settings import DEFAULT_JWT_SECRET, Settings, describe_validation_error

SEED_VARIABLES = (
    "SPOTIK_ENV",
    "SPOTIK_CONFIG_DIR",
    "DATABASE_URL",
    "DB_HOST",
    "DB_POOL_MAX",
    "DB_POOL_TIMEOUT",
    "JWT_SECRET",
    "SLOW_QUERY_THRESHOLD",
    "WS_MAX_CONNECTIONS",
    "WS_PING_INTERVAL",
    "MAX_REQUESTS_PER_HOUR",
    "REDIS_URL",
    "JWT_TTL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SEED_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_development_defaults_need_no_configuration() -> None:
    settings = Settings()
    assert settings.env == "development"
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.sqlalchemy_url.startswith("sqlite+aiosqlite:///") and settings.is_sqlite
    assert settings.audio_root == (Path("storage") / "audio").resolve()
    assert (settings.db_pool_max, settings.db_pool_timeout, settings.db_connect_timeout, settings.db_pool_recycle) == (
        10,
        5,
        5,
        10,
    )
    assert settings.slow_query_threshold == 500  # performance.yml's development section
    assert settings.cors_origins == ["loopback"]


def test_production_pool_comes_from_database_yml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTIK_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", "x" * 40)
    settings = Settings()
    assert (settings.db_pool_max, settings.db_pool_timeout, settings.db_connect_timeout, settings.db_pool_recycle) == (
        25,
        10,
        10,
        30,
    )
    assert settings.log_format == "json" and settings.auto_migrate is False


def test_environment_variables_win_over_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_MAX", "42")
    monkeypatch.setenv("SLOW_QUERY_THRESHOLD", "123")
    monkeypatch.setenv("WS_MAX_CONNECTIONS", "10000")
    monkeypatch.setenv("WS_PING_INTERVAL", "7")
    monkeypatch.setenv("MAX_REQUESTS_PER_HOUR", "99")
    settings = Settings()
    assert settings.db_pool_max == 42 and settings.slow_query_threshold == 123
    assert settings.ws_max_connections == 10000 and settings.ws_ping_interval == 7
    assert settings.max_requests_per_hour == 99


def test_list_settings_accept_comma_separated_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "http://a.example, http://b.example,loopback")
    monkeypatch.setenv("PERFORMANCE_ADMINS", "ana,bob@example.com")
    settings = Settings()
    assert settings.cors_origins == ["http://a.example", "http://b.example", "loopback"]
    assert settings.performance_admins == ["ana", "bob@example.com"]


def test_yaml_directory_is_layered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "default.yml").write_text("port: 9000\nmax_upload_mb: 5\n")
    (tmp_path / "database.yml").write_text("default:\n  db_pool_max: 3\ntesting:\n  db_pool_max: 4\n")
    (tmp_path / "testing.yml").write_text("max_upload_mb: 6\n")
    monkeypatch.setenv("SPOTIK_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("SPOTIK_ENV", "testing")
    settings = Settings()
    assert (settings.port, settings.db_pool_max, settings.max_upload_mb) == (9000, 4, 6)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/spotik", "postgresql+asyncpg://u:p@db:5432/spotik"),
        ("postgresql://u@db/spotik", "postgresql+asyncpg://u@db/spotik"),
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
    ],
)
def test_database_url_spellings(url: str, expected: str) -> None:
    assert Settings(database_url=url).sqlalchemy_url == expected


def test_db_host_builds_a_postgres_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    settings = Settings(db_username="spotik user", db_password="p@ss/word", db_database="spotik")
    assert settings.sqlalchemy_url == "postgresql+asyncpg://spotik%20user:p%40ss%2Fword@db.internal:5432/spotik"


def test_production_refuses_the_default_and_short_secrets() -> None:
    with pytest.raises(ValidationError) as default:
        Settings(env="production")
    assert "JWT_SECRET must be set in production" in describe_validation_error(default.value)
    with pytest.raises(ValidationError) as short:
        Settings(env="production", jwt_secret="short-secret")
    assert "at least 32 bytes" in describe_validation_error(short.value)
    assert Settings(env="production", jwt_secret="y" * 32).jwt_secret == "y" * 32
    assert Settings(env="development").jwt_secret == DEFAULT_JWT_SECRET


def _spotik(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SEED_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "spotik", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DB_POOL_MAX": "lots"}, "spotik: invalid setting DB_POOL_MAX='lots': Input should be a valid integer"),
        ({"WS_PING_INTERVAL": "-1"}, "spotik: invalid setting WS_PING_INTERVAL='-1': Input should be greater than 0"),
        ({"SPOTIK_ENV": "staging"}, "spotik: invalid setting SPOTIK_ENV='staging': Input should be 'development'"),
        ({"SPOTIK_ENV": "production"}, "spotik: invalid settings: JWT_SECRET must be set in production"),
    ],
)
def test_invalid_settings_stop_start_up_with_one_clear_line(env: dict[str, str], expected: str) -> None:
    result = _spotik(env, "serve", "--port", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert "Traceback" not in result.stderr


def test_every_setting_is_read_somewhere() -> None:
    """A setting that nothing reads misleads operators: each field is used outside the settings module."""
    source = Path(__file__).resolve().parents[2] / "src" / "spotik"
    code = "\n".join(p.read_text(encoding="utf-8") for p in source.rglob("*.py") if p.name != "settings.py")
    settings_module = (source / "settings.py").read_text(encoding="utf-8")
    unread = [
        name
        for name in Settings.model_fields
        if f".{name}" not in code and f"self.{name}" not in settings_module and f"{name}=" not in code
    ]
    assert unread == []
