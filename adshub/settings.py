"""Settings from the environment (prefix ``ADSHUB_``) and an optional ``.env`` file.

Everything external is configurable so that tests can point the hub at loopback
stand-ins and a company can point it at its own servers. A wrong value stops the
hub at start with a message naming the variable, never later at 3 a.m.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adshub.errors import ConfigurationError

ENV_PREFIX = "ADSHUB_"


class Settings(BaseSettings):
    """The hub's own settings. Each channel owns its settings model (``ChannelSettings``) and reads it through
    ``channel()``; unknown names given here are kept for those models."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="allow")

    mongo_url: str = "mongodb://127.0.0.1:27017/adshub"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)
    tz: str = "Europe/Moscow"
    company_name: str = "Управляющая компания"
    company_phone: str = ""
    public_url: str = ""

    bus_prefix: str = Field("adshub", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    router_shards: int = Field(4, ge=1, le=256)
    """Inbound queues the conversations are spread over; routers share them (the same number everywhere)."""
    queue_type: str = Field("classic", pattern=r"^(classic|quorum)$")
    prefetch: int = Field(64, ge=1, le=10_000)
    data_dir: Path = Path("var")
    embedded_db: bool = True
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field("json", pattern=r"^(json|text)$")

    inform_minutes: int = Field(30, ge=1, le=24 * 60)
    review_minutes: int = Field(10, ge=1, le=24 * 60)
    callback_minutes: int = Field(10, ge=1, le=24 * 60)
    handoff_minutes: int = Field(5, ge=1, le=60)
    clock_warning_minutes: int = Field(5, ge=0, le=24 * 60)

    cookie_secure: bool = False
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    max_attachment_bytes: int = Field(20 * 1024 * 1024, ge=1024)

    municipality_email: str = ""
    manager_alerts: str = Field("", max_length=2000)
    """Where to tell managers that a clock broke while nobody had the inbox open: ``channel:address`` items,
    comma-separated («email:boss@uk.example, telegram:123456789»)."""

    @property
    def manager_alert_targets(self) -> list[tuple[str, str]]:
        targets = []
        for item in self.manager_alerts.split(","):
            channel, _, address = item.strip().partition(":")
            if channel and address.strip():
                targets.append((channel.strip().lower(), address.strip()))
        return targets

    _env_file: Any = PrivateAttr(default=".env")
    _channels: dict[type[BaseSettings], BaseSettings] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._env_file = values.get("_env_file", ".env")

    @field_validator("manager_alerts")
    @classmethod
    def _alert_targets(cls, value: str) -> str:
        for item in value.split(","):
            if item.strip() and ":" not in item:
                raise ValueError(f"manager alert target {item.strip()!r} is not channel:address")
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("mongo_url")
    @classmethod
    def _mongo_scheme(cls, value: str) -> str:
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return http_url(value)

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def database_name(self) -> str:
        path = urlsplit(self.mongo_url).path.strip("/")
        return path or "adshub"

    @property
    def mongo_on_loopback(self) -> bool:
        host = urlsplit(self.mongo_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def channel(self, model: type[C]) -> C:
        """The settings a channel owns (``model``), read from the same environment and ``.env`` file.

        Values given to ``Settings(...)`` directly (tests, embedding code) for the channel's fields win."""
        found = self._channels.get(model)
        if found is None:
            extra = self.model_extra or {}
            overrides = {k: v for k, v in extra.items() if k in model.model_fields}
            found = _validated(lambda: model(_env_file=self._env_file, **overrides))
            self._channels[model] = found
        return cast(C, found)


class ChannelSettings(BaseSettings):
    """What a channel reads from the environment: its own fields under the hub's ``ADSHUB_`` prefix."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore")


C = TypeVar("C", bound=BaseSettings)
T = TypeVar("T")


def http_url(value: str) -> str:
    """An http(s) base URL without its trailing slash; empty stays empty."""
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _validated(make: Callable[[], T]) -> T:
    """Build settings, turning a validation error into one line per bad variable."""
    try:
        return make()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            lines.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_settings(**overrides: Any) -> Settings:
    """Read the hub's settings; a wrong value names its variable."""
    return _validated(lambda: Settings(**overrides))
