"""Text normalization for residents' Russian: case, ё, look-alike Latin letters,
the wrong keyboard layout ("ghbdtn"), transliteration ("net goryachey vody"),
and number words in voicemail transcripts ("квартира сорок семь").

Pure functions with bounded caches; nothing is downloaded at run time
(pymorphy3's dictionaries come from PyPI).
"""

from __future__ import annotations

import re
from functools import lru_cache

import pymorphy3

_MORPH = pymorphy3.MorphAnalyzer(lang="ru")

CYRILLIC = set("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")
LATIN = set("abcdefghijklmnopqrstuvwxyz")

# Latin letters that look like Cyrillic ones (inside an otherwise Cyrillic word).
LOOKALIKES = str.maketrans(
    {
        "a": "а",
        "b": "в",
        "c": "с",
        "e": "е",
        "h": "н",
        "k": "к",
        "m": "м",
        "o": "о",
        "p": "р",
        "t": "т",
        "x": "х",
        "y": "у",
        "u": "и",
        "r": "г",
        "n": "п",
    }
)

# QWERTY key -> ЙЦУКЕН key on the same position.
_LAYOUT_SRC = "qwertyuiop[]asdfghjkl;'zxcvbnm,.`"
_LAYOUT_DST = "йцукенгшщзхъфывапролджэячсмитьбюё"
LAYOUT = str.maketrans(_LAYOUT_SRC, _LAYOUT_DST)

_TRANSLIT = [
    ("shch", "щ"),
    ("sch", "щ"),
    ("zh", "ж"),
    ("kh", "х"),
    ("ch", "ч"),
    ("sh", "ш"),
    ("ts", "ц"),
    ("tz", "ц"),
    ("yu", "ю"),
    ("ju", "ю"),
    ("iu", "ю"),
    ("ya", "я"),
    ("ja", "я"),
    ("ia", "я"),
    ("yo", "ё"),
    ("jo", "ё"),
    ("ye", "е"),
    ("je", "е"),
    ("e'", "э"),
    ("''", "ъ"),
    ("'", "ь"),
    ("a", "а"),
    ("b", "б"),
    ("c", "ц"),
    ("d", "д"),
    ("e", "е"),
    ("f", "ф"),
    ("g", "г"),
    ("h", "х"),
    ("i", "и"),
    ("j", "й"),
    ("k", "к"),
    ("l", "л"),
    ("m", "м"),
    ("n", "н"),
    ("o", "о"),
    ("p", "п"),
    ("q", "к"),
    ("r", "р"),
    ("s", "с"),
    ("t", "т"),
    ("u", "у"),
    ("v", "в"),
    ("w", "в"),
    ("x", "кс"),
    ("y", "ы"),
    ("z", "з"),
]
_VOWELS_CYR = set("аеёиоуыэюя")

_WORD_RE = re.compile(r"[a-zа-я0-9'\[\];`]+(?:-[a-zа-я0-9]+)*", re.IGNORECASE)


def is_known(word: str) -> bool:
    return _MORPH.word_is_known(word)


@lru_cache(maxsize=200_000)
def lemma(word: str) -> str:
    """The dictionary form of a Russian word (or the word itself for numbers and unknowns)."""
    if not word or word.isdigit():
        return word
    return _MORPH.parse(word)[0].normal_form.replace("ё", "е")


