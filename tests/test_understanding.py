"""Understanding residents beyond the category: the buildings directory, unknown addresses,
one person across channels and phone spellings, and incidents grouping one accident's reports."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adshub.bus import RabbitBus
from adshub.contract import Inbound, Sender
from adshub.errors import InvalidInput
from adshub.settings import Settings
from app.runtime import channel_directory
from bots.texts import Texts
from domain.address import Address, extract_address
from domain.buildings import match_building, parse_buildings
from domain.deadlines import DeadlinePolicy
from domain.incidents import incident_kind
from inbox.actions import Actor, Inbox
from journal.repository import Journal
from router.service import Router
from tests.helpers import REPO

DIRECTORY = """street;house;building;entrances;floors;flats;note
ул. Ленина;7;2;4;9;144;газовые плиты
Ленина;12;;2;5;40;
пр-т Мира;15;;6;12;288;лифт
Садовая;3;;1;5;20;
""".encode("cp1251")


def message(
    channel: str,
    address: str,
    n: int,
    text: str,
    *,
    kind: str = "message",
    phone: str | None = None,
    at: datetime | None = None,
    **extra: Any,
) -> Inbound:
    return Inbound(
        id=f"{channel}:{address}:{n}",
        channel=channel,
        address=address,
        sender=Sender(id=address, phone=phone),
        kind=kind,
        text=text,  # type: ignore[arg-type]
        received_at=at or datetime.now(UTC),
        **extra,
    )


def test_directory_csv_in_windows_1251_with_semicolons() -> None:
    docs = parse_buildings(DIRECTORY)
    assert [d["key"] for d in docs] == ["ленина|7|2", "ленина|12", "мира|15", "садовая|3"]
    assert docs[0]["flats"] == 144 and docs[0]["note"] == "газовые плиты" and docs[2]["street_type"] == "пр-т"
    with pytest.raises(InvalidInput, match="house"):
        parse_buildings("street,flats\nЛенина,5\n".encode())
    with pytest.raises(InvalidInput, match="line 2"):
        parse_buildings(b"street,house,floors\nLenina,7,many\n")


def test_a_street_named_by_a_date_matches_however_the_resident_writes_it() -> None:
    docs = parse_buildings("street,house\n8 Марта,17\nул. 50 лет Октября,3\n".encode())
    assert [d["key"] for d in docs] == ["8 марта|17", "50 лет октября|3"]
    for text in ("ул. 8 Марта, д. 17, кв 3", "8 Марта 17 кв 3", "улица 8 марта дом 17"):
        found = extract_address(text, [d["street_key"] for d in docs])
        assert found is not None and match_building(found, docs)["key"] == "8 марта|17", text  # type: ignore[index]


def test_matching_tolerates_a_typo_in_the_street() -> None:
    docs = parse_buildings(DIRECTORY)
    assert match_building(Address(street="Ленена", house="12"), docs)["key"] == "ленина|12"  # type: ignore[index]
    assert match_building(Address(street="Ленина", house="99"), docs) is None


def test_incident_kinds() -> None:
    assert incident_kind("utility_outage", "нет горячей воды") == "utility_outage:hot_water"
    assert incident_kind("utility_outage", "батареи холодные") == "utility_outage:heating"
    assert incident_kind("water_accident", "прорвало трубу") == "water_accident"
    assert incident_kind("consultation", "квитанция") is None


def test_buildings_command(database: Any, unique: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "buildings.csv"
    csv_file.write_bytes(DIRECTORY)
    env = {"ADSHUB_MONGO_URL": f"{database.url}bld_{unique}", "PATH": "/usr/bin:/bin", "ADSHUB_LOG_FORMAT": "text"}
    done = subprocess.run(
        [sys.executable, "-m", "app", "buildings", "import", str(csv_file)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "imported 4 buildings" in done.stdout
    again = subprocess.run(
        [sys.executable, "-m", "app", "buildings", "import", str(csv_file)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0


async def test_known_addresses_are_spelled_as_in_the_directory_and_unknown_ones_are_questioned(
    router: Router, journal: Journal, tmp_path: Path
) -> None:
    await journal.save_buildings(parse_buildings(DIRECTORY))
    outcome = await router.process([message("webchat", "s-known", 1, "Лифт не работает, Мира 15, подъезд 3")])
    request = await journal.requests.find_one({})
    assert request["address"]["text"] == "пр-т Мира, д. 15, подъезд 3" and request["address"]["key"] == "мира|15"
    assert outcome.registered

    outcome = await router.process([message("webchat", "s-unknown", 1, "Лифт не работает, Мира 150, подъезд 3")])
    assert not outcome.registered
    assert "не найден среди домов" in outcome.outbounds[0].text

    outcome = await router.process([message("webchat", "s-gas", 1, "Пахнет газом! Ленина 99 кв 5")])
    assert outcome.registered and "не найден среди домов" in outcome.outbounds[0].text


async def test_one_person_across_telegram_voicemail_and_phone_spellings(router: Router, journal: Journal) -> None:
    await router.process(
        [message("telegram", "777", 1, "", phone="+7 (916) 123-45-67", payload={"shared_contact": True})]
    )
    await router.process(
        [
            message(
                "voicemail",
                "89161234567",
                1,
                "течёт батарея квартира пять дом семь",
                kind="voicemail",
                phone="89161234567",
                answerable=False,
            )
        ]
    )
    await router.process(
        [message("webchat", "sess-phone-1", 1, "Засор мусоропровода, Ленина 7. Мой телефон 8 916 123 45 67")]
    )
    contacts = [c async for c in journal.contacts.find({})]
    assert len(contacts) == 1
    assert {"telegram:777", "voicemail:89161234567", "webchat:sess-phone-1", "phone:+79161234567"} <= set(
        contacts[0]["identities"]
    )
    requests = [r async for r in journal.requests.find({})]
    assert {r["contact_id"] for r in requests} == {contacts[0]["_id"]} and len(requests) == 2


async def test_ten_flats_without_hot_water_form_one_incident_and_closing_it_informs_everyone(
    router: Router, journal: Journal, bus: RabbitBus, settings: Settings
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=50)
    replies = []
    for flat in range(1, 11):
        outcome = await router.process(
            [
                message(
                    "webchat",
                    f"flat-{flat}",
                    1,
                    f"Нет горячей воды уже час, Садовая 3 кв {flat}",
                    at=start + timedelta(minutes=5 * flat),
                )
            ]
        )
        replies.extend(outcome.outbounds)
    incidents = [i async for i in journal.incidents.find({})]
    assert len(incidents) == 1
    incident = incidents[0]
    assert incident["kind"] == "utility_outage:hot_water"
    master = incident["master"]
    reporters = await journal.incident_reporters(master)
    assert sorted(r["address"]["flat"] for r in reporters) == sorted(str(f) for f in range(1, 11))
    assert await journal.requests.count_documents({"incident_id": master}) == 10
    assert all(f"№ {master}" in r.text for r in replies[1:])

    other = await router.process([message("webchat", "flat-x", 1, "Нет горячей воды, Ленина 12 кв 1")])
    assert other.registered and (await journal.request(other.registered[0]))["incident_id"] != master

    inbox = Inbox(
        journal, bus, Texts(DeadlinePolicy().tz, "УК"), DeadlinePolicy(), settings, channel_directory(settings)
    )
    actor = Actor("anna", "Анна")
    await inbox.set_status(master, "done", actor, datetime.now(UTC), {"result": "Восстановлена подача ГВС"})
    closed = [r async for r in journal.requests.find({"incident_id": master})]
    assert {r["status"] for r in closed} == {"done"}
    notices = [m async for m in journal.messages.find({"direction": "out", "kind": "status"})]
    assert len(notices) == 9 and all(master in m["text"] for m in notices)
    assert (await journal.incidents.find_one({"_id": master}))["status"] == "closed"
