"""Canned replies: what dispatchers say most, with placeholders the hub fills in for the request at hand."""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDERS = ("номер", "срок", "адрес", "категория", "имя")

DEFAULT_CANNED: tuple[tuple[str, str], ...] = (
    (
        "Бригада выехала",
        "Аварийная бригада выехала по вашей заявке № {номер}. Плановый срок — {срок}. "
        "Пожалуйста, обеспечьте доступ к стоякам и перекройте воду в квартире, если можете.",
    ),
    (
        "Заявка принята",
        "Ваша заявка № {номер} ({категория}) принята в работу. Плановый срок выполнения — {срок}.",
    ),
    (
        "Уточните адрес",
        "Уточните, пожалуйста, адрес: улицу, дом, подъезд, этаж и номер квартиры.",
    ),
    (
        "Нужен доступ в квартиру",
        "По заявке № {номер} нужен доступ в квартиру по адресу {адрес}. "
        "Сообщите, пожалуйста, когда вам удобно встретить мастера.",
    ),
    (
        "Плановое отключение",
        "Сейчас идут плановые работы на сетях, подача будет восстановлена в объявленный срок. "
        "Если к этому времени услугу не дадут, напишите нам, указав номер заявки {номер}.",
    ),
)

_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """Each ``{номер}``-like placeholder replaced by its value; one without a value keeps its braces so the
    dispatcher sees what to fill in by hand."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1)) or m.group(0), text)