def translit_to_cyrillic(word: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(word):
        for latin, cyr in _TRANSLIT:
            if word.startswith(latin, i):
                # 'y'/'i' after a vowel is the short й: "goryachey" -> "горячей", "zdravstvuite".
                if latin in ("y", "i") and out and out[-1] in _VOWELS_CYR:
                    nxt = word[i + 1 : i + 2]
                    if not nxt or nxt not in "aeiouy":
                        cyr = "й"
                out.append(cyr)
                i += len(latin)
                break
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def _repair_cyrillic(word: str) -> str:
    """Common spelling slips of Latin-typed Russian: a missing soft or hard sign."""
    if is_known(word):
        return word
    for candidate in (word + "ь", re.sub(r"^(под|об|раз|с|из|от|в)([еёюя])", r"\1ъ\2", word)):
        if candidate != word and is_known(candidate):
            return candidate
    return word


@lru_cache(maxsize=50_000)
def fix_latin_word(word: str) -> str:
    """Turn an all-Latin token into the Russian word it most likely is."""
    if len(word) <= 1 or word.isdigit():
        return word
    layout = word.translate(LAYOUT)
    translit = _repair_cyrillic(translit_to_cyrillic(word))
    if is_known(layout) and len(layout) > 2 and not is_known(translit):
        return layout
    return translit


_SINGLE_TRANSLIT = {"v": "в", "s": "с", "k": "к", "u": "у", "i": "и", "o": "о", "a": "а", "y": "у", "z": "з"}


def _fix_token(token: str, layout_mode: bool) -> str:
    letters = {ch for ch in token if ch.isalpha()}
    if not letters:
        return token
    if len(token) == 1 and token in LATIN:
        return token.translate(LAYOUT) if layout_mode else _SINGLE_TRANSLIT.get(token, token)
    has_cyr = bool(letters & CYRILLIC)
    has_lat = bool(letters & LATIN)
    if has_cyr and has_lat:
        return token.translate(LOOKALIKES)
    if has_lat and not has_cyr:
        core = token.strip("'`;[]")
        if not core:
            return token
        # A layout slip can swallow Russian letters typed on punctuation keys (ж э х ъ б ю).
        whole = token.translate(LAYOUT)
        if token != core and is_known(whole):
            return whole
        return fix_latin_word(core)
    return token


_ANY_LATIN = re.compile(r"[a-z]")


@lru_cache(maxsize=20_000)
def normalize(text: str) -> str:
    """Lower-case Russian text with ё→е and every Latin-typed word turned Russian."""
    lowered = text.lower().replace("ё", "е")
    if not _ANY_LATIN.search(lowered):
        return lowered
    latin_words = [w for w in _WORD_RE.findall(lowered) if len(w) > 2 and set(w) & LATIN and not set(w) & CYRILLIC]
    by_layout = sum(1 for w in latin_words if fix_latin_word(w.strip("'`;[]")) == w.strip("'`;[]").translate(LAYOUT))
    layout_mode = by_layout * 2 > len(latin_words)
    return _WORD_RE.sub(lambda m: _fix_token(m.group(0), layout_mode), lowered).replace("ё", "е")


_UNITS = {
    "ноль": 0,
    "один": 1,
    "одна": 1,
    "одно": 1,
    "первый": 1,
    "два": 2,
    "две": 2,
    "второй": 2,
    "три": 3,
    "третий": 3,
    "четыре": 4,
    "четвертый": 4,
    "пять": 5,
    "пятый": 5,
    "шесть": 6,
    "шестой": 6,
    "семь": 7,
    "седьмой": 7,
    "восемь": 8,
    "восьмой": 8,
    "девять": 9,
    "девятый": 9,
}
_TEENS = {
    "десять": 10,
    "десятый": 10,
    "одиннадцать": 11,
    "одиннадцатый": 11,
    "двенадцать": 12,
    "двенадцатый": 12,
    "тринадцать": 13,
    "тринадцатый": 13,
    "четырнадцать": 14,
    "четырнадцатый": 14,
    "пятнадцать": 15,
    "пятнадцатый": 15,
    "шестнадцать": 16,
    "шестнадцатый": 16,
    "семнадцать": 17,
    "семнадцатый": 17,
    "восемнадцать": 18,
    "восемнадцатый": 18,
    "девятнадцать": 19,
    "девятнадцатый": 19,
}
_TENS = {
    "двадцать": 20,
    "двадцатый": 20,
    "тридцать": 30,
    "тридцатый": 30,
    "сорок": 40,
    "сороковой": 40,
    "пятьдесят": 50,
    "пятидесятый": 50,
    "шестьдесят": 60,
    "шестидесятый": 60,
    "семьдесят": 70,
    "семидесятый": 70,
    "восемьдесят": 80,
    "восьмидесятый": 80,
    "девяносто": 90,
    "девяностый": 90,
}
_HUNDREDS = {
    "сто": 100,
    "сотый": 100,
    "двести": 200,
    "триста": 300,
    "четыреста": 400,
    "пятьсот": 500,
    "шестьсот": 600,
    "семьсот": 700,
    "восемьсот": 800,
    "девятьсот": 900,
}


def _number_value(word: str) -> tuple[str, int] | None:
    base = lemma(word)
    for table, kind in ((_HUNDREDS, "h"), (_TENS, "t"), (_TEENS, "e"), (_UNITS, "u")):
        if word in table:
            return kind, table[word]
        if base in table:
            return kind, table[base]
    return None


_NUMBER_WORD = re.compile(
    r"ноль|один|одна|одно|перв|два|две|втор|три|трет|четыр|четв|пят|шест|сем|вос[ье]м|девят|десят|"
    r"двадцат|тридцат|сорок|сорок|пятьдесят|шестьдесят|семьдесят|восемьдесят|девяност|сто|двест|трист|четырест|"
    r"сот",
    re.IGNORECASE,
)


def words_to_digits(text: str) -> str:
    """Replace Russian number words with digits (see ``_words_to_digits``); a fast path for texts without any."""
    if not _NUMBER_WORD.search(text):
        return text
    return _words_to_digits(text)


@lru_cache(maxsize=20_000)
def _words_to_digits(text: str) -> str:
    """Replace Russian number words with digits: «сорок семь» → «47», «сто двенадцать» → «112».

    Each group follows the natural order hundreds → tens → units; a new group
    starts whenever that order breaks, so phone numbers dictated in groups
    («восемь девятьсот шестнадцать сто двадцать три») keep their groups.
    """
    words = re.split(r"(\s+)", text)
    out: list[str] = []
    group: int | None = None
    rank = 4  # order of the last part taken: 3 hundreds, 2 tens, 1 units/teens
    pending_space = ""

    def flush() -> None:
        nonlocal group, rank
        if group is not None:
            out.append(str(group))
        group, rank = None, 4

    for piece in words:
        if piece.isspace() or not piece:
            if group is not None:
                pending_space = piece
            else:
                out.append(piece)
            continue
        value = _number_value(piece.lower().strip(".,!?"))
        if value is None:
            flush()
            if pending_space:
                out.append(pending_space)
                pending_space = ""
            out.append(piece)
            continue
        kind, number = value
        order = {"h": 3, "t": 2, "e": 1, "u": 1}[kind]
        if group is not None and order < rank and not (kind == "u" and rank == 1):
            group += number
            rank = order if kind != "t" else 2
            pending_space = ""
            continue
        flush()
        if pending_space:
            out.append(pending_space)
            pending_space = ""
        group, rank = number, order
        if kind == "e":
            rank = 1
    flush()
    if pending_space:
        out.append(pending_space)
    return "".join(out)


_SOUND_VOWELS = str.maketrans(
    {"а": "a", "о": "a", "ё": "a", "е": "i", "и": "i", "я": "i", "э": "i", "ы": "i", "у": "u", "ю": "u"}
)
_SOUND_DROP = str.maketrans("", "", "ьъй")
_DEVOICED = {"б": "п", "в": "ф", "г": "к", "д": "т", "ж": "ш", "з": "с"}


@lru_cache(maxsize=100_000)
def sound_key(word: str) -> str:
    """How a Russian word sounds, the way people misspell it: unstressed vowels merge (о/а, е/и/я), ё is о,
    щ is ш, «-тся» is «-ца», doubled letters are one, the last consonant is voiceless.
    «тичот» and «течёт», «памагите» and «помогите», «вада» and «вода» share their keys."""
    w = word.lower().replace("ться", "ца").replace("тся", "ца").replace("щ", "ш").replace("тс", "ц")
    w = w.translate(_SOUND_DROP).translate(_SOUND_VOWELS)
    out: list[str] = []
    for char in w:
        if not out or out[-1] != char:
            out.append(char)
    if out and out[-1] in _DEVOICED:
        out[-1] = _DEVOICED[out[-1]]
    return "".join(out)


def sound_core(word: str) -> str:
    """The sound key without its ending vowels: forms of one word share it («вады», «вода»)."""
    return sound_key(word).rstrip("aiu")
