"""The journal's records in plain Russian for dispatchers and inspectors: who did what to a request,
clock names, statuses in the order a request lives through them. No codes, ids or dictionaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bots.texts import STATUS_NAMES
from domain.categories import CATEGORIES, Category
from domain.deadlines import CLOCK_LABELS

STATUS_ORDER = ("registered", "accepted", "in_work", "localized", "done", "cancelled")

ACTIONS = {
    "registered": "Заявка зарегистрирована",
    "category": "Изменена категория",
    "address": "Изменён адрес",
    "executor": "Назначен исполнитель",
    "visit": "Запланирован визит",
    "visit_cancelled": "Визит отменён",
    "price": "Согласована стоимость платных работ",
    "note": "Заметка",
    "status": "Изменён статус",
    "clock": "Отмечено выполнение срока",
    "clocks_stopped": "Сроки остановлены при закрытии",
    "reply": "Ответ жителю",
    "callback": "Перезвонили жителю",
    "municipal_notice": "Уведомлён орган местного самоуправления",
    "survey": "Оценка жителя",
    "edited": "Житель исправил сообщение",
    "follow_up": "Повторное обращение",
    "taken": "Взял(а) переписку",
    "handed_over": "Переписка передана",
    "released": "Освободил(а) переписку",
    "person": "Изменена карточка жителя",
    "merged": "Карточки жителя объединены",
    "reviewed": "Обращение рассмотрено",
}

FIELD_NAMES = {
    "category": "категория",
    "emergency": "аварийная",
    "address": "адрес",
    "executor": "исполнитель",
    "visit": "визит",
    "text": "текст",
    "status": "статус",
    "result": "результат",
    "materials": "материалы",
    "photos": "фото",
    "paid": "платные работы",
    "clock": "срок",
    "clocks": "сроки",
    "channel": "канал",
    "phone": "телефон",
    "met": "в срок",
    "to": "кому",
    "way": "способ",
    "rating": "оценка",
    "comment": "комментарий",
    "incident": "инцидент",
    "name": "имя",
    "phones": "телефоны",
    "emails": "почта",
    "from": "от",
    "by": "кто",
    "note": "заметка",
    "previous": "было",
}


def clock_name(code: str) -> str:
    return CLOCK_LABELS.get(code, code)


def status_name(code: str | None) -> str:
    return STATUS_NAMES.get(code or "", code or "—")


def in_lifecycle_order(statuses: set[str] | list[str]) -> list[str]:
    return [s for s in STATUS_ORDER if s in statuses]


def _category(code: Any) -> str:
    try:
        return CATEGORIES[Category(str(code))].name
    except ValueError:
        return str(code)


PAIRS = {"category", "emergency", "address", "executor", "status", "name", "phones", "emails"}
"""Changes recorded as [before, after]."""


def _value(key: str, value: Any, local: Callable[[Any], str], channels: Mapping[str, str] | None = None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, datetime):
        return local(value)
    if key == "category":
        return _category(value)
    if key == "status":
        return status_name(str(value))
    if key == "clock":
        return clock_name(str(value))
    if key == "channel":
        return (channels or {}).get(str(value), str(value))
    if key == "result" and isinstance(value, Mapping):
        text = str(value.get("result") or "")
        if value.get("materials"):
            text += f"; материалы: {value['materials']}"
        if value.get("photos"):
            text += f"; фото: {len(value['photos'])}"
        return text or "—"
    if isinstance(value, Mapping):
        return "; ".join(f"{FIELD_NAMES.get(k, k)}: {_value(k, v, local, channels)}" for k, v in value.items() if v)
    if isinstance(value, (list, tuple)):
        if key == "photos":
            return f"{len(value)} шт."
        return ", ".join(_value(key, v, local, channels) for v in value) or "—"
    return str(value)


def describe_changes(
    changes: Mapping[str, Any], local: Callable[[Any], str], channels: Mapping[str, str] | None = None
) -> str:
    """«категория: Неисправность лифта → Застревание в лифте; аварийная: нет → да»."""
    parts: list[str] = []
    for key, value in changes.items():
        name = FIELD_NAMES.get(key, key)
        if key in PAIRS and isinstance(value, (list, tuple)) and len(value) == 2:
            before, after = value
            if before == after:
                continue
            parts.append(f"{name}: {_value(key, before, local, channels)} → {_value(key, after, local, channels)}")
        else:
            parts.append(f"{name}: {_value(key, value, local, channels)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class AuditLine:
    at: datetime | None
    who: str
    what: str
    details: str
    where: str


def audit_lines(
    entries: list[Mapping[str, Any]],
    local: Callable[[Any], str],
    people: Mapping[str, str],
    channels: Mapping[str, str],
) -> list[AuditLine]:
    """Audit entries as lines a person reads; ``people`` names dispatchers by login."""
    lines = []
    for entry in entries:
        lines.append(
            AuditLine(
                at=entry.get("at"),
                who=actor_name(str(entry.get("actor") or ""), people),
                what=ACTIONS.get(str(entry.get("action")), str(entry.get("action") or "")),
                details=describe_changes(entry.get("changes") or {}, local, channels),
                where=source_name(str(entry.get("source") or ""), channels),
            )
        )
    return lines


def actor_name(actor: str, people: Mapping[str, str]) -> str:
    kind, _, who = actor.partition(":")
    if actor == "hub":
        return "Система"
    if kind == "dispatcher":
        return people.get(who, who)
    if kind == "resident":
        return "Житель"
    if kind == "executor":
        return f"{who} (исполнитель)"
    return people.get(actor, actor or "—")


def source_name(source: str, channels: Mapping[str, str]) -> str:
    if source == "inbox":
        return "рабочее место диспетчера"
    if source == "crew":
        return "с телефона исполнителя"
    if source in ("router", "watcher"):
        return "автоматически"
    return channels.get(source, source or "—")
