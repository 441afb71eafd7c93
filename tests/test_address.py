"""Addresses and phones: field by field, in words, and one person across spellings of a number."""

from __future__ import annotations

import json

from domain.address import building_key, extract_address
from domain.normalize import words_to_digits
from domain.phones import extract_phones, normalize_phone
from tests.helpers import REPO


def test_issue_example_is_extracted_field_by_field() -> None:
    a = extract_address("д.7 корп.2 подъезд 3 кв 45 ул. Ленина")
    assert a is not None
    assert (a.street, a.street_type, a.house, a.building, a.entrance, a.flat) == ("Ленина", "ул.", "7", "2", "3", "45")


def test_common_shapes() -> None:
    cases = {
        "ул. Ленина 12 кв 45 срочно": ("Ленина", "12", "45"),
        "Гагарина 5, кв 18, 3 этаж": ("Гагарина", "5", "18"),
        "Первомайская 41-23": ("Первомайская", "41", "23"),
        "пр. Мира, д. 40, кв. 12": ("Мира", "40", "12"),
        "дом 17 по Заводской": ("Заводская", "17", None),
        "Zdravstvuite, prorvalo trubu, dom 4 ul. Lesnaya": ("Лесная", "4", None),
    }
    for text, (street, house, flat) in cases.items():
        a = extract_address(text)
        assert a is not None, text
        assert (a.street, a.house, a.flat) == (street, house, flat), text


def test_floor_and_entrance() -> None:
    a = extract_address("в 3 подъезде из-под двери квартиры 77 (5 этаж) течёт вода")
    assert a is not None and (a.entrance, a.floor, a.flat) == ("3", "5", "77")
    assert not a.has_house


def test_voicemail_numbers_in_words() -> None:
    a = extract_address("квартира сорок семь дом двенадцать улица мира срочно")
    assert a is not None and (a.street, a.house, a.flat) == ("Мира", "12", "47")
    assert words_to_digits("сто двенадцать") == "112"


def test_no_address() -> None:
    assert extract_address("нет горячей воды с утра") is None


def test_two_spellings_of_one_phone_are_one_number() -> None:
    assert normalize_phone("+7 (916) 123-45-67") == normalize_phone("89161234567") == "+79161234567"
    assert normalize_phone("555-5555") is None


def test_phones_in_text_including_dictated() -> None:
    assert extract_phones("тел. 8 (912) 300-44-17") == ["+79123004417"]
    dictated = "перезвоните восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь"
    assert extract_phones(dictated) == ["+79161234567"]


def _labeled(name: str) -> list[dict[str, str | None]]:
    path = REPO / "tests" / "data" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _street(value: str | None) -> str | None:
    return value.lower().replace("ё", "е") if value else None


def test_common_words_before_a_number_are_not_streets() -> None:
    """«Меня два дня не было», «Прошло 40 минут», «Ирина 12 квартира»: no street, no house."""
    rows = [row for row in _labeled("addresses.jsonl") if row["street"] is None]
    assert len(rows) >= 20
    for row in rows:
        found = extract_address(str(row["text"]))
        assert found is None or (found.street is None and found.house is None), (row["text"], found)


def test_streets_written_without_their_type_are_still_found() -> None:
    rows = [row for row in _labeled("addresses.jsonl") if row["street"] is not None]
    assert len(rows) >= 20
    for row in rows:
        found = extract_address(str(row["text"]))
        assert found is not None, row["text"]
        assert (_street(found.street), found.house, found.flat) == (
            _street(row["street"]),
            row["house"],
            row["flat"],
        ), row["text"]


def test_a_street_named_after_its_type_is_a_street() -> None:
    found = extract_address("Набережная 70, кв 5, течёт с потолка")
    assert found is not None and (found.street, found.house, found.flat) == ("Набережная", "70", "5")
    assert extract_address("Площадь 5 квадратных метров залило") is None


def test_names_of_people_keep_their_form() -> None:
    for text, street in {
        "проспект Ленина 50": "Ленина",
        "ул. Островского, д. 27": "Островского",
        "Горького 33 крыша течёт": "Горького",
        "на Лесной 9": "Лесная",
    }.items():
        found = extract_address(text)
        assert found is not None and found.street == street, text


def test_the_directory_decides_which_untyped_words_are_streets() -> None:
    streets = {"кирова", "лесная", "малая садовая"}
    assert extract_address("Кирова 14, подвал", streets) == extract_address("Кирова 14, подвал")
    assert extract_address("Лесной 9 течёт", streets).street == "Лесная"  # type: ignore[union-attr]
    assert extract_address("Садовая 5 кв 3", streets).house == "5"  # type: ignore[union-attr]
    unknown = extract_address("Марата 3 течёт", streets)
    assert unknown is None or unknown.street is None
    typed = extract_address("ул. Марата 3", streets)
    assert typed is not None and typed.street == "Марата"


def test_an_address_written_without_spaces_after_its_abbreviations() -> None:
    found = extract_address("Ул.Садовая,д.12,кв.7")
    assert found is not None and (found.street, found.street_type, found.house, found.flat) == (
        "Садовая",
        "ул.",
        "12",
        "7",
    )
    found = extract_address("Чехова д 4 кв 9, течёт")
    assert found is not None and (found.street, found.house, found.flat) == ("Чехова", "4", "9")


def test_streets_named_by_a_date_keep_the_date() -> None:
    for text in ("ул. 1 Мая 23 кв 4", "улица 1 мая, дом 23, кв 4", "1 Мая 23 кв 4"):
        found = extract_address(text)
        assert found is not None and (found.street, found.house, found.flat) == ("1 Мая", "23", "4"), text
    found = extract_address("пр-т 60 лет Октября 3")
    assert found is not None and (found.street, found.house) == ("60 лет Октября", "3")
    assert building_key(extract_address("1 Мая 23")) == building_key(extract_address("ул. 1 Мая, д. 23"))
    for text in ("приходили 1 мая 2 раза", "с 1 мая 2026 года нет воды", "1 мая 14:30 был мастер"):
        found = extract_address(text)
        assert found is None or found.street is None, text


def test_a_number_that_counts_something_is_not_a_flat() -> None:
    found = extract_address("в квартире 14 градусов, Ленина 3 кв 8")
    assert found is not None and found.flat == "8"
    assert extract_address("в квартире 14 градусов") is None
