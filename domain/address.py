"""Extract a Russian street address from a resident's message, field by field.

«д.7 корп.2 подъезд 3 кв 45 ул. Ленина» → street Ленина (ул.), house 7, корпус 2,
подъезд 3, flat 45. Voicemail transcripts spell numbers out («квартира сорок
семь дом двенадцать улица мира»); they are turned to digits first.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, fields
from functools import lru_cache

from domain.normalize import _MORPH, normalize, words_to_digits

STREET_TYPES: dict[str, str] = {
    "ул": "ул.",
    "улица": "ул.",
    "улице": "ул.",
    "улицу": "ул.",
    "улицы": "ул.",
    "пр-т": "пр-т",
    "прт": "пр-т",
    "просп": "пр-т",
    "проспект": "пр-т",
    "проспекту": "пр-т",
    "проспекте": "пр-т",
    "пр": "пр-т",
    "пер": "пер.",
    "переулок": "пер.",
    "переулку": "пер.",
    "переулке": "пер.",
    "б-р": "б-р",
    "бульвар": "б-р",
    "бульвару": "б-р",
    "бульваре": "б-р",
    "бул": "б-р",
    "ш": "ш.",
    "шоссе": "ш.",
    "наб": "наб.",
    "набережная": "наб.",
    "набережной": "наб.",
    "пл": "пл.",
    "площадь": "пл.",
    "площади": "пл.",
    "мкр": "мкр.",
    "мкрн": "мкр.",
    "микрорайон": "мкр.",
    "микрорайоне": "мкр.",
    "проезд": "проезд",
    "проезде": "проезд",
    "тупик": "туп.",
    "аллея": "аллея",
}

_NUM = r"\d{1,4}(?:\s?[а-я](?![а-я]))?(?:/\d{1,3})?"
_TYPE_RE = "|".join(sorted((re.escape(t) for t in STREET_TYPES), key=len, reverse=True))
_MONTHS = "января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря"
_NAME = (
    rf"(?:\d{{1,2}}\s(?:{_MONTHS})(?![а-я])|\d{{2,3}}[\s-](?:лет|летия)\s[а-я]{{3,30}}"
    r"|[а-я][а-я-]{1,30}(?:\s(?!д\b|дом|кв|корп|стр|под)[а-я][а-я-]{2,30})?)"
)
"""A street's name after its type: words («Ленина», «Карла Маркса») or a date («8 Марта», «50 лет Октября»)."""
_GENDER = {"ул.": "femn", "наб.": "femn", "пл.": "femn", "аллея": "femn", "ш.": "neut"}

_STREET_AFTER_TYPE = re.compile(rf"(?<![а-я])({_TYPE_RE})(?:\.\s*|\s+)(?:им\.?\s+)?({_NAME})")
_STREET_BEFORE_TYPE = re.compile(rf"(?<![а-я])([а-я][а-я-]{{2,30}}(?:ой|ий|ый|ая|ой|ский|ская))\s+({_TYPE_RE})\b\.?")
_HOUSE = re.compile(rf"(?<![а-я])(?:д|дом|дома|доме)\.?\s*№?\s*({_NUM})")
_BUILDING = re.compile(r"(?<![а-я])(?:корп|корпус|к)\.?\s*(\d{1,3}[а-я]?)")
_STRUCTURE = re.compile(r"(?<![а-я])(?:стр|строение)\.?\s*(\d{1,3})")
_ENTRANCE = re.compile(r"(?<![а-я])(?:подъезд[а-я]*|под|п)\.?\s*№?\s*(\d{1,2})(?!\d)")
_ENTRANCE_BEFORE = re.compile(r"(?<![\d.])(\d{1,2})(?:-?[а-я]{1,2})?\s+подъезд")
_FLOOR = re.compile(
    r"(?<!\d)(\d{1,2})(?:-?[а-я]{1,2})?\s+(?:\(?[а-я]+\)?\s+)?этаж|(?<![а-я])этаж[а-я]*\s*(\d{1,2})(?!\d)"
)
_FLAT = re.compile(r"(?<![а-я])(?:кв|квартир[аеуы]?|квартиры)\.?\s*№?\s*(\d{1,4})(?!\d)")
_BARE = re.compile(
    r"(?<![а-яА-ЯёЁ])([А-ЯЁ][а-яё-]{2,30}),?\s+(?:(?:д|дом)\.?\s*)?(\d{1,4}[а-я]?(?:/\d{1,3})?)"
    r"(?:\s*[-–]\s*(\d{1,4}))?(?!\d)"
)
_DATED_BARE = re.compile(
    rf"(?<![\d.:])(\d{{1,2}}\s(?:{_MONTHS})|\d{{2,3}}[\s-](?:лет|летия)\s(?:октября|победы|комсомола|влксм))"
    r"\s+(\d{1,4}[а-я]?(?:/\d{1,3})?)(?![\d:.])"
)
"""«8 Марта 17», «50 лет Октября 3»: a street named by a date, written without its type (only the common
anniversaries: «30 лет квартира 5» is no street)."""
_PO_STREET = re.compile(rf"(?<![а-я])(?:д|дом|дома)\.?\s*№?\s*({_NUM})\s+по\s+({_NAME})")

