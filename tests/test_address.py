"""Addresses and phones: field by field, in words, and one person across spellings of a number."""

from __future__ import annotations

from domain.address import extract_address
from domain.normalize import words_to_digits
from domain.phones import extract_phones, normalize_phone


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
