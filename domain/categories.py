"""The 16 request categories (see shared/domain/categories.md) and what each implies.

The codes are stable identifiers stored in the journal and exported; the Russian
names are what residents and dispatchers read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    WATER_ACCIDENT = "water_accident"
    HEATING_ACCIDENT = "heating_accident"
    SEWER_ACCIDENT = "sewer_accident"
    SEWER_CLOG = "sewer_clog"
    ELECTRICITY_ACCIDENT = "electricity_accident"
    GAS_SMELL = "gas_smell"
    ELEVATOR_TRAPPED = "elevator_trapped"
    UTILITY_OUTAGE = "utility_outage"
    GARBAGE_CHUTE_CLOG = "garbage_chute_clog"
    ROOF_LEAK = "roof_leak"
    ELEVATOR_FAULT = "elevator_fault"
    MINOR_REPAIR = "minor_repair"
    PAID_SERVICE = "paid_service"
    SANITATION = "sanitation"
    CONSULTATION = "consultation"
    OTHER = "other"


@dataclass(frozen=True)
class CategoryInfo:
    code: Category
    name: str
    emergency: bool
    needs_visit: bool
    notify_municipality: bool
    severity: int
    """Higher wins when one message names several problems."""


_INFO = [
    CategoryInfo(Category.GAS_SMELL, "Запах газа", True, True, False, 100),
    CategoryInfo(Category.ELEVATOR_TRAPPED, "Застревание людей в лифте", True, True, False, 95),
    CategoryInfo(Category.ELECTRICITY_ACCIDENT, "Авария внутридомового электроснабжения", True, True, False, 90),
    CategoryInfo(Category.WATER_ACCIDENT, "Авария на системе ХВС/ГВС", True, True, True, 85),
    CategoryInfo(Category.HEATING_ACCIDENT, "Авария на системе отопления", True, True, True, 84),
    CategoryInfo(Category.SEWER_ACCIDENT, "Авария на системе водоотведения", True, True, True, 83),
    CategoryInfo(Category.SEWER_CLOG, "Засор внутридомовой канализации", True, True, False, 80),
    CategoryInfo(Category.UTILITY_OUTAGE, "Отсутствие коммунальной услуги", True, True, False, 70),
    CategoryInfo(Category.ROOF_LEAK, "Протечка кровли", False, True, False, 50),
    CategoryInfo(Category.GARBAGE_CHUTE_CLOG, "Засор мусоропровода", False, True, False, 45),
    CategoryInfo(Category.ELEVATOR_FAULT, "Неисправность лифта", False, True, False, 44),
    CategoryInfo(Category.MINOR_REPAIR, "Мелкий ремонт общего имущества", False, True, False, 30),
    CategoryInfo(Category.SANITATION, "Санитарное содержание", False, True, False, 28),
    CategoryInfo(Category.PAID_SERVICE, "Платные работы в помещении", False, True, False, 20),
    CategoryInfo(Category.CONSULTATION, "Обращение без выезда", False, False, False, 10),
    CategoryInfo(Category.OTHER, "Прочее", False, False, False, 0),
]

CATEGORIES: dict[Category, CategoryInfo] = {info.code: info for info in _INFO}


def info(code: str | Category) -> CategoryInfo:
    return CATEGORIES[Category(code)]
