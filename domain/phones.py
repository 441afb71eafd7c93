"""Find and normalize phone numbers (RU by default) so that one person is
recognised across channels: «+7 (916) 123-45-67» and «89161234567» are the same.
"""

from __future__ import annotations

import re

import phonenumbers

from domain.normalize import words_to_digits

DEFAULT_REGION = "RU"


def normalize_phone(raw: str, region: str = DEFAULT_REGION) -> str | None:
    """E.164 form of a phone number, or None when it is not a valid number."""
    candidate = raw.strip()
    if not candidate:
        return None
    digits = "".join(ch for ch in candidate if ch.isdigit())
    if region == "RU" and len(digits) == 11 and digits[0] in "78" and not candidate.startswith("+"):
        candidate = "+7" + digits[1:]
    elif region == "RU" and len(digits) == 10 and digits[0] == "9":
        candidate = "+7" + digits
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_ENOUGH_DIGITS = re.compile(r"(?:\d[\s().+-]*){7}")


def extract_phones(text: str, region: str = DEFAULT_REGION) -> list[str]:
    """Every valid phone number in ``text`` (also dictated ones), in E.164, without repeats."""
    found: list[str] = []
    sources = [text]
    spelled = words_to_digits(text)
    if spelled != text:
        sources.append(spelled)
    for source in sources:
        if not _ENOUGH_DIGITS.search(source):
            continue
        for match in phonenumbers.PhoneNumberMatcher(source, region, leniency=phonenumbers.Leniency.VALID):
            e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            if e164 not in found:
                found.append(e164)
        if found:
            break
    return found


def is_mobile(phone: str, region: str = DEFAULT_REGION) -> bool:
    """Whether an SMS can reach the number: a mobile one (or one the numbering plan cannot tell apart)."""
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return False
    kind = phonenumbers.number_type(number)
    return kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