_NOT_STREETS = {
    "кв",
    "дом",
    "этаж",
    "подъезд",
    "квартира",
    "корпус",
    "тел",
    "телефон",
    "лифт",
    "в",
    "на",
    "и",
    "с",
    "уже",
    "около",
    "примерно",
    "через",
    "после",
    "до",
    "от",
    "за",
    "по",
    "каждый",
    "всего",
    "минус",
    "плюс",
}


@dataclass(frozen=True)
class Address:
    street: str | None = None
    street_type: str | None = None
    house: str | None = None
    building: str | None = None
    structure: str | None = None
    entrance: str | None = None
    floor: str | None = None
    flat: str | None = None

    @property
    def has_house(self) -> bool:
        return bool(self.street and self.house)

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in FIELDS)

    def merged(self, other: Address | None) -> Address:
        """Fill the gaps of this address from ``other`` (an earlier, remembered one)."""
        if other is None:
            return self
        if self.street and other.street and (self.street != other.street or (self.house and self.house != other.house)):
            return self
        values = {k: getattr(self, k) or getattr(other, k) for k in FIELDS}
        return Address(**values)

    def text(self) -> str:
        parts: list[str] = []
        if self.street:
            kind = self.street_type or "ул."
            parts.append(f"{kind} {self.street}")
        if self.house:
            parts.append(f"д. {self.house}")
        if self.building:
            parts.append(f"корп. {self.building}")
        if self.structure:
            parts.append(f"стр. {self.structure}")
        if self.entrance:
            parts.append(f"подъезд {self.entrance}")
        if self.floor:
            parts.append(f"этаж {self.floor}")
        if self.flat:
            parts.append(f"кв. {self.flat}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, str | None]:
        data: dict[str, str | None] = {name: getattr(self, name) for name in FIELDS}
        data["text"] = self.text()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object] | None) -> Address | None:
        if not data:
            return None
        fields = {k: (str(v) if v is not None else None) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


FIELDS = tuple(f.name for f in fields(Address))


def building_key(address: Address | None) -> str | None:
    """A stable key of a building for history, the directory and incident grouping: «ленина|7|2»."""
    if address is None or not address.street or not address.house:
        return None
    street = re.sub(r"[^а-яa-z0-9]+", " ", address.street.lower().replace("ё", "е")).strip()
    return "|".join([street, address.house.lower(), (address.building or "").lower()]).rstrip("|")


def street_key(text: str) -> str:
    """The street part of a building key for free text a dispatcher typed («Ленина» → «ленина»)."""
    return re.sub(r"[^а-яa-z0-9]+", " ", text.lower().replace("ё", "е")).strip()


def _title(name: str) -> str:
    return " ".join(part if part in ("лет", "летия") else part[:1].upper() + part[1:] for part in name.split())


@lru_cache(maxsize=10_000)
def _nominative(name: str, street_type: str | None) -> str:
    """«по Заречной» → «Заречная», «Комсомольскому проспекту» → «Комсомольский»; «Кирова» stays."""
    words = name.split()
    gender = _GENDER.get(street_type or "ул.", "masc")
    out = []
    for word in words:
        parses = _MORPH.parse(word)
        parse = next((p for p in parses if p.tag.POS == "ADJF" and "Poss" not in p.tag), None)
        if parse is not None and any("Surn" in p.tag and p.tag.case == "gent" for p in parses):
            parse = None
        if parse is not None and street_type is None and parse.tag.gender not in ("femn", None):
            parse = None
        if (parse is not None and parse.tag.case != "nomn") or (parse is not None and parse.tag.gender != gender):
            inflected = parse.inflect({"nomn", gender, "sing"}) if parse is not None else None
            out.append(inflected.word if inflected else word)
        else:
            out.append(word)
    return " ".join(out)


def _keep_capitalized(name: str, original: str, low: str) -> str:
    """Keep a street's second word only when the resident wrote it with a capital («Малая Садовая»)."""
    words = name.split()
    if len(words) < 2 or len(original) != len(low):
        return words[0] if len(words) > 1 and len(original) != len(low) else name
    start = low.find(name)
    second = start + len(words[0]) + 1
    if start >= 0 and original[second : second + 1].isupper():
        return name
    return words[0]


def _clean_house(value: str) -> str:
    return value.replace(" ", "")


def extract_address(text: str, streets: Collection[str] = ()) -> Address | None:
    """Every address field found in ``text``; None when nothing address-like is there.

    ``streets`` are the directory's street keys: where the company has them, a street written without its
    type («Ленина 5») counts only when it is one of them, a letter off at most."""
    original = words_to_digits(text)
    low = normalize(original)
    street = street_type = house = flat = None

    match = _STREET_AFTER_TYPE.search(low)
    if match and match.group(2).split()[0] not in _NOT_STREETS:
        street_type = STREET_TYPES[match.group(1)]
        named = match.group(2)
        street = named if named[:1].isdigit() else _keep_capitalized(named, original, low)
    else:
        match = _STREET_BEFORE_TYPE.search(low)
        if match:
            street, street_type = match.group(1), STREET_TYPES[match.group(2)]
            follow = re.match(rf"\s*,?\s*(?:д\.?|дом)?\s*({_NUM})(?!\d)", low[match.end() :])
            if follow:
                house = _clean_house(follow.group(1))
    po = _PO_STREET.search(low)
    if po and po.group(2).split()[0] not in _NOT_STREETS:
        house = _clean_house(po.group(1))
        if not street:
            street = _keep_capitalized(po.group(2), original, low).split()[0]
            after = low[po.start(2) + len(street) :].split()
            if after and after[0].rstrip(".,") in STREET_TYPES:
                street_type = STREET_TYPES[after[0].rstrip(".,")]
    house_match = _HOUSE.search(low)
    if house_match and not house:
        house = _clean_house(house_match.group(1))
    if street and not house:
        tail = low[low.find(street) + len(street) :]
        follow = re.match(rf",?\s*(?:д\.?|дом)?\s*({_NUM})(?:\s*[-–]\s*(\d{{1,4}}))?(?!\d)", tail)
        if follow:
            house = _clean_house(follow.group(1))
            flat = follow.group(2)
    if not street:
        dated = _DATED_BARE.search(low)
        if dated and not _counts_something(low[dated.end() :]) and _known_or_none(dated.group(1), streets):
            street, house = dated.group(1), house or _clean_house(dated.group(2))
    if not street:
        for bare in _BARE.finditer(original):
            name = bare.group(1).lower().replace("ё", "е")
            if not _bare_street(name, original[bare.end() :], streets):
                continue
            street = name
            house = house or _clean_house(bare.group(2).lower())
            flat = flat or bare.group(3)
            break
    if street:
        street = re.sub(r"\s+(?:д|дом|кв|корп|подъезд|этаж)$", "", street).strip()
        words = street.split()
        if len(words) > 1 and words[1] in STREET_TYPES:
            street = words[0]

    flat_match = next((m for m in _FLAT.finditer(low) if not _counts_something(low[m.end() :])), None)
    flat = flat_match.group(1) if flat_match else flat
    building, low = _take(_BUILDING, low)
    structure, low = _take(_STRUCTURE, low)
    if flat_match:
        low = low[: flat_match.start()] + " " * (flat_match.end() - flat_match.start()) + low[flat_match.end() :]
    if house_match:
        low = low[: house_match.start()] + " " * (house_match.end() - house_match.start()) + low[house_match.end() :]
    entrance, low = _take(_ENTRANCE, low)
    if entrance is None:
        entrance, low = _take(_ENTRANCE_BEFORE, low)
    floor, low = _take(_FLOOR, low)
    address = Address(
        street=_title(_nominative(street, street_type)) if street else None,
        street_type=street_type,
        house=house,
        building=building,
        structure=structure,
        entrance=entrance,
        floor=floor,
        flat=flat,
    )
    return None if address.is_empty else address


_FUNCTION_WORDS = {
    "NPRO",
    "VERB",
    "INFN",
    "ADVB",
    "INTJ",
    "PRCL",
    "PREP",
    "CONJ",
    "NUMR",
    "PRED",
    "COMP",
    "GRND",
    "PRTS",
}
_COUNTED = {
    "день",
    "сутки",
    "час",
    "минута",
    "секунда",
    "неделя",
    "месяц",
    "год",
    "лето",
    "раз",
    "градус",
    "человек",
    "штука",
    "рубль",
    "этаж",
    "подъезд",
    "квартира",
    "кв",
    "утро",
    "вечер",
    "ночь",
    "процент",
    "метр",
    "сантиметр",
    "литр",
    "число",
    "мин",
    "ч",
    "сек",
    "см",
    "мм",
    "м",
    "л",
    "г",
    "кг",
    "тысяча",
    "житель",
    "семья",
    "ребёнок",
    "этажный",
    "квартирный",
    "подъездный",
}
_FIELD_WORDS = {"кв", "квартира", "подъезд", "под", "этаж", "п"}
_TYPES_THAT_NAME = {"набережная"}
"""Street types that are also a street's whole name: «Набережная 70» is a house on Набережная улица."""
_NOMINATIVE_STREETS = {"набережная", "площадь", "аллея", "бульвар", "шоссе", "линия", "дорога", "тракт", "слобода"}
_NEXT_WORD = re.compile(r"[\s,.;:)(-]*([а-яёa-z]+)", re.IGNORECASE)


def _bare_street(name: str, after: str, streets: Collection[str]) -> bool:
    """Whether a capitalised word before a number («Кирова 14») is a street, not «Меня 2 дня» or «Ирина 12
    квартира»: a surname, an adjective that agrees with «улица», a noun in the genitive («Мира», «Строителей»),
    and never a word counting what follows the number. With a directory, only its streets."""
    if name in _NOT_STREETS or (name in STREET_TYPES and name not in _TYPES_THAT_NAME):
        return False
    if _counts_something(after):
        return False
    if streets:
        keys = {street_key(name), street_key(_nominative(name, None))}
        return any(_near_street(key, part) for known in streets for part in (known, *known.split()) for key in keys)
    return _street_like(name)


def _known_or_none(name: str, streets: Collection[str]) -> bool:
    """With a directory, only its streets count; without one, any."""
    return not streets or any(_near_street(street_key(name), known) for known in streets)


def _counts_something(after: str) -> bool:
    """The number before ``after`` counts something («2 дня», «15 градусов»), unless the word is an address
    field with its own number («12 кв 5»)."""
    following = _NEXT_WORD.match(after)
    if not following or _MORPH.parse(following.group(1).lower())[0].normal_form not in _COUNTED:
        return False
    numbered = re.match(r"\.?\s*№?\s*\d", after[following.end() :])
    return not (numbered and following.group(1).lower() in _FIELD_WORDS)


@lru_cache(maxsize=10_000)
def _street_like(name: str) -> bool:
    parses = _MORPH.parse(name)
    best = parses[0].tag
    if best.POS in _FUNCTION_WORDS:
        return False
    if name in _NOMINATIVE_STREETS:
        return True
    if any("Surn" in p.tag and p.score >= 0.1 for p in parses):
        return True
    if "Name" in best or "Apro" in best:
        return False
    if best.POS == "ADJF":
        return best.number == "sing"
    return best.POS == "NOUN" and best.case == "gent"


def _near_street(a: str, b: str) -> bool:
    """The same street, or one letter off («Ленена» for «Ленина»)."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1 or len(a) < 4 or a[0] != b[0]:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _take(pattern: re.Pattern[str], text: str) -> tuple[str | None, str]:
    """The first value ``pattern`` finds, and the text with that match blanked out."""
    match = pattern.search(text)
    if not match:
        return None, text
    value = next((g for g in match.groups() if g), None)
    blanked = text[: match.start()] + " " * (match.end() - match.start()) + text[match.end() :]
    return value, blanked
