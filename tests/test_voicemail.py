"""Telephony: Asterisk voicemail spools, MANGO OFFICE webhooks, the generic signed webhook,
and the 10-minute review and callback clocks."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adshub.errors import ForgedInput
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from channels.voicemail.asterisk import parse_callerid, read_message_file, scan_spool
from channels.voicemail.mango import mango_sign, missed_call, transcript_text, verify_mango
from channels.voicemail.webhook import hook_signature
from journal.repository import Journal
from tests.helpers import cleanup_topology, make_settings, shared_path, wait_for

KEY, SALT = "test_vpbx_api_key", "test_vpbx_api_salt"


def mango_json(name: str) -> dict[str, Any]:
    return json.loads(shared_path("samples", "voicemail", "mango", name).read_text(encoding="utf-8"))


# -- pure parsing ------------------------------------------------------------------


def test_asterisk_message_files_of_every_layout() -> None:
    base = shared_path("samples", "voicemail", "asterisk")
    new = read_message_file(base / "default" / "1234" / "INBOX" / "msg0000.txt")
    assert parse_callerid(new["callerid"]) == ("Ivan Petrov", "79161234567") and new["duration"] == "23"
    old = read_message_file(base / "default" / "1234" / "INBOX" / "msg0001.txt")
    assert parse_callerid(old["callerid"]) == ("Анна Смирнова", "+79031112233") and old["macrocontext"] == "ext-local"
    urgent = read_message_file(base / "default" / "1234" / "Urgent" / "msg0000.txt")
    assert parse_callerid(urgent["callerid"]) == (None, None) and urgent["flag"] == "Urgent"
    suite = read_message_file(base / "testsuite" / "msg0000.txt")
    assert parse_callerid(suite["callerid"]) == ("Anonymous", "555-5555") and suite["msg_id"] == "1312927513-0"
    found = scan_spool(base / "default")
    assert sorted((m.folder, m.key) for m in found) == [
        ("INBOX", "1735712400-0000001a"),
        ("INBOX", "1735716000-0000001b"),
        ("Urgent", "1735720000-0000001c"),
    ]


def test_mango_signature_of_the_documented_wire_format() -> None:
    raw = shared_path("samples", "voicemail", "mango", "08_events_call_form_body.constructed.txt").read_text().strip()
    form = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
    assert verify_mango(form, KEY, SALT)["call_state"] == "Disconnected"
    with pytest.raises(ForgedInput):
        verify_mango({**form, "sign": "0" * 64}, KEY, SALT)
    with pytest.raises(ForgedInput):
        verify_mango(form, KEY, "another-salt")


def test_missed_call_is_a_summary_without_talk() -> None:
    assert missed_call(mango_json("03_events_summary_incoming_answered.doc.json")) is None
    missed = missed_call(mango_json("04_events_summary_ivr_no_talk.doc.json"))
    assert missed is not None and missed.kind == "missed_call" and missed.sender.phone == "+79000000000"


def test_transcript_text_from_both_answer_shapes() -> None:
    phrases = mango_json("07_recording_transcripts_response.doc-partial.json")
    assert transcript_text(phrases, "x") == "спасибо до свидания"
    tasks = {
        "result": 1000,
        "data": {
            "77": {
                "status": "ready",
                "transcribes": [
                    {"channel": "client", "data": [{"word": "течёт"}, {"word": "батарея"}, {"word": "."}]},
                    {"channel": "operator", "data": [{"word": "алло"}]},
                ],
            }
        },
    }
    assert transcript_text(tasks, "77") == "течёт батарея."


# -- end to end ----------------------------------------------------------------------


class MangoApi:
    """A stand-in of the Mango API method that returns recognition results."""

    def __init__(self) -> None:
        self.tasks: dict[str, str] = {}
        self.calls: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/vpbx/transcribes/tasks/", self.transcribes)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def transcribes(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.calls.append(form)
        if form.get("sign") != mango_sign(KEY, form.get("json", ""), SALT):
            return web.json_response({"result": 3102}, status=401)
        ids = json.loads(form["json"])["request_ids"]
        data = {
            i: {
                "status": "ready",
                "transcribes": [
                    {"channel": "client", "data": [{"word": w} for w in self.tasks.get(str(i), "").split()]}
                ],
            }
            for i in ids
        }
        return web.json_response({"result": 1000, "data": data})


@pytest.fixture
async def mango_api() -> AsyncIterator[MangoApi]:
    api = MangoApi()
    await api.start()
    yield api
    assert api.runner is not None
    await api.runner.cleanup()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    root = tmp_path / "voicemail" / "default"
    (root / "1234" / "INBOX").mkdir(parents=True)
    return root


@pytest.fixture
def vm_settings(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, spool: Path, mango_api: MangoApi
) -> Settings:
    return make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        voicemail_spool=spool,
        voicemail_poll_seconds=0.3,
        mango_api_key=KEY,
        mango_api_salt=SALT,
        voicemail_webhook_secret="hook-secret",
        mango_api_base=f"http://127.0.0.1:{mango_api.port}/vpbx",
    )


@pytest.fixture
async def vm_hub(vm_settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(vm_settings, ["router", "voicemail"])
    await hub.start()
    yield hub
    await hub.stop()
    await cleanup_topology(vm_settings)


def put_voicemail(spool: Path, number: str, origtime: int, callerid: str, transcript: str | None) -> None:
    folder = spool / "1234" / "INBOX"
    (folder / f"msg{number}.wav").write_bytes(b"RIFF0000WAVEfmt ")
    if transcript is not None:
        (folder / f"msg{number}.transcript.txt").write_text(transcript, encoding="utf-8")
    (folder / f"msg{number}.txt").write_text(
        ";\n; Message Information file\n;\n[message]\norigmailbox=1234\ncontext=default\n"
        f"callerid={callerid}\norigtime={origtime}\nmsg_id={origtime}-{number}\nflag=\nduration=31\n",
        encoding="utf-8",
    )


async def test_asterisk_voicemail_with_transcript_becomes_a_request_with_a_10_minute_review(
    vm_hub: Hub, vm_settings: Settings, spool: Path
) -> None:
    now = int(time.time())
    put_voicemail(
        spool,
        "0000",
        now,
        '"Иван Петров" <89161234567>',
        "алло здравствуйте у нас в подъезде пахнет газом дом пять по набережной",
    )
    j = Journal.connect(vm_settings.mongo_url, vm_settings.database_name)
    try:
        request = await wait_for(lambda: j.requests.find_one({"channel": "voicemail"}))
        assert request["category"] == "gas_smell" and request["emergency"]
        review = request["clocks"]["review"]
        assert review["due_at"] - request["received_at"] == timedelta(minutes=10)
        message = await wait_for(lambda: j.messages.find_one({"_id": request["source_message_id"]}))
        assert message["review"]["due_at"] - message["at"] == timedelta(minutes=10)
        assert message["attachments"][0]["location"].endswith("msg0000.wav")
        task = await wait_for(lambda: j.tasks.find_one({"request_number": request["_id"]}))
        assert task["phone"] == "+79161234567" and task["due_at"] - task["missed_at"] == timedelta(minutes=10)
        contact = await j.contacts.find_one({"_id": request["contact_id"]})
        assert "phone:+79161234567" in contact["identities"]
        assert await j.messages.count_documents({"direction": "out"}) == 0
    finally:
        await j.close()


async def test_a_transcript_that_arrives_later_is_attached_to_the_same_voicemail(
    vm_hub: Hub, vm_settings: Settings, spool: Path
) -> None:
    put_voicemail(spool, "0001", int(time.time()), '"Анна" <+79031112233>', None)
    j = Journal.connect(vm_settings.mongo_url, vm_settings.database_name)
    try:
        first = await wait_for(lambda: j.requests.find_one({"channel": "voicemail"}))
        assert first["category"] == "other"
        (spool / "1234" / "INBOX" / "msg0001.transcript.txt").write_text(
            "у нас засор канализации вода в ванной стоит и у соседей снизу тоже", encoding="utf-8"
        )
        updated = await wait_for(lambda: j.requests.find_one({"_id": first["_id"], "category": "sewer_clog"}))
        assert updated["emergency"] and "засор" in updated["text"]
        assert await j.requests.count_documents({}) == 1
        assert await wait_for(lambda: j.audit.find_one({"request": first["_id"], "action": "edited"}))
    finally:
        await j.close()


async def test_mango_signatures_missed_calls_and_recognized_voicemail(
    vm_hub: Hub, vm_settings: Settings, mango_api: MangoApi
) -> None:
    base = f"http://127.0.0.1:{vm_hub.port}/telephony/mango/events"

    def form(data: dict[str, Any], sign: str | None = None) -> dict[str, str]:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return {"vpbx_api_key": KEY, "sign": sign or mango_sign(KEY, body, SALT), "json": body}

    summary = {
        **mango_json("04_events_summary_ivr_no_talk.doc.json"),
        "entry_id": "E-1",
        "create_time": int(time.time()) - 60,
        "end_time": int(time.time()) - 50,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/summary", data=form(summary, sign="f" * 64)) as r:
            assert r.status == 403
        async with http.post(f"{base}/summary", data={**form(summary), "vpbx_api_key": "stolen"}) as r:
            assert r.status == 403
        async with http.post(f"{base}/summary", data=form(summary)) as r:
            assert r.status == 200
        async with http.post(f"{base}/summary", data=form(summary)) as r:
            assert r.status == 200
        j = Journal.connect(vm_settings.mongo_url, vm_settings.database_name)
        try:
            task = await wait_for(lambda: j.tasks.find_one({"_id": "voicemail:mango:missed:E-1"}))
            assert task["kind"] == "callback" and task["status"] == "open"
            assert task["due_at"] - task["missed_at"] == timedelta(minutes=10)
            assert task["phone"] == "+79000000000"
            assert await j.tasks.count_documents({}) == 1

            mango_api.tasks["555"] = "здравствуйте у нас лифт застрял в нём ребёнок дом восемь подъезд два"
            async with http.post(
                f"{base}/recording",
                data=form(
                    {
                        "recording_id": "R-1",
                        "entry_id": "E-1",
                        "request_id": 555,
                        "seq": 1,
                        "recording_state": "Completed",
                    }
                ),
            ) as r:
                assert r.status == 200
            recognized = {**mango_json("06_events_recognized_offline.doc.json"), "request_id": 555}
            async with http.post(f"{base}/recognized/offline", data=form(recognized)) as r:
                assert r.status == 200
            request = await wait_for(lambda: j.requests.find_one({"channel": "voicemail"}))
            assert request["category"] == "elevator_trapped"
            contact = await j.contacts.find_one({"_id": request["contact_id"]})
            assert "phone:+79000000000" in contact["identities"]
        finally:
            await j.close()
    assert mango_api.calls and json.loads(mango_api.calls[0]["json"]) == {"request_ids": ["555"]}


async def test_generic_voicemail_webhook_is_signed(vm_hub: Hub, vm_settings: Settings) -> None:
    url = f"http://127.0.0.1:{vm_hub.port}/telephony/voicemail"
    body = json.dumps(
        {"id": "pbx-42", "caller": "8 (912) 300-44-17", "transcript": "", "received_at": "2026-11-24T03:12:00+03:00"}
    ).encode()
    stamp = str(int(time.time()))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url, data=body, headers={"X-Adshub-Timestamp": stamp, "X-Adshub-Signature": "sha256=" + "0" * 64}
        ) as r:
            assert r.status == 403
        old = str(int(time.time()) - 3600)
        async with http.post(
            url,
            data=body,
            headers={"X-Adshub-Timestamp": old, "X-Adshub-Signature": hook_signature("hook-secret", old, body)},
        ) as r:
            assert r.status == 403
        async with http.post(
            url,
            data=b"[1,2]",
            headers={"X-Adshub-Timestamp": stamp, "X-Adshub-Signature": hook_signature("hook-secret", stamp, b"[1,2]")},
        ) as r:
            assert r.status == 400
        async with http.post(
            url,
            data=body,
            headers={"X-Adshub-Timestamp": stamp, "X-Adshub-Signature": hook_signature("hook-secret", stamp, body)},
        ) as r:
            assert r.status == 200
        later = json.dumps(
            {
                "id": "pbx-42",
                "caller": "8 (912) 300-44-17",
                "transcript": "течёт крыша после дождя последний этаж квартира семь",
            }
        ).encode()
        async with http.post(
            url,
            data=later,
            headers={"X-Adshub-Timestamp": stamp, "X-Adshub-Signature": hook_signature("hook-secret", stamp, later)},
        ) as r:
            assert r.status == 200
    j = Journal.connect(vm_settings.mongo_url, vm_settings.database_name)
    try:
        request = await wait_for(lambda: j.requests.find_one({"category": "roof_leak"}))
        assert request["contact"]["phone"] == "+79123004417"
        assert await j.requests.count_documents({}) == 1
    finally:
        await j.close()


def test_spool_copy_of_the_samples_is_read(tmp_path: Path) -> None:
    source = shared_path("samples", "voicemail", "asterisk", "default")
    target = tmp_path / "default"
    shutil.copytree(source, target)
    (target / "1234" / "INBOX" / "msg0000.transcript.txt").write_text("течёт батарея", encoding="utf-8")
    found = {m.key: m for m in scan_spool(target)}
    assert found["1735712400-0000001a"].transcript == "течёт батарея"
    assert found["1735720000-0000001c"].folder == "Urgent"
