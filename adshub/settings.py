"""Settings from the environment (prefix ``ADSHUB_``) and an optional ``.env`` file.

Everything external is configurable so that tests can point the hub at loopback
stand-ins and a company can point it at its own servers. A wrong value stops the
hub at start with a message naming the variable, never later at 3 a.m.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adshub.errors import ConfigurationError

ENV_PREFIX = "ADSHUB_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore")

    mongo_url: str = "mongodb://127.0.0.1:27017/adshub"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)
    tz: str = "Europe/Moscow"
    company_name: str = "Управляющая компания"
    company_phone: str = ""
    public_url: str = ""

    bus_prefix: str = Field("adshub", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
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

    secret_key: SecretStr = SecretStr("")
    cookie_secure: bool = False
    chat_allowed_origins: str = ""
    chat_rate_per_minute: int = Field(20, ge=1)
    chat_ip_rate_per_minute: int = Field(120, ge=1)
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    max_attachment_bytes: int = Field(20 * 1024 * 1024, ge=1024)

    telegram_token: SecretStr = SecretStr("")
    telegram_api_base: str = "https://api.telegram.org"
    telegram_webhook_url: str = ""
    telegram_webhook_secret: SecretStr = SecretStr("")
    telegram_poll_timeout: int = Field(25, ge=0, le=50)

    vk_token: SecretStr = SecretStr("")
    vk_group_id: int = 0
    vk_api_base: str = "https://api.vk.ru/method"
    vk_api_version: str = "5.199"
    vk_wait: int = Field(25, ge=1, le=90)

    imap_url: SecretStr = SecretStr("")
    imap_poll_seconds: float = Field(30.0, gt=0)
    smtp_url: SecretStr = SecretStr("")
    email_from: str = ""

    voicemail_spool: Path | None = None
    voicemail_poll_seconds: float = Field(2.0, gt=0)
    voicemail_webhook_secret: SecretStr = SecretStr("")
    mango_api_key: SecretStr = SecretStr("")
    mango_api_salt: SecretStr = SecretStr("")
    mango_api_base: str = "https://app.mango-office.ru/vpbx"

    municipality_email: str = ""

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

    @field_validator("telegram_api_base", "vk_api_base", "mango_api_base", "telegram_webhook_url", "public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("imap_url")
    @classmethod
    def _imap_scheme(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and urlsplit(raw).scheme not in ("imap", "imaps"):
            raise ValueError("must be imap://user:pass@host:port/MAILBOX or imaps://…")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and urlsplit(raw).scheme not in ("smtp", "smtps"):
            raise ValueError("must be smtp://user:pass@host:port or smtps://…")
        return value

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

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    @property
    def allowed_chat_origins(self) -> set[str]:
        return {o.strip().rstrip("/") for o in self.chat_allowed_origins.split(",") if o.strip()}


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            lines.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(lines)) from None
