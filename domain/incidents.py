"""Grouping reports of one accident: 12 flats of one house without hot water are one incident.

Pure: which requests can group, under what kind, and for how long an incident
stays open to new reports.
"""

from __future__ import annotations

import re
from datetime import timedelta

from domain.categories import Category

GROUPABLE = {
    Category.WATER_ACCIDENT,
    Category.HEATING_ACCIDENT,
    Category.SEWER_ACCIDENT,
    Category.SEWER_CLOG,
    Category.ELECTRICITY_ACCIDENT,
    Category.UTILITY_OUTAGE,
    Category.GAS_SMELL,
    Category.ELEVATOR_FAULT,
    Category.GARBAGE_CHUTE_CLOG,
    Category.ROOF_LEAK,
}
WINDOW = timedelta(hours=6)
"""A report joins an incident opened at most this long ago; a later one opens a new incident."""

_RESOURCES = [
    ("hot_water", re.compile(r"горяч|гвс|кипят|goryach")),
    ("cold_water", re.compile(r"холодн[а-я]* вод|хвс|holodn")),
    ("heating", re.compile(r"отоплен|батаре|радиатор|теплоснаб")),
    ("power", re.compile(r"свет|электр|напряжен")),
    ("gas", re.compile(r"газ")),
    ("water", re.compile(r"вод")),
]


def incident_kind(category: str, text: str) -> str | None:
    """What one accident is about: the category, and for an outage the missing resource."""
    try:
        code = Category(category)
    except ValueError:
        return None
    if code not in GROUPABLE:
        return None
    if code is Category.UTILITY_OUTAGE:
        low = text.lower().replace("ё", "е")
        resource = next((name for name, pattern in _RESOURCES if pattern.search(low)), "other")
        return f"{code.value}:{resource}"
    return code.value


def open_key(building: str, kind: str) -> str:
    return f"{building}#{kind}"


def incident_of(category: str, text: str, building: str | None) -> tuple[str, str] | None:
    """The open key and kind of the incident a report at ``building`` belongs to, if it can group."""
    kind = incident_kind(category, text)
    if building is None or kind is None:
        return None
    return open_key(building, kind), kind
