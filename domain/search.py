"""What a dispatcher's search finds: the terms of a request and of a person, and how a query reads.

A query is read the way dispatchers type it: a registration number («2026-000123», or just «123»), a
phone in any spelling («8 916 123-45-67», «1234567»), an address («Ленина 12»), a name or words of
the text, each word possibly cut short («прорв»). Every term must match (words by prefix).
Pure: the journal's search index keeps the terms and answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from domain.address import building_key, extract_address, street_key
from domain.phones import extract_phones

_WORD = re.compile(r"[0-9a-zа-я]+")
_NUMBER = re.compile(r"^(\d{4})-(\d{1,6})$")
MAX_WORDS = 400


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("ё", "е"))


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def phone_terms(phone: str) -> list[str]:
    """A phone is found by its last 10 digits or its last 7 (the local number)."""
    digits = _digits(phone)
    if len(digits) < 7:
        return []
    return [f"p:{digits[-10:]}", f"p7:{digits[-7:]}"]


def request_terms(doc: Mapping[str, Any]) -> set[str]:
    """The terms one request is found by: its number, phones, address, the resident's name and its words."""
    terms: set[str] = set()
    number = str(doc.get("_id") or "")
    if number:
        terms.add(f"n:{number}")
        match = _NUMBER.match(number)
        if match:
            terms.add(f"s:{int(match.group(2))}")
    contact = doc.get("contact") or {}
    phones = [contact.get("phone") or "", *extract_phones(str(doc.get("text") or ""))]
    for phone in phones:
        terms.update(phone_terms(phone))
    address = doc.get("address") or {}
    if address.get("key"):
        terms.add(f"a:{address['key']}")
        terms.add(f"a:{str(address['key']).split('|')[0]}")
    text = " ".join(
        str(part or "") for part in (doc.get("text"), address.get("text"), contact.get("name"), contact.get("email"))
    )
    terms.update(f"w:{w}" for w in _words(text)[:MAX_WORDS])
    if contact.get("email"):
        terms.add(f"e:{str(contact['email']).lower()}")
    return terms


def contact_terms(doc: Mapping[str, Any]) -> set[str]:
    """The terms a person is found by: their name, phones and mail addresses."""
    terms: set[str] = set()
    for phone in doc.get("phones") or []:
        terms.update(phone_terms(str(phone)))
    for email in doc.get("emails") or []:
        terms.add(f"e:{str(email).lower()}")
        terms.update(f"w:{w}" for w in _words(str(email)))
    terms.update(f"w:{w}" for w in _words(str(doc.get("name") or "")))
    return terms


@dataclass(frozen=True)
class Term:
    """One condition of a query: an exact term, or any term starting with ``value`` (``prefix``)."""

    value: str
    prefix: bool = False
    alternatives: tuple[str, ...] = ()
    """Exact terms any of which also satisfies the condition (a number written as its sequence)."""


def read_query(query: str) -> list[Term]:
    """The conditions of a typed query; an empty list when there is nothing to look for."""
    text = query.strip()[:200]
    if not text:
        return []
    number = _NUMBER.match(text)
    if number:
        return [Term(f"n:{number.group(1)}-{int(number.group(2)):06d}")]
    digits = _digits(text)
    if digits and len(digits) >= 7 and not re.search(r"[a-zа-яё]", text.lower()):
        return [Term(phone_terms(digits)[0 if len(digits) >= 10 else 1])]
    found = extract_address(text)
    terms: list[Term] = []
    rest = text
    key = building_key(found) if found else None
    if found and key:
        terms.append(Term(f"a:{key}"))
        rest = _without_address(text, found.street or "", found.house or "")
    words = _words(rest)
    if not terms and len(words) == 1 and words[0].isdigit() and len(words[0]) <= 6:
        value = int(words[0])
        return [Term(f"s:{value}", alternatives=(f"w:{words[0]}",))]
    for word in words:
        if word.isdigit():
            terms.append(Term(f"w:{word}"))
        else:
            terms.append(Term(f"w:{word}", prefix=len(word) >= 2))
    return terms


def _without_address(text: str, street: str, house: str) -> str:
    """The query with the address it named taken out, so the rest narrows by words."""
    low = text.lower().replace("ё", "е")
    for part in (street_key(street), house.lower()):
        if part:
            low = re.sub(rf"(?<![0-9a-zа-я]){re.escape(part)}[а-я]*", " ", low, count=1)
    return re.sub(r"(?<![а-я])(ул|улица|пр|пр-т|проспект|д|дом|кв|квартира)\b\.?", " ", low)


def matches(terms: Iterable[str], wanted: Term) -> bool:
    """Whether a set of terms satisfies one condition (for checking a candidate outside the index)."""
    for term in terms:
        if term == wanted.value or term in wanted.alternatives:
            return True
        if wanted.prefix and term.startswith(wanted.value):
            return True
    return False
