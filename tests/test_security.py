"""Hostile input: every parser fuzzed with hypothesis must refuse clearly and never crash;
body limits, rate limits and secrets kept out of the logs."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from adshub.contract import Inbound
from adshub.errors import ForgedInput, InvalidInput
from adshub.logs import JsonFormatter, mask_secrets
from app.runtime import Hub
from channels.mime import ParsedMail, parse_mail
from channels.telegram import parse_update
from channels.vk import parse_event
from channels.voicemail.asterisk import read_message_file, spool_inbound
from channels.voicemail.mango import missed_call, transcript_text, verify_mango
from channels.voicemail.webhook import hook_inbound
from channels.webchat import FrameError, parse_frame
from tests.helpers import SHARED, cleanup_topology, make_settings

EXAMPLES = int(os.environ.get("ADSHUB_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=True), st.text(max_size=50)
)
TG_KEYS = [
    "update_id",
    "message",
    "edited_message",
    "callback_query",
    "chat",
    "id",
    "type",
    "from",
    "text",
    "caption",
    "date",
    "message_id",
    "photo",
    "voice",
    "document",
    "location",
    "contact",
    "file_id",
    "latitude",
    "longitude",
    "phone_number",
    "user_id",
    "is_bot",
    "username",
    "data",
    "edit_date",
    "reply_to_message",
    "entities",
    "first_name",
    "file_size",
    "width",
    "height",
]
VK_KEYS = [
    "type",
    "object",
    "message",
    "peer_id",
    "from_id",
    "text",
    "conversation_message_id",
    "id",
    "date",
    "attachments",
    "photo",
    "sizes",
    "url",
    "geo",
    "coordinates",
    "latitude",
    "longitude",
    "out",
    "payload",
    "event_id",
    "user_id",
    "group_id",
    "update_time",
]


def json_like(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)), children, max_size=6),
        ),
        max_leaves=25,
    )


def sample_dicts(folder: str) -> list[dict[str, Any]]:
    path = SHARED / "samples" / folder
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(path.glob("*.json"))] if path.exists() else []


def mutate(value: Any, rnd: random.Random, junk: Any) -> Any:
    """Replace one nested value of a real payload with junk."""
    if isinstance(value, dict) and value:
        key = rnd.choice(list(value))
        return {**value, key: mutate(value[key], rnd, junk) if rnd.random() < 0.6 else junk}
    if isinstance(value, list) and value:
        index = rnd.randrange(len(value))
        return [*value[:index], mutate(value[index], rnd, junk), *value[index + 1 :]]
    return junk


@FUZZ
@given(json_like(TG_KEYS))
def test_fuzz_telegram_updates(raw: Any) -> None:
    try:
        result = parse_update(raw, username="TestDispatchBot")
    except InvalidInput:
        return
    assert result is None or isinstance(result, Inbound)


@FUZZ
@given(st.integers(0, 10**6), json_like(TG_KEYS))
def test_fuzz_telegram_mutated_samples(seed: int, junk: Any) -> None:
    samples = sample_dicts("telegram") or [
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "chat": {"id": 1, "type": "private"},
                "from": {"id": 1},
                "date": 0,
                "text": "x",
            },
        }
    ]
    rnd = random.Random(seed)
    try:
        result = parse_update(mutate(rnd.choice(samples), rnd, junk))
    except InvalidInput:
        return
    assert result is None or isinstance(result, Inbound)


@FUZZ
@given(st.integers(0, 10**6), json_like(VK_KEYS))
def test_fuzz_vk_events(seed: int, junk: Any) -> None:
    samples = [s for s in sample_dicts("vk") if "type" in s] or [{"type": "message_new", "object": {}}]
    rnd = random.Random(seed)
    for raw in (junk, mutate(rnd.choice(samples), rnd, junk)):
        try:
            result = parse_event(raw, 200000001)
        except InvalidInput:
            continue
        assert result is None or isinstance(result, Inbound)


def eml_samples() -> list[bytes]:
    path = SHARED / "samples" / "email"
    return (
        [p.read_bytes() for p in sorted(path.glob("*.eml"))]
        if path.exists()
        else [
            b"From: a@b.ru\r\nSubject: =?koi8-r?B?4czGwdfJ1Ao=?=\r\n"
            b"Content-Type: text/plain; charset=koi8-r\r\n\r\nbody"
        ]
    )


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_mime_random_bytes(raw: bytes) -> None:
    assert isinstance(parse_mail(raw), ParsedMail)


@FUZZ
@given(st.integers(0, 10**6), st.binary(min_size=1, max_size=40))
def test_fuzz_mime_mutated_real_mail(seed: int, junk: bytes) -> None:
    rnd = random.Random(seed)
    raw = bytearray(rnd.choice(eml_samples()))
    for _ in range(rnd.randint(1, 5)):
        if not raw:
            break
        at = rnd.randrange(len(raw))
        action = rnd.random()
        if action < 0.4:
            raw[at : at + len(junk)] = junk
        elif action < 0.7:
            del raw[at : at + rnd.randint(1, 200)]
        else:
            raw[at:at] = junk
    mail = parse_mail(bytes(raw))
    assert isinstance(mail, ParsedMail) and isinstance(mail.text, str)


@FUZZ
@given(body=st.text(max_size=600), prefix=st.sampled_from(["", "[message]\n", ";\n[message]\ncallerid="]))
def test_fuzz_asterisk_message_files(body: str, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("spool") / "msg0000.txt"
    path.write_bytes((prefix + body).encode("utf-8", errors="replace"))
    try:
        info = read_message_file(path)
    except InvalidInput:
        return
    from channels.voicemail.asterisk import SpoolMessage

    inbound = spool_inbound(
        SpoolMessage(
            key="k", mailbox="1234", folder="INBOX", info=info, transcript=body or None, recording=None, path=path
        ),
        "default",
    )
    assert isinstance(inbound, Inbound)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["vpbx_api_key", "sign", "json", "x"]), st.text(max_size=80), max_size=4),
    json_like(
        [
            "entry_id",
            "call_direction",
            "talk_time",
            "from",
            "number",
            "end_time",
            "create_time",
            "data",
            "transcribes",
            "channel",
            "word",
            "phrases",
            "request_id",
        ]
    ),
)
def test_fuzz_mango_bodies(form: dict[str, str], data: Any) -> None:
    try:
        verify_mango(form, "key", "salt")
    except InvalidInput:
        pass
    for call in (
        lambda: missed_call(data if isinstance(data, dict) else {}),
        lambda: transcript_text(data if isinstance(data, dict) else {}, "1"),
    ):
        try:
            call()
        except InvalidInput:
            pass


@FUZZ
@given(json_like(["id", "kind", "caller", "caller_name", "received_at", "transcript", "recording_url", "duration"]))
def test_fuzz_generic_voicemail_webhook(data: Any) -> None:
    try:
        assert isinstance(hook_inbound(data), Inbound)
    except InvalidInput:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=300), json_like(["type", "id", "text", "data"]).map(json.dumps)))
def test_fuzz_chat_frames(raw: str) -> None:
    try:
        frame = parse_frame(raw)
    except FrameError as exc:
        assert exc.code in ("too_large", "bad_json", "bad_frame", "unknown_type", "bad_id", "empty_text", "too_long")
        return
    assert frame["type"] in ("message", "button", "ping", "history")


def test_forged_mango_form_is_forged_not_malformed() -> None:
    with pytest.raises(ForgedInput):
        verify_mango({"vpbx_api_key": "key", "sign": "0" * 64, "json": "{}"}, "key", "salt")


def test_secrets_are_masked_in_logs() -> None:
    line = (
        "connecting amqp://adshub:p4ssw0rd@rabbit:5672/ and imaps://ads%40uk.example:imap-secret@imap:993/INBOX "
        "bot123456789:AAEhBOweik6ad6PsVMRxjeQKzaaY-L2zUI0 access_token=vk1.a.secret-token&v=5.199"
    )
    masked = mask_secrets(line)
    for secret in ("p4ssw0rd", "imap-secret", "AAEhBOweik6ad6PsVMRxjeQKzaaY-L2zUI0", "vk1.a.secret-token"):
        assert secret not in masked
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "url %s", (line,), None)
    assert "p4ssw0rd" not in JsonFormatter().format(record)


def test_settings_do_not_print_secrets(tmp_path: Path) -> None:
    from adshub.settings import Settings

    s = Settings(_env_file=None, telegram_token=SecretStr("123:very-secret"), mango_api_salt=SecretStr("salty"))
    assert "very-secret" not in repr(s) and "salty" not in str(s.model_dump())


async def test_hub_logs_no_secrets_and_limits_bodies(
    database: Any, rabbitmq: str, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "424242:TOKEN-that-must-never-be-logged"
    settings = make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        telegram_token=token,
        telegram_api_base="http://127.0.0.1:9",
        voicemail_webhook_secret="hook-secret-value",
        chat_ip_rate_per_minute=5,
    )
    hub = Hub(settings, ["router", "webchat", "telegram", "voicemail"])
    caplog.set_level(logging.DEBUG)
    await hub.start()
    try:
        async with aiohttp.ClientSession() as http:
            big = b"{" + b" " * (settings.max_body_bytes + 10) + b"}"
            async with http.post(
                f"http://127.0.0.1:{hub.port}/telephony/voicemail",
                data=big,
                headers={"X-Adshub-Timestamp": str(int(time.time())), "X-Adshub-Signature": "sha256=0"},
            ) as r:
                assert r.status == 413
            codes = []
            for n in range(3):
                async with http.ws_connect(f"http://127.0.0.1:{hub.port}/chat/ws?session=ipratelimit{n:04d}") as ws:
                    await ws.receive_json()
                    for m in range(3):
                        await ws.send_json({"type": "message", "id": f"m{m}", "text": "тест"})
                        frame = await ws.receive_json()
                        codes.append(frame.get("code") or frame["type"])
            assert codes.count("rate_limited") >= 4
    finally:
        await hub.stop()
        await cleanup_topology(settings)
    text = caplog.text + "".join(JsonFormatter().format(r) for r in caplog.records)
    assert "TOKEN-that-must-never-be-logged" not in text
    assert "hook-secret-value" not in text
