"""Render the texts residents read, from templates/replies/.

A template ``replies/<name>.txt`` may have a per-channel variant
``replies/<name>.<channel>.txt`` where formatting differs (email adds a
greeting and a signature). Times are shown in the company's time zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from domain.categories import Category, info
from templates import TEMPLATES_DIR

STATUS_NAMES = {
    "registered": "зарегистрирована",
    "accepted": "принята в работу",
    "in_work": "выполняется",
    "localized": "авария локализована",
    "done": "выполнена",
    "cancelled": "отменена",
}

MEASURES = {
    Category.WATER_ACCIDENT: "бригада локализует повреждение до {localize}, устранение — до {eliminate}",
    Category.HEATING_ACCIDENT: "бригада локализует повреждение до {localize}, устранение — до {eliminate}",
    Category.SEWER_ACCIDENT: "бригада локализует повреждение до {localize}, устранение — до {eliminate}",
    Category.ELECTRICITY_ACCIDENT: "электрик локализует неисправность до {localize}, устранение — до {eliminate}",
    Category.SEWER_CLOG: "сантехник устранит засор до {eliminate}",
    Category.GAS_SMELL: "заявка передаётся в аварийную газовую службу (104) до {handoff}; наш дежурный выезжает",
    Category.ELEVATOR_TRAPPED: "заявка передаётся в аварийную службу лифтов до {handoff}; механик выезжает",
    Category.UTILITY_OUTAGE: (
        "диспетчер выяснит причину (плановые работы или авария на сетях) и сообщит вам до {inform}"
    ),
    Category.GARBAGE_CHUTE_CLOG: "засор мусоропровода устранят до {eliminate} (работы ведутся с 08:00 до 23:00)",
    Category.ROOF_LEAK: "мастер осмотрит кровлю и устранит протечку до {eliminate}",
    Category.ELEVATOR_FAULT: "механик устранит неисправность лифта до {eliminate}",
    Category.MINOR_REPAIR: "мастер выполнит ремонт, срок диспетчер согласует с вами",
    Category.PAID_SERVICE: "диспетчер свяжется с вами, чтобы согласовать время и стоимость работ",
    Category.SANITATION: "заявка передана в службу санитарного содержания, срок диспетчер согласует с вами",
    Category.CONSULTATION: "письменный ответ будет дан до {answer}",
    Category.OTHER: "диспетчер рассмотрит обращение",
}

SAFETY = {
    Category.GAS_SMELL: (
        "Не включайте и не выключайте свет и электроприборы, не пользуйтесь огнём, откройте окна, "
        "покиньте помещение и позвоните в газовую службу 104 или 112."
    ),
    Category.WATER_ACCIDENT: (
        "Если это безопасно, перекройте кран на вводе в квартиру и отключите электричество "
        "в мокрых помещениях. Не прикасайтесь к электроприборам, стоящим в воде."
    ),
    Category.HEATING_ACCIDENT: (
        "Осторожно: вода может быть горячей. Если это безопасно, отключите электричество в мокрых "
        "помещениях и уберите вещи от воды."
    ),
    Category.SEWER_ACCIDENT: "Не пользуйтесь канализацией до приезда бригады и предупредите соседей.",
    Category.SEWER_CLOG: "Пока засор не устранён, не сливайте воду в раковины, ванну и унитаз и предупредите соседей.",
    Category.ELECTRICITY_ACCIDENT: (
        "Не прикасайтесь к щитку и проводам и не тушите их водой. При открытом огне звоните 101 или 112."
    ),
    Category.ELEVATOR_TRAPPED: (
        "Сохраняйте спокойствие, не пытайтесь открыть двери и выбраться сами, нажмите кнопку связи "
        "с диспетчером в кабине."
    ),
}


def describe_problem(category: Category | str, text: str) -> str:
    """The category name, made specific where the text allows («Авария на системе ГВС»)."""
    category = Category(category)
    name = info(category).name
    if category is Category.WATER_ACCIDENT:
        low = text.lower()
        hot = any(w in low for w in ("горяч", "кипят", "гвс", "goryach"))
        cold = any(w in low for w in ("холодн", "хвс", "holodn"))
        if hot and not cold:
            return "Авария на системе ГВС"
        if cold and not hot:
            return "Авария на системе ХВС"
    return name


class Texts:
    """Renders reply templates with the company's name and time zone."""

    def __init__(self, tz: ZoneInfo, company_name: str, company_phone: str = "") -> None:
        self.tz = tz
        self.company_name = company_name
        self.company_phone = company_phone
        self.env = _environment()
        self.env.filters["local"] = self.local
        self.env.filters["local_time"] = self.local_time

    def local(self, value: datetime | str | None, fmt: str = "%d.%m.%Y %H:%M") -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.astimezone(self.tz).strftime(fmt)

    def local_time(self, value: datetime | None, reference: datetime | None = None) -> str:
        """«03:42» on the same local day as ``reference``, else «27.11.2026 03:12»."""
        if value is None:
            return ""
        local = value.astimezone(self.tz)
        if reference is not None and reference.astimezone(self.tz).date() == local.date():
            return local.strftime("%H:%M")
        return local.strftime("%d.%m.%Y %H:%M")

    def render(self, template: str, channel: str, **context: Any) -> str:
        names = [f"replies/{template}.{channel}.txt", f"replies/{template}.txt"]
        body = self.env.select_template(names).render(
            company=self.company_name, company_phone=self.company_phone, **context
        )
        wrapper = f"replies/_wrap.{channel}.txt"
        try:
            outer = self.env.get_template(wrapper)
        except jinja2.TemplateNotFound:
            return _tidy(body)
        return _tidy(
            outer.render(body=_tidy(body), company=self.company_name, company_phone=self.company_phone, **context)
        )

    def request_context(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Everything a reply about a request may mention, formatted for residents."""
        registered = request["registered_at"]
        clocks = request.get("clocks") or {}
        when = {name: self.local_time(c.get("due_at"), registered) for name, c in clocks.items()}
        category = Category(request["category"])
        measures = MEASURES[category].format_map(_Missing(when))
        address = (request.get("address") or {}).get("text") if request.get("address") else None
        return {
            "number": request["number"],
            "registered": self.local(registered, "%d.%m.%Y"),
            "registered_time": self.local(registered, "%H:%M"),
            "problem": describe_problem(category, request.get("text", "")),
            "category_name": info(category).name,
            "emergency": bool(request.get("emergency")),
            "measures": measures,
            "safety": SAFETY.get(category) if request.get("emergency") else None,
            "deadline": self.local(request.get("deadline")) if request.get("deadline") else None,
            "address": address,
            "status": STATUS_NAMES.get(request.get("status", ""), request.get("status", "")),
            "executor": (request.get("executor") or {}).get("name") if request.get("executor") else None,
        }


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "—"


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\n".join(out)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
