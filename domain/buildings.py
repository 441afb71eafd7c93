"""The company's buildings directory, as pure functions: read its CSV, match an address to it.

``adshub buildings import FILE.csv`` reads a CSV (UTF-8 or windows-1251, comma
or semicolon separated) with a header row. Columns:

| column | required | meaning |
|---|---|---|
| street | yes | street name, with or without its type: «ул. Ленина», «Ленина», «пр-т Мира» |
| house | yes | house number: 7, 12а, 5/2 |
| building | no | корпус |
| structure | no | строение |
| entrances | no | number of entrances (подъезды) |
| floors | no | number of floors |
| flats | no | number of flats |
| fias | no | FIAS (ГАР) house id, for a later ГИС ЖКХ export |
| note | no | anything dispatchers should know (e.g. «газовые плиты», «лифт ОТИС») |

Re-importing updates the rows with the same address; nothing is deleted.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from adshub.errors import InvalidInput
from domain.address import STREET_TYPES, Address, building_key, extract_address

REQUIRED = ("street", "house")
B = TypeVar("B", bound=Mapping[str, Any])


def _decode(data: bytes) -> str:
    for charset in ("utf-8-sig", "cp1251"):
        try:
            return data.decode(charset)
        except UnicodeDecodeError:
            continue
    raise InvalidInput("the CSV is neither UTF-8 nor windows-1251")


def _street(value: str) -> tuple[str, str | None]:
    parsed = extract_address(f"{value.strip()} 1")
    if parsed is not None and parsed.street:
        return parsed.street, parsed.street_type
    words = value.strip().split()
    kind = STREET_TYPES.get(words[0].lower().rstrip(".")) if words else None
    name = " ".join(words[1:] if kind else words)
    return name[:1].upper() + name[1:], kind


def parse_buildings(data: bytes) -> list[dict[str, Any]]:
    """Rows of the directory CSV as building records. Raises InvalidInput naming the bad line."""
    text = _decode(data)
    dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t")
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    headers = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in headers]
    if missing:
        raise InvalidInput(f"the CSV needs the columns: {', '.join(missing)}")
    docs = []
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not row.get("street") or not row.get("house"):
            raise InvalidInput(f"line {line}: street and house are required")
        street, kind = _street(row["street"])
        address = Address(
            street=street,
            street_type=kind,
            house=row["house"].replace(" ", "").lower(),
            building=row.get("building") or None,
            structure=row.get("structure") or None,
        )
        key = building_key(address)
        if key is None:
            raise InvalidInput(f"line {line}: cannot read the address")
        doc: dict[str, Any] = {
            "key": key,
            "street": street,
            "street_type": kind,
            "house": address.house,
            "building": address.building,
            "structure": address.structure,
            "text": address.text(),
            "street_key": key.split("|")[0],
        }
        for name in ("entrances", "floors", "flats"):
            if row.get(name):
                if not re.fullmatch(r"\d{1,4}", row[name]):
                    raise InvalidInput(f"line {line}: {name} must be a number")
                doc[name] = int(row[name])
        for name in ("fias", "note"):
            if row.get(name):
                doc[name] = row[name][:500]
        docs.append(doc)
    return docs


def match_building(address: Address, buildings: Sequence[B]) -> B | None:
    """The directory building of an extracted address: the same key, or one street spelled a letter off."""
    key = building_key(address)
    if key is None:
        return None
    for doc in buildings:
        if doc["key"] == key:
            return doc
    street, _, rest = key.partition("|")
    close = [
        d
        for d in buildings
        if d["key"].partition("|")[2] == rest and _near(street, d.get("street_key") or d["key"].split("|")[0])
    ]
    return close[0] if len(close) == 1 else None


def _near(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 2 or not a or not b or a[0] != b[0]:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] <= (1 if len(a) < 6 else 2)


def canonical(address: Address, building: Mapping[str, Any]) -> Address:
    """The resident's flat and entrance at the directory's spelling of the building."""
    return replace(
        address,
        street=building["street"],
        street_type=building.get("street_type") or address.street_type,
        house=building["house"],
        building=building.get("building") or address.building,
        structure=building.get("structure") or address.structure,
    )
