"""Paid works: the agreed price of a request from the company's price list, as pure arithmetic in kopecks
(no float rounding in a document the resident signs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any


@dataclass(frozen=True)
class PricedItem:
    name: str
    unit: str
    price: Decimal
    qty: Decimal

    @property
    def sum(self) -> Decimal:
        return (self.price * self.qty).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def amount(text: str | float | int) -> Decimal:
    """«1 250,50» → 1250.50; raises ValueError for what is not a non-negative amount."""
    try:
        value = Decimal(str(text).replace("\u00a0", "").replace(" ", "").replace(",", "."))
    except InvalidOperation:
        raise ValueError(f"не число: {text}") from None
    if not value.is_finite() or value < 0 or value > Decimal("10000000"):
        raise ValueError(f"недопустимое значение: {text}")
    return value


def priced(items: Iterable[tuple[Mapping[str, Any], str]]) -> list[PricedItem]:
    """Price-list entries with the quantities typed; empty or zero quantities are left out."""
    found = []
    for entry, qty in items:
        if not str(qty).strip():
            continue
        count = amount(qty)
        if count == 0:
            continue
        found.append(PricedItem(str(entry["name"]), str(entry.get("unit") or "шт"), amount(entry["price"]), count))
    return found


def total(items: Iterable[PricedItem]) -> Decimal:
    return sum((i.sum for i in items), Decimal("0.00"))


def rubles(value: Decimal | float | str) -> str:
    """«1 250,50 ₽», as a Russian document writes it."""
    number = Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    whole, _, cents = f"{number:.2f}".partition(".")
    grouped = f"{int(whole):,}".replace(",", "\u00a0")
    return f"{grouped},{cents}\u00a0₽"


def paid_doc(items: list[PricedItem]) -> dict[str, Any]:
    return {
        "items": [
            {"name": i.name, "unit": i.unit, "qty": str(i.qty), "price": str(i.price), "sum": str(i.sum)} for i in items
        ],
        "total": str(total(items)),
    }
