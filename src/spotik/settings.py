"""One settings object: embedded defaults < config/*.yml < environment variables < explicit arguments.

Environment variables keep the names of the Laravel backend (``JWT_SECRET``, ``DB_HOST`` …) and of the settings
files Spotik started from (``DB_POOL_MAX``, ``SLOW_QUERY_THRESHOLD`` …): each setting's environment variable is its
field name in upper case. The environment is chosen by ``SPOTIK_ENV`` (development, testing, production).

YAML layering, later wins: ``default.yml``; the per-topic ``performance.yml``, ``cache.yml`` and ``database.yml``
(each with a ``default:`` section and one section per environment); then ``<env>.yml``.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import yaml
from limits import parse as parse_rate_limit
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_JWT_SECRET = "spotik-insecure-development-secret-change-me!"  # noqa: S105 - refused in production
MIN_JWT_SECRET_LENGTH = 32
SEED_FILES = ("performance.yml", "cache.yml", "database.yml")
PROBE_PATHS = ("/live", "/ready", "/metrics")  # never rate limited by default


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TESTING = "testing"
    PRODUCTION = "production"


def _default_config_dir() -> Path:
    # An editable/source checkout keeps config/ beside src/; an installed wheel falls back to ./config.
    beside_source = Path(__file__).resolve().parents[2] / "config"
    return beside_source if beside_source.is_dir() else Path("config")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return loaded


def load_yaml_layers(config_dir: Path, env: str) -> dict[str, Any]:
    merged: dict[str, Any] = dict(_read_yaml(config_dir / "default.yml"))
    for name in SEED_FILES:
        sections = _read_yaml(config_dir / name)
        merged.update(sections.get("default") or {})
        merged.update(sections.get(env) or {})
    merged.update(_read_yaml(config_dir / f"{env}.yml"))
    return merged


class _YamlLayers(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], config_dir: Path, env: str) -> None:
        super().__init__(settings_cls)
        self._data = load_yaml_layers(config_dir, env)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        known = set(self.settings_cls.model_fields)
        return {key: value for key, value in self._data.items() if key in known}


class CacheNamespaceSettings(BaseModel):
    """One cache namespace (config/cache.yml ``cache_namespaces``); spotik.cache.policies explains each field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl: float = Field(gt=0)  # s, default per entry
    priority: Literal["low", "medium", "high"] = "medium"
    compress: bool = False
    policy: Literal["lru", "lfu", "fifo", "random"] = "lru"
    codec: Literal["json", "msgpack"] = "json"
    max_entries: int | None = Field(default=None, ge=1)  # per namespace; None = only the global limits


def default_cache_namespaces() -> dict[str, CacheNamespaceSettings]:
    """The namespaces of issue 13 (also spelled out in config/cache.yml), for a checkout without config/."""
    table: tuple[tuple[str, float, Literal["low", "medium", "high"], bool, Literal["json", "msgpack"]], ...] = (
        ("room_state", 30, "high", False, "json"),
        ("track_queue", 60, "high", False, "json"),
        ("user_data", 600, "medium", True, "json"),
        ("file_metadata", 3600, "low", True, "json"),
        ("api_response", 30, "medium", False, "msgpack"),
        ("db_query", 180, "high", True, "json"),
    )
    return {
        name: CacheNamespaceSettings(ttl=ttl, priority=priority, compress=compress, codec=codec)
        for name, ttl, priority, compress, codec in table
    }


