"""Settings fail loudly and clearly; the contract refuses what it cannot carry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from adshub.contract import Inbound, Outbound, Sender
from adshub.errors import ConfigurationError
from adshub.settings import load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ADSHUB_MONGO_URL", "ADSHUB_AMQP_URL", "ADSHUB_HTTP_PORT", "ADSHUB_TZ"):
        monkeypatch.delenv(key, raising=False)
    s = load_settings(_env_file=None)
    assert s.mongo_url == "mongodb://127.0.0.1:27017/adshub"
    assert s.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert (s.http_host, s.http_port, s.tz) == ("127.0.0.1", 8080, "Europe/Moscow")
    assert s.database_name == "adshub" and s.mongo_on_loopback


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ADSHUB_HTTP_PORT", "eighty"),
        ("ADSHUB_TZ", "Mars/Olympus"),
        ("ADSHUB_MONGO_URL", "postgres://x"),
        ("ADSHUB_AMQP_URL", "http://rabbit"),
    ],
)
def test_a_wrong_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings(_env_file=None)
    assert variable in str(info.value)


def test_inbound_id_must_name_its_channel_and_time_must_be_aware() -> None:
    base = {"channel": "webchat", "address": "s", "sender": Sender(id="s"), "text": "x"}
    with pytest.raises(ValidationError):
        Inbound(id="telegram:1", received_at=datetime.now(UTC), **base)
    with pytest.raises(ValidationError):
        Inbound(id="webchat:1", received_at=datetime(2026, 1, 1), **base)
    ok = Inbound(id="webchat:1", received_at=datetime.now(UTC), **base)
    assert ok.conversation_key == "webchat:s" and ok.identity == "webchat:s"


def test_outbound_numeric_id_is_stable_and_nonzero() -> None:
    a = Outbound(id="vk:1:2#reply", channel="vk", address="1", text="x")
    b = Outbound(id="vk:1:2#reply", channel="vk", address="1", text="y")
    c = Outbound(id="vk:1:3#reply", channel="vk", address="1", text="x")
    assert a.numeric_id == b.numeric_id != c.numeric_id
    assert 0 < a.numeric_id < 2**31
