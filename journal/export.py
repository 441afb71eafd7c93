"""The journal as an inspector wants it: one row per request with Russian headers
(CSV, XLSX) or the same fields as a JSON array."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bots.texts import STATUS_NAMES
from domain.categories import info
from domain.phones import extract_phones
from journal.documents import RequestDoc

COLUMNS: list[tuple[str, str]] = [
    ("number", "Номер заявки"),
    ("registered_at", "Дата и время регистрации"),
    ("channel", "Канал"),
    ("contact", "Заявитель"),
    ("phone", "Телефон"),
    ("address", "Адрес"),
    ("text", "Содержание обращения"),
    ("category", "Категория"),
    ("emergency", "Аварийная"),
    ("deadline", "Плановый срок"),
    ("deadlines", "Нормативные сроки"),
    ("clocks_met", "Сроки соблюдены"),
    ("status", "Статус"),
    ("executor", "Исполнитель"),
    ("result", "Результат"),
    ("paid", "Платные работы"),
    ("paid_total", "Стоимость платных работ, ₽"),
    ("closed_at", "Дата закрытия"),
    ("rating", "Оценка заявителя"),
]


def _iso(value: datetime | None, tz: ZoneInfo) -> str | None:
    return value.astimezone(tz).isoformat(timespec="seconds") if value else None


def _local(value: datetime | None, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%d.%m.%Y %H:%M") if value else ""


def export_row(doc: RequestDoc, tz: ZoneInfo, person: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One request in the export's field names; times in the company's time zone. ``person`` is the
    resident's card as it is now: a phone given after registration is exported too."""
    contact = doc.get("contact") or {}
    person = person or {}
    phones = [contact.get("phone"), *(person.get("phones") or []), *extract_phones(str(doc.get("text") or ""))]
    phone = next((p for p in phones if p), None)
    result = doc.get("result")
    clocks = doc.get("clocks") or {}
    return {
        "number": doc["_id"],
        "registered_at": _iso(doc.get("registered_at"), tz),
        "channel": doc.get("channel"),
        "contact": contact.get("name") or person.get("name") or contact.get("email") or phone,
        "phone": phone,
        "address": (doc.get("address") or {}).get("text"),
        "text": doc.get("text"),
        "category": doc.get("category"),
        "category_name": info(doc["category"]).name if doc.get("category") else None,
        "emergency": bool(doc.get("emergency")),
        "deadline": _iso(doc.get("deadline"), tz),
        "deadlines": {name: _iso(c.get("due_at"), tz) for name, c in clocks.items()},
        "clocks": {
            name: {
                "label": c.get("label"),
                "due_at": _iso(c.get("due_at"), tz),
                "done_at": _iso(c.get("done_at"), tz),
                "met": c.get("met"),
            }
            for name, c in clocks.items()
        },
        "status": doc.get("status"),
        "executor": (doc.get("executor") or {}).get("name"),
        "result": _result_text(result),
        "paid": "; ".join(
            f"{i.get('name')} — {i.get('qty')} {i.get('unit')} × {i.get('price')} = {i.get('sum')}"
            for i in (doc.get("paid") or {}).get("items") or []
        )
        or None,
        "paid_total": float((doc.get("paid") or {})["total"]) if (doc.get("paid") or {}).get("total") else None,
        "closed_at": _iso(doc.get("closed_at"), tz),
        "rating": (doc.get("survey") or {}).get("rating"),
    }


def _result_text(result: Any) -> str | None:
    """What was done, with the materials used, as one line."""
    if not result:
        return None
    if not isinstance(result, Mapping):
        return str(result)
    text = str(result.get("result") or result.get("text") or "").strip()
    materials = str(result.get("materials") or "").strip()
    if materials:
        text = f"{text}; материалы: {materials}" if text else f"материалы: {materials}"
    return text or None


def _cell(key: str, row: dict[str, Any], tz: ZoneInfo, titles: Mapping[str, str]) -> Any:
    value = row.get(key)
    if key in ("registered_at", "deadline", "closed_at"):
        return _local(datetime.fromisoformat(value), tz) if value else ""
    if key == "channel":
        return titles.get(value or "", value or "")
    if key == "category":
        return row.get("category_name") or value or ""
    if key == "emergency":
        return "да" if value else "нет"
    if key == "status":
        return STATUS_NAMES.get(value or "", value or "")
    if key == "deadlines":
        if not value:
            return ""
        labels = {c: (row["clocks"][c].get("label") or c) for c in row["clocks"]}
        return "; ".join(f"{labels[c]}: {_local(datetime.fromisoformat(d), tz)}" for c, d in value.items() if d)
    if key == "clocks_met":
        clocks = row["clocks"]
        decided = [c for c in clocks.values() if c.get("met") is not None]
        if not decided:
            return ""
        return (
            "да"
            if all(c["met"] for c in decided)
            else "нет: " + ", ".join(c.get("label") or "" for c in decided if not c["met"])
        )
    return "" if value is None else value


def table(rows: list[dict[str, Any]], tz: ZoneInfo, titles: Mapping[str, str]) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells as a reader sees them; ``titles`` names the channels."""
    headers = [title for _, title in COLUMNS]
    body = [[_cell(key, row, tz, titles) for key, _ in COLUMNS] for row in rows]
    return headers, body


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet may take for the start of a formula (OWASP, CSV injection)."""


def neutralized(value: Any) -> Any:
    """A cell's text that no spreadsheet runs: a leading apostrophe before what could start a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(rows: list[dict[str, Any]], tz: ZoneInfo, titles: Mapping[str, str], header: bool = False) -> str:
    """Lines of the CSV export for ``rows`` (with the byte-order mark and headers first when ``header``), so
    a long journal is written batch by batch."""
    headers, body = table(rows, tz, titles)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    if header:
        out.write("\ufeff")
        writer.writerow(headers)
    writer.writerows([neutralized(v) for v in line] for line in body)
    return out.getvalue()


class JournalWorkbook:
    """The journal as a workbook whose every text is a string cell (nothing residents wrote is a formula),
    written batch by batch: openpyxl's write-only sheet keeps rows in a temporary file, not in memory, and
    ``close`` zips it into ``target`` (a path or a binary file)."""

    WIDTHS = (14, 18, 16, 22, 16, 32, 60, 30, 10, 18, 40, 16, 16, 22, 30, 18, 10)

    def __init__(self, target: Any, tz: ZoneInfo, titles: Mapping[str, str]) -> None:
        from openpyxl import Workbook
        from openpyxl.utils import get_column_letter

        self.target, self.tz, self.titles = target, tz, titles
        self.book = Workbook(write_only=True)
        self.sheet = self.book.create_sheet("Журнал заявок")
        for index, width in enumerate(self.WIDTHS, start=1):
            self.sheet.column_dimensions[get_column_letter(index)].width = width
        self.sheet.freeze_panes = "A2"
        self.sheet.append([self._cell(title, header=True) for _, title in COLUMNS])

    def _cell(self, value: Any, header: bool = False) -> Any:
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
        from openpyxl.styles import Alignment, Font

        if isinstance(value, dict | list):
            value = str(value)
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
        written = WriteOnlyCell(self.sheet, value=value)
        if isinstance(value, str):
            written.data_type = "s"
        if header:
            written.font = Font(bold=True)
            written.alignment = Alignment(wrap_text=True, vertical="top")
        return written

    def add(self, rows: list[dict[str, Any]]) -> None:
        _, body = table(rows, self.tz, self.titles)
        for line in body:
            self.sheet.append([self._cell(v) for v in line])

    def close(self) -> None:
        self.book.save(self.target)