@functools.lru_cache(maxsize=64)
def resolved(path: Path) -> Path:
    """``path.resolve()``, once per path: the storage roots are read on every request that lists files (a few
    syscalls each time, 5 % of a cached queue read) and do not move while the server runs."""
    return path.resolve()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", validate_default=True)

    env: Environment = Field(default=Environment.DEVELOPMENT, validation_alias=AliasChoices("SPOTIK_ENV", "env"))

    # HTTP server
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    graceful_shutdown_timeout: float = Field(default=10.0, gt=0)
    # Slow and idle HTTP clients (`spotik serve`; uvicorn itself bounds neither): a request's headers must arrive
    # within HTTP_HEADER_TIMEOUT of its first byte (or of the connection); a body may pause at most
    # HTTP_BODY_TIMEOUT between two reads, and must bring at least HTTP_BODY_MIN_RATE bytes/s on average over each
    # window of HTTP_BODY_MIN_RATE_WINDOW seconds (0 = no minimum). Breaking one answers 408 and closes.
    http_header_timeout: float = Field(default=10.0, gt=0)  # s
    http_body_timeout: float = Field(default=30.0, gt=0)  # s
    http_body_min_rate: int = Field(default=512, ge=0)  # bytes/s
    http_body_min_rate_window: float = Field(default=10.0, gt=0)  # s
    # How long an idle kept-alive connection stays open. Longer than the clients' and load balancers' own idle
    # timeouts (browsers, AWS ALB 60 s, httpx 5 s), so that they always close first: a server closing at the moment
    # a client reuses the connection loses that request (a reset; uvicorn's default, 5 s, equals httpx's).
    http_keep_alive_timeout: int = Field(default=65, ge=1)  # s

    # Database: DATABASE_URL, else DB_HOST & co (PostgreSQL), else a SQLite file under storage_path.
    database_url: str | None = None
    db_host: str | None = None
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_database: str = "spotik"
    db_username: str = "spotik_user"
    db_password: str = ""
    db_pool_max: int = Field(default=10, ge=1, le=1000)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_pool_recycle: float = Field(default=10.0, gt=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    auto_migrate: bool = True

    # Storage
    storage_path: Path = Path("./storage")
    audio_storage_path: Path | None = None
    public_storage_path: Path | None = None
    max_upload_mb: int = Field(default=50, ge=1, le=10_240)
    # Every other body: JSON and form bodies (413 past it, envelope A), and a cover's request (413, envelope B). The
    # cover's default leaves room for a data URL of a full-size cover (4/3 of Laravel's 5120 KB rule) and the form
    # around it, so that such bodies reach the validation rules (422, Laravel's messages).
    max_body_kb: int = Field(default=1024, ge=1, le=1_048_576)
    max_cover_body_kb: int = Field(default=8192, ge=1, le=1_048_576)
    # `.upload-*.part` files older than this are leftovers of a crashed process, removed when `spotik serve` starts
    # (younger ones may belong to another instance sharing the storage, uploading now).
    upload_temp_max_age: float = Field(default=3600.0, ge=0)  # s

    # Auth (the Laravel backend's names)
    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_ttl: int = Field(default=60, ge=1)  # minutes
    jwt_refresh_ttl: int = Field(default=20160, ge=1)  # minutes, counted from the original iat
    jwt_blacklist_enabled: bool = True
    # Seconds a token replaced by /refresh stays usable (tymon's JWT_BLACKLIST_GRACE_PERIOD): the web client
    # refreshes from two places at once on page load. Logout revokes at once.
    jwt_blacklist_grace_period: int = Field(default=30, ge=0, le=3600)
    jwt_leeway: int = Field(default=0, ge=0)  # seconds
    bcrypt_cost: int = Field(default=12, ge=4, le=31)

    # Shared infrastructure
    redis_url: str | None = None
    # Connections per Redis client and instance (the broker, the cache tier, the rate limits each have a pool); past
    # it a call waits for a free connection (within that client's timeout) rather than failing.
    redis_max_connections: int = Field(default=50, ge=2)

    # Browsers: exact origins, "*" for any, or "loopback" for any http(s) origin on a loopback host.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Logging
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "console"] = "console"

    # Monitoring and protection (names kept from the settings files Spotik started from)
    enable_performance_monitoring: bool = True
    slow_query_threshold: float = Field(default=1000.0, gt=0)  # ms
    slow_request_threshold: float = Field(default=2000.0, gt=0)  # ms
    rate_limiting_enabled: bool = True
    max_requests_per_hour: int = Field(default=1000, ge=1)
    ws_max_connections: int = Field(default=1000, ge=1)
    ws_ping_interval: float = Field(default=30.0, gt=0)  # s
    ws_activity_timeout: float = Field(default=600.0, gt=0)  # s
    performance_admins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Real time (/ws): limits, keepalive, queues, fan-out through Redis, memory monitor
    ws_max_connections_per_room: int = Field(default=100, ge=1)
    ws_ping_timeout: float = Field(default=20.0, gt=0)  # s
    ws_sweep_interval: float = Field(default=300.0, gt=0)  # s, stale-connection sweep
    ws_sweep_budget: float = Field(default=0.1, ge=0)  # s of work per sweep slice
    ws_queue_size: int = Field(default=100, ge=1)  # non-critical messages queued per connection
    ws_batch_size: int = Field(default=10, ge=1)  # messages per write batch
    ws_send_timeout: float = Field(default=10.0, gt=0)  # s before a stuck client is cut off
    ws_close_timeout: float = Field(default=5.0, gt=0)  # s
    ws_max_message_bytes: int = Field(default=65_536, ge=1024)  # larger client frames close with 1009
    ws_per_message_deflate: bool = False  # permessage-deflate: ~33 KiB more per socket, 2-3x slower broadcasts
    ws_client_compat_events: bool = True  # follow-ups the original web client understands (realtime/compat.py)
    ws_redis_prefix: str = "spotik:ws"
    ws_presence_ttl: float = Field(default=60.0, gt=0)  # s
    ws_redis_reconnect_max: float = Field(default=5.0, gt=0)  # s, backoff ceiling
    memory_warning_mb: float = Field(default=200.0, gt=0)
    memory_critical_mb: float = Field(default=400.0, gt=0)
    memory_sample_interval: float = Field(default=10.0, gt=0)  # s
    gc_young_every_connections: int = Field(default=500, ge=1)
    gc_full_min_interval: float = Field(default=1800.0, gt=0)  # s

    # Middleware stack (spotik.performance): each layer can be switched off; limits use the `limits` syntax
    # ("10/minute", "60 per 10 seconds"). List settings accept comma-separated environment values.
    slow_query_explain: bool | None = None  # log EXPLAIN of slow SELECTs; None = only in development
    n_plus_one_threshold: int = Field(default=5, ge=2)  # identical statements in one request flagged at this count
    memory_sample_every: int = Field(default=50, ge=0)  # sample RSS around 1 request in N (0 = off)
    memory_window_size: int = Field(default=1000, ge=1)  # samples kept in the sliding window
    security_headers_enabled: bool = True
    content_security_policy: str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    x_frame_options: str = "DENY"  # empty = header not sent (same for the three below)
    referrer_policy: str = "strict-origin-when-cross-origin"
    permissions_policy: str = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
    hsts_max_age: int = Field(default=31_536_000, ge=0)  # s; sent only over TLS; 0 = no HSTS
    hsts_include_subdomains: bool = False
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)  # IPs/CIDRs; XFF honoured
    gzip_enabled: bool = True
    gzip_level: int = Field(default=5, ge=1, le=9)
    gzip_min_size: int = Field(default=1024, ge=0)  # bytes; bodies larger than this are compressed
    rate_limit_burst: str = "60/10 seconds"  # per client IP, on top of MAX_REQUESTS_PER_HOUR
    rate_limit_login: str = "10/minute"  # per client IP, POST /api/auth/login
    rate_limit_register: str = "10/hour"  # per client IP, POST /api/auth/register
    rate_limit_strategy: Literal["fixed-window", "sliding-window-counter", "moving-window"] = "fixed-window"
    rate_limit_key_prefix: str = "spotik:ratelimit"  # shared by every instance using the same REDIS_URL
    rate_limit_exempt_paths: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(PROBE_PATHS))

    # Cache (spotik.cache): namespaces come from config/cache.yml (CACHE_NAMESPACES as JSON overrides the whole map)
    cache_enabled: bool = True  # false: every lookup misses and get_or_compute just computes
    cache_namespaces: dict[str, CacheNamespaceSettings] = Field(default_factory=default_cache_namespaces)
    cache_max_entries: int = Field(default=10_000, ge=1)  # global, across namespaces
    cache_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)  # global: encoded bytes + per-entry overhead
    cache_compress_threshold: int = Field(default=1024, ge=0)  # bytes; larger encoded values are zlib-compressed
    cache_cleanup_interval: float = Field(default=300.0, gt=0)  # s between sweeps of expired entries
    cache_stats_interval: float = Field(default=60.0, gt=0)  # s between statistics log lines
    cache_redis_prefix: str = "spotik:cache:"  # keys and the invalidation channel of the shared tier (REDIS_URL)
    cache_redis_timeout: float = Field(default=0.25, gt=0)  # s, socket timeout of every cache Redis call
    cache_redis_reconnect_max: float = Field(default=5.0, gt=0)  # s, backoff ceiling
    cache_degraded_ttl: float = Field(default=5.0, gt=0)  # s, local TTL cap while Redis is unreachable
    # Start-up warm-up (spotik.rooms.warmup): the state and queue of at most this many active rooms (playing, or
    # changed within the window), in the background, given up after cache_warmup_seconds.
    cache_warmup_rooms: int = Field(default=50, ge=0)
    cache_warmup_window: float = Field(default=3600.0, ge=0)  # s
    cache_warmup_seconds: float = Field(default=5.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment must be known before the YAML layers are chosen; this is the one place that reads it.
        env = os.environ.get("SPOTIK_ENV", Environment.DEVELOPMENT.value).strip().lower()
        config_dir = Path(os.environ.get("SPOTIK_CONFIG_DIR") or _default_config_dir())
        yaml_layers = _YamlLayers(settings_cls, config_dir, env)
        return init_settings, env_settings, yaml_layers

    @field_validator("cors_origins", "performance_admins", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies", "rate_limit_exempt_paths", mode="before")
    @classmethod
    def _split_monitoring_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxy_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @field_validator("rate_limit_burst", "rate_limit_login", "rate_limit_register")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        try:
            parse_rate_limit(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit such as '10/minute' or '60 per 10 seconds'") from None
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        if self.env is Environment.PRODUCTION:
            if self.jwt_secret == DEFAULT_JWT_SECRET:
                raise ValueError("JWT_SECRET must be set in production (the built-in default is refused)")
            if len(self.jwt_secret.encode()) < MIN_JWT_SECRET_LENGTH:
                raise ValueError(f"JWT_SECRET must be at least {MIN_JWT_SECRET_LENGTH} bytes in production")
        return self

    @property
    def audio_root(self) -> Path:
        return resolved(self.audio_storage_path or self.storage_path / "audio")

    @property
    def public_root(self) -> Path:
        return resolved(self.public_storage_path or self.storage_path / "public")

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_kb * 1024

    @property
    def max_cover_body_bytes(self) -> int:
        return self.max_cover_body_kb * 1024

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        if self.db_host:
            user = quote(self.db_username, safe="")
            password = f":{quote(self.db_password, safe='')}" if self.db_password else ""
            return (
                f"postgresql+asyncpg://{user}{password}@{self.db_host}:{self.db_port}/"
                f"{quote(self.db_database, safe='')}"
            )
        return f"sqlite+aiosqlite:///{(self.storage_path / 'spotik.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")


def normalise_database_url(url: str) -> str:
    """Accept the usual spellings (postgres://, postgresql://, sqlite:///) and pick the async drivers."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def describe_validation_error(error: ValidationError) -> str:
    """One line naming the setting (as its environment variable) and the problem."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "__root__"]
    name = location[0].upper() if location else ""
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if not name:
        return f"invalid settings: {message}"
    value = first.get("input")
    shown = f"={value!r}" if isinstance(value, str | int | float) and "SECRET" not in name else ""
    return f"invalid setting {name}{shown}: {message}"
