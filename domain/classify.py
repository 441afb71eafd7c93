"""Classify a resident's message: one of 16 categories, the emergency flag, a
confidence and the phrases that decided it.

The pipeline is pure and cached: normalize (domain.normalize) → words with
lemmas and clauses → concepts (domain.lexicon) with negation and tense →
category rules that weigh evidence → the most urgent confident problem wins.
Rules speak about concepts ("a heating part that leaks"), not about example
sentences, so that they carry over to messages nobody has seen yet.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from domain.categories import CATEGORIES, Category
from domain.learned import LinearModel, Prediction, default_model
from domain.lexicon import ABBREVIATIONS, CONCEPTS, LOCATIVES, NEGATORS, ONGOING_BEFORE
from domain.normalize import is_known, lemma, normalize, sound_core, sound_key

STRONG = 3.0
"""Evidence that on its own settles a category."""

_WORD = re.compile(r"[а-яa-z0-9]+(?:-[а-яa-z]+)*")
_CLAUSE_BREAK = re.compile(r"[.!?;\n…]+|\s[—–-]\s|,\s*(?:а|но|однако|зато)\s")
_SEGMENT_BREAK = re.compile(r",")


_LAST_WORD = re.compile(r"([а-яa-z0-9-]+)$")


def _clause_breaks(text: str) -> list[int]:
    """Offsets where a clause ends; the dot of «ул.», «д. 7» or «3.5» does not end one."""
    breaks: list[int] = []
    for match in _CLAUSE_BREAK.finditer(text):
        if match.group(0) == ".":
            before = _LAST_WORD.search(text, max(0, match.start() - 24), match.start())
            after = text[match.end() : match.end() + 1]
            if before and (before.group(1) in ABBREVIATIONS or len(before.group(1)) == 1 or after.isdigit()):
                continue
        breaks.append(match.start())
    return breaks


@dataclass(frozen=True)
class Classification:
    category: Category
    emergency: bool
    confidence: float
    phrases: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    decided_by: str = "rules"
    """``rules`` (a phrase of the lexicon), ``model`` (the learned model), or ``rules+model`` (both agree)."""
    model: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    """The learned model's probabilities, the likeliest first."""

    def as_dict(self) -> dict[str, object]:
        return {
            "category": self.category.value,
            "emergency": self.emergency,
            "confidence": round(self.confidence, 3),
            "phrases": list(self.phrases),
            "decided_by": self.decided_by,
        }


@dataclass(frozen=True)
class Word:
    text: str
    lemma: str
    index: int
    clause: int
    segment: int
    start: int
    end: int


# -- concept lookup ----------------------------------------------------------


def _build_index() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    exact: dict[str, set[str]] = defaultdict(set)
    stems: list[tuple[str, str]] = []
    for concept, entries in CONCEPTS.items():
        for entry in entries:
            if entry.startswith("="):
                exact[entry[1:]].add(concept)
            else:
                stems.append((entry, concept))
    stems.sort(key=lambda item: -len(item[0]))
    return dict(exact), stems


_EXACT, _STEMS = _build_index()
_STEM_SOUNDS = [(sound_key(stem), concept) for stem, concept in _STEMS if len(stem) >= 3]
_EXACT_SOUNDS: dict[str, set[str]] = defaultdict(set)
for _exact, _concepts in _EXACT.items():
    if len(_exact) >= 4 and len(sound_core(_exact)) >= 3:
        _EXACT_SOUNDS[sound_core(_exact)] |= _concepts
_STEMS_BY_FIRST: dict[str, list[tuple[str, str]]] = defaultdict(list)
for _stem, _concept in _STEMS:
    _STEMS_BY_FIRST[_stem[0]].append((_stem, _concept))


def _within_one_edit(a: str, b: str) -> bool:
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]


def _direct_concepts(surface: str, base: str) -> set[str]:
    found: set[str] = set()
    for form in {surface, base}:
        found |= _EXACT.get(form, set())
        for stem, concept in _STEMS_BY_FIRST.get(form[:1], ()):
            if form.startswith(stem):
                found.add(concept)
    return found


@lru_cache(maxsize=100_000)
def concepts_of(surface: str) -> tuple[str, frozenset[str]]:
    """The lemma of a word and the concepts it expresses, with one-typo tolerance for unknown words."""
    base = lemma(surface)
    found = _direct_concepts(surface, base)
    if found or len(surface) < 4 or surface.isdigit() or is_known(surface):
        return base, frozenset(found)
    for stem, concept in _STEMS:
        if len(stem) >= 4 and _within_one_edit(surface[: len(stem)], stem):
            found.add(concept)
    for exact, concepts in _EXACT.items():
        if len(exact) >= 5 and (_within_one_edit(surface, exact) or _within_one_edit(base, exact)):
            found |= concepts
    if not found:
        found = _sounds_like(surface)
    return base, frozenset(found)


def _sounds_like(surface: str) -> set[str]:
    """Concepts of a misspelled word, by how it sounds («тичот» → течёт, «патолка» → потолок)."""
    key, core = sound_key(surface), sound_core(surface)
    found = {concept for stem_key, concept in _STEM_SOUNDS if len(stem_key) >= 3 and key.startswith(stem_key)}
    return found | _EXACT_SOUNDS.get(core, set())


_BOTH_ASPECTS = frozenset({"бежать", "течь", "литься", "женить", "казнить", "использовать", "атаковать"})
"""Verbs the dictionary also files as perfective: their present reads as a future."""


@lru_cache(maxsize=20_000)
def _future(word: str) -> bool:
    """A perfective verb in the future («прорвёт», «застрянем»): something that may happen, not that does."""
    from domain.normalize import _MORPH

    if not _MORPH.word_is_known(word):
        return False
    parse = _MORPH.parse(word)[0]
    tag = parse.tag
    return tag.POS == "VERB" and tag.tense == "futr" and tag.aspect == "perf" and parse.normal_form not in _BOTH_ASPECTS


@lru_cache(maxsize=20_000)
def _done(word: str) -> bool:
    """A verb in the past («устранили», «достали») or a state word («сухо»): the problem is over."""
    from domain.normalize import _MORPH

    tag = _MORPH.parse(word)[0].tag
    if tag.POS in ("VERB", "INFN", "GRND"):
        return tag.POS == "VERB" and tag.tense == "past"
    return True


# -- analysis ----------------------------------------------------------------


class Analysis:
    """Words of one message with their concepts, negation and tense marks."""

    def __init__(self, text: str) -> None:
        self.text = normalize(text)
        self.words: list[Word] = []
        self.hits: dict[str, list[int]] = defaultdict(list)
        clause = segment = 0
        breaks = _clause_breaks(self.text)
        commas = [m.start() for m in _SEGMENT_BREAK.finditer(self.text)]
        b = c = 0
        for match in _WORD.finditer(self.text):
            while b < len(breaks) and breaks[b] < match.start():
                clause += 1
                segment += 1
                b += 1
            while c < len(commas) and commas[c] < match.start():
                segment += 1
                c += 1
            surface = match.group(0)
            base, concepts = concepts_of(surface)
            word = Word(surface, base, len(self.words), clause, segment, match.start(), match.end())
            self.words.append(word)
            for concept in concepts:
                self.hits[concept].append(word.index)
        self.negated = self._negated()
        self.historic = self._historic_clauses()
        self.hypothetical = self._hypothetical()
        self._current: dict[str, list[int]] = {}
        self._active: dict[str, list[int]] = {}
        self.question = "?" in self.text

    def _negated(self) -> set[int]:
        negated: set[int] = set()
        words = self.words
        for w in words:
            if w.text not in NEGATORS:
                continue
            for j in (w.index + 1, w.index + 2):
                if j < len(words) and words[j].segment == w.segment:
                    negated.add(j)
            if w.text.startswith("никак"):
                for j in range(w.index + 1, min(w.index + 5, len(words))):
                    if words[j].segment == w.segment:
                        negated.add(j)
            if w.text in ("нет", "нету"):
                for j in (w.index - 1, w.index - 2):
                    if j >= 0 and words[j].segment == w.segment:
                        negated.add(j)
        return negated

    def _historic_clauses(self) -> set[int]:
        """Segments about the past or about something already fixed («вчера застрял, его достали»)."""
        historic: set[int] = set()
        now = {self.words[i].segment for i in self.hits.get("NOW", [])}
        for concept in ("PAST", "RESOLVED"):
            for i in self.hits.get(concept, []):
                w = self.words[i]
                if i > 0 and self.words[i - 1].text in ONGOING_BEFORE:
                    continue
                if i in self.negated:
                    continue
                if concept == "RESOLVED" and not _done(w.text):
                    continue
                if concept == "RESOLVED" or w.segment not in now:
                    historic.add(w.segment)
        problems = {self.words[i].segment for c in ("LEAK", "BURST", "TRAP") for i in self.hits.get(c, [])}
        for w in self.words:
            if w.text in ("был", "была", "было", "были") and w.segment in problems and w.segment not in now:
                historic.add(w.segment)
        return historic

    def _hypothetical(self) -> set[int]:
        """Words about what might happen, not what happens: «боимся застрять», «если прорвёт трубу»,
        «застрянем» (a verb in the future)."""
        marked: set[int] = set()
        hypo_segments = {self.words[i].segment for i in self.hits.get("HYPO", [])}
        for w in self.words:
            if w.segment in hypo_segments or _future(w.text):
                marked.add(w.index)
        return marked

    # Queries used by the rules. "Active" means neither negated nor in a historic clause nor hypothetical.

    def all(self, concept: str) -> list[int]:
        return self.hits.get(concept, [])

    def current(self, concept: str) -> list[int]:
        """Occurrences outside historic segments, negated or not («не моют» is still about washing)."""
        found = self._current.get(concept)
        if found is None:
            found = [i for i in self.hits.get(concept, ()) if self.words[i].segment not in self.historic]
            self._current[concept] = found
        return found

    def active(self, concept: str) -> list[int]:
        found = self._active.get(concept)
        if found is None:
            found = [i for i in self.current(concept) if i not in self.negated and i not in self.hypothetical]
            self._active[concept] = found
        return found

    def absent(self, concept: str) -> list[int]:
        """Occurrences that are negated in a current segment: «нет воды», «не горит»."""
        return [i for i in self.current(concept) if i in self.negated]

    def lemmas(self, *lemmas: str) -> list[int]:
        wanted = set(lemmas)
        return [w.index for w in self.words if w.lemma in wanted and w.segment not in self.historic]

    def has(self, concept: str) -> bool:
        return bool(self.active(concept))

    def near(self, a: Iterable[int], b: Iterable[int], window: int = 8) -> tuple[int, int] | None:
        """The closest pair of word positions, in the same clause or within ``window`` words."""
        best: tuple[int, int] | None = None
        b_list = list(b)
        for i in a:
            for j in b_list:
                if i == j:
                    continue
                same_clause = self.words[i].clause == self.words[j].clause
                if (same_clause and abs(i - j) <= window * 2) or abs(i - j) <= window:
                    if best is None or abs(i - j) < abs(best[0] - best[1]):
                        best = (i, j)
        return best

    def phrase(self, indices: Iterable[int]) -> str:
        idx = sorted(set(indices))
        if not idx:
            return ""
        start, end = self.words[idx[0]].start, self.words[idx[-1]].end
        if end - start > 60:
            return " … ".join(self.words[i].text for i in idx)
        return self.text[start:end]


# -- rules -------------------------------------------------------------------


@dataclass
class Evidence:
    scores: dict[Category, float] = field(default_factory=lambda: defaultdict(float))
    phrases: dict[Category, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, category: Category, weight: float, phrase: str) -> None:
        self.scores[category] += weight
        if phrase and phrase not in self.phrases[category]:
            self.phrases[category].append(phrase)


def _pair(a: Analysis, x: str | list[int], y: str | list[int], window: int = 8) -> tuple[int, int] | None:
    xs = a.active(x) if isinstance(x, str) else x
    ys = a.active(y) if isinstance(y, str) else y
    if not xs or not ys:
        return None
    return a.near(xs, ys, window)


def _without(indices: list[int], a: Analysis, concept: str) -> list[int]:
    """Positions not in a clause that also names ``concept``."""
    clauses = {a.words[i].clause for i in a.active(concept)}
    return [i for i in indices if a.words[i].clause not in clauses]


def _rule_gas(a: Analysis, ev: Evidence) -> None:
    pair = _pair(a, "GAS", "SMELL", 6)
    if pair:
        ev.add(Category.GAS_SMELL, STRONG + 1, a.phrase(pair))
    burning = _pair(a, "GAS", _fire(a), 6)
    if burning:
        ev.add(Category.GAS_SMELL, STRONG + 1, a.phrase(burning))
    for i in a.active("GAS"):
        nxt = a.words[i + 1].lemma if i + 1 < len(a.words) else ""
        prev = a.words[i - 1].lemma if i > 0 else ""
        if nxt in ("утечка", "шипеть", "травить") or prev in ("утечка", "шипеть", "травить"):
            ev.add(Category.GAS_SMELL, STRONG, a.phrase([i - 1, i] if prev else [i, i + 1]))
        if any(w.lemma in ("шипеть", "утечка") for w in a.words if w.clause == a.words[i].clause):
            ev.add(Category.GAS_SMELL, STRONG, a.phrase([i]))


def _rule_lift(a: Analysis, ev: Evidence) -> None:
    named = a.current("LIFT") + a.current("CABIN")
    lift = a.active("LIFT") + a.active("CABIN")
    if not lift:
        if a.all("LIFT") and a.has("TRAP"):
            lift = a.all("LIFT")
        elif not named and not a.all("LIFT"):
            return
    empty = bool(a.active("EMPTY")) or any(a.words[i].lemma in ("никто", "никого") for i in a.all("EMPTY"))
    trap = _pair(a, lift, "TRAP", 10) if lift else None
    people_stopped = None
    inside = a.lemmas("внутри")
    if lift and (a.has("PERSON") or a.has("DISTRESS") or inside):
        stopped = a.active("STOPPED") + [i for i in a.absent("OPEN")]
        people_stopped = _pair(a, lift, stopped, 10)
        if people_stopped and inside and not (a.has("PERSON") or a.has("DISTRESS")):
            people_stopped = people_stopped if _pair(a, inside, "PERSON", 6) or not empty else None
    if not empty and (trap or people_stopped):
        ev.add(Category.ELEVATOR_TRAPPED, STRONG + 1, a.phrase(trap or people_stopped or ()))
    anywhere = named or a.all("LIFT")
    faults = a.current("LIFT_FAULT") + a.absent("LIFT_WORKS") + a.current("STOPPED") + a.absent("LIFT")
    faults += [i for i in a.all("TRAP") if i in a.hypothetical]
    fault = _pair(a, anywhere, faults, 10) or (a.absent("LIFT")[:1] and (a.absent("LIFT")[0], a.absent("LIFT")[0]))
    if fault:
        ev.add(Category.ELEVATOR_FAULT, STRONG, a.phrase(fault))
    elif anywhere:
        ev.add(Category.ELEVATOR_FAULT, 1.5, a.phrase(anywhere[:1]))


def _fire(a: Analysis) -> list[int]:
    """Something burning: not a light that is on («свет горит», «лампочка не горит»)."""
    found = []
    for i in a.active("FIRE"):
        if a.words[i].lemma == "гореть" and any(
            a.words[j].clause == a.words[i].clause for j in a.all("LIGHT") + a.all("MINOR")
        ):
            continue
        found.append(i)
    return found


def _rule_electricity(a: Analysis, ev: Evidence) -> None:
    electric = a.active("ELECTRIC") + a.active("PANEL")
    burning = _pair(a, electric, _fire(a), 8)
    if burning and not a.has("GAS"):
        ev.add(Category.ELECTRICITY_ACCIDENT, STRONG + 1.5, a.phrase(burning))
    pair = _pair(a, electric, a.active("SPARK"), 8) or _pair(a, electric, "SPARK_STRONG", 8)
    if pair:
        ev.add(Category.ELECTRICITY_ACCIDENT, STRONG + 1, a.phrase(pair))
    strong = a.active("SPARK_STRONG")
    if strong and not pair:
        ev.add(Category.ELECTRICITY_ACCIDENT, 2.5, a.phrase(strong[:1]))
    hot_panel = _pair(a, "PANEL", "HOT", 6)
    if hot_panel:
        ev.add(Category.ELECTRICITY_ACCIDENT, 2.5, a.phrase(hot_panel))
    no_light = [i for i in a.absent("LIGHT") + _near_absence(a, "LIGHT") if not _lift_nearby(a, i)]
    if no_light:
        partial = _partial_outage(a)
        if a.has("PANEL"):
            ev.add(Category.ELECTRICITY_ACCIDENT, STRONG, a.phrase(no_light[:1] + a.active("PANEL")[:1]))
        elif partial:
            ev.add(Category.ELECTRICITY_ACCIDENT, STRONG, a.phrase(no_light[:1] + partial[:1]))
    flicker = _pair(a, "FLICKER", "LIGHT", 6)
    if flicker and not a.has("MINOR") and not _common_area_only(a):
        ev.add(Category.ELECTRICITY_ACCIDENT, 2.0, a.phrase(flicker))


def _partial_outage(a: Analysis) -> list[int]:
    """Power is missing only in part of the house while the rest has it: a house-wiring fault."""
    marks: list[int] = []
    for w in a.words:
        if w.lemma == "полподъезда":
            marks.append(w.index)
        if w.lemma in ("есть", "гореть") and w.index not in a.negated:
            if any(x.lemma in ("сосед", "соседний", "остальной") for x in a.words if x.clause == w.clause):
                marks.append(w.index)
    return marks


def _common_area_only(a: Analysis) -> bool:
    return bool(a.active("COMMON")) and not a.active("INFLAT")


def _near_absence(a: Analysis, concept: str) -> list[int]:
    """«отсутствует горячая вода», «отключили свет»: a resource named next to an absence word."""
    found: list[int] = []
    absence = a.active("ABSENT")
    for i in a.active(concept):
        if any(a.words[j].clause == a.words[i].clause and abs(i - j) <= 4 for j in absence):
            found.append(i)
    return found


def _rule_water_family(a: Analysis, ev: Evidence) -> None:
    burst = a.active("BURST")
    steaming_pipe = [i for i in a.active("STEAM") if _pair(a, [i], a.active("PIPE") + a.active("WATER"), 4)]
    leak = a.active("LEAK") + steaming_pipe
    wet = burst + leak
    heating = a.active("HEATING")
    sewer = a.active("SEWER")
    roofish = a.active("ROOF") + a.active("RAIN") + _topfloor(a)

    heat_pair = _pair(a, heating, wet + a.active("STEAM") + a.active("BREAK"), 8)
    if heat_pair:
        ev.add(Category.HEATING_ACCIDENT, STRONG + (1 if burst else 0), a.phrase(heat_pair))

    sewer_wet = _pair(a, sewer, wet + a.active("BREAK"), 10)
    clog_words = a.active("CLOG")
    if sewer_wet and (not clog_words or burst or a.active("BREAK")):
        ev.add(Category.SEWER_ACCIDENT, STRONG + (1 if burst or a.active("BREAK") else 0), a.phrase(sewer_wet))
    _sewage_standing(a, ev, sewer, clog_words)
    pipe_burst = _pair(a, _without(_without(burst, a, "HEATING"), a, "SEWER"), a.active("PIPE"), 6)
    if pipe_burst and not a.active("DRY"):
        ev.add(Category.WATER_ACCIDENT, STRONG + 1, a.phrase(pipe_burst))

    if a.active("DRY"):
        if wet:
            ev.add(Category.CONSULTATION, 1.5, a.phrase(a.active("DRY")[:1]))
        return
    if roofish and (wet or a.active("CEILING")) and not pipe_burst:
        pair = _pair(a, roofish, wet + a.active("CEILING"), 12)
        if pair:
            ev.add(Category.ROOF_LEAK, STRONG + 0.5, a.phrase(pair))
    if a.active("RAIN") and _topfloor(a):
        ev.add(Category.ROOF_LEAK, 2.0, a.phrase(a.active("RAIN")[:1] + _topfloor(a)[:1]))

    if heat_pair and not a.active("WATER") and not a.active("CEILING"):
        return
    wet_free = _without(_without(wet, a, "HEATING"), a, "SEWER")
    if roofish:
        wet_free = _without(wet_free, a, "RAIN") if a.active("RAIN") else wet_free
        if a.active("ROOF") or _topfloor(a):
            wet_free = [i for i in wet_free if not _pair(a, [i], roofish, 12)]
    if not wet_free:
        return
    main_pipe = [i for i in a.active("PIPE") if a.words[i].lemma != "кран"]
    burst_free = [i for i in wet_free if i in burst]
    body = a.active("WATER") + a.active("PIPE") + a.active("CEILING") + _floor_words(a)
    pair = _pair(a, burst_free, body, 8)
    if pair:
        ev.add(Category.WATER_ACCIDENT, STRONG + 1, a.phrase(pair))
        return
    if burst_free and (a.active("ABOVE") or a.active("URGENT")):
        ev.add(Category.WATER_ACCIDENT, STRONG, a.phrase(burst_free[:1]))
        return
    pair = _pair(a, wet_free, main_pipe + a.active("CEILING"), 8)
    if pair:
        ev.add(Category.WATER_ACCIDENT, STRONG, a.phrase(pair))
        return
    pair = _pair(a, wet_free, a.active("WATER") + _floor_words(a), 6)
    if pair:
        ev.add(Category.WATER_ACCIDENT, 2.0, a.phrase(pair))


def _sewage_standing(a: Analysis, ev: Evidence, sewer: list[int], clog: list[int]) -> None:
    """Sewage that sits in a basement or floods it, or chokes the stairs with its smell, is an accident even
    without a burst pipe; water standing in one's own bath behind a clog is not."""
    if not sewer:
        return
    basement = a.active("BASEMENT")
    standing = a.active("STANDING")
    no_drain = a.absent("DRAIN")
    pair = _pair(a, sewer, standing + basement, 10)
    fixtures = a.active("BASIN")
    if pair and (basement or not (clog or no_drain or fixtures)):
        ev.add(Category.SEWER_ACCIDENT, STRONG + (1 if basement else 0), a.phrase(pair))
        return
    choking = a.active("CHOKING") + a.lemmas("нечем")
    smell = a.active("SMELL")
    if smell and (choking or basement) and not (clog or no_drain):
        near = _pair(a, sewer, smell + choking, 10)
        if near:
            ev.add(Category.SEWER_ACCIDENT, STRONG, a.phrase(near))


def _topfloor(a: Analysis) -> list[int]:
    found = []
    for i in a.active("TOPFLOOR"):
        window = a.words[max(0, i - 3) : i + 4]
        if any(w.lemma in ("этаж", "этажа") or w.text.isdigit() for w in window):
            found.append(i)
    for i in a.active("ROOF"):
        if a.words[i].lemma == "технический":
            found.append(i)
    return found


def _floor_words(a: Analysis) -> list[int]:
    return [i for i in a.lemmas("пол", "лестница", "колено", "щиколотка", "подвал", "сосед") if i not in a.negated]


def _rule_clogs(a: Analysis, ev: Evidence) -> None:
    clog = a.active("CLOG")
    chute = a.active("CHUTE") + _trash_pipe(a)
    fixtures = a.active("BASIN") + [i for i in a.active("PIPE") if a.words[i].lemma == "стояк"]
    basin = fixtures + a.active("SEWER")
    no_drain = a.absent("DRAIN")
    backflow = _pair(a, "BACKFLOW", fixtures + a.active("SEWER"), 4)

    chute_clauses = {a.words[i].clause for i in chute}
    sewer_clog = [i for i in clog if a.words[i].clause not in chute_clauses or _pair(a, [i], fixtures, 2)]
    own_only = _own_only(a)
    if chute:
        if clog or a.absent("OPEN") or a.active("TRASH") or a.active("STOPPED"):
            ev.add(Category.GARBAGE_CHUTE_CLOG, STRONG + 0.5, a.phrase(chute[:1] + (clog or [])[:1]))
        else:
            ev.add(Category.GARBAGE_CHUTE_CLOG, 2.0, a.phrase(chute[:1]))
    target = Category.PAID_SERVICE if own_only else Category.SEWER_CLOG
    weight = 2.5 if own_only else STRONG
    pair = _pair(a, sewer_clog, basin, 10) if sewer_clog else None
    if pair:
        ev.add(target, weight + 0.5, a.phrase(pair))
    elif sewer_clog and not chute:
        ev.add(target, 2.0, a.phrase(sewer_clog[:1]))
    drain_pair = _pair(a, no_drain, a.active("BASIN") + a.active("WATER") + a.active("SEWER"), 6)
    if drain_pair:
        ev.add(target, weight if (_neighbours(a) or own_only) else 2.0, a.phrase(drain_pair))
    if backflow and not own_only:
        ev.add(Category.SEWER_CLOG, STRONG, a.phrase(backflow))


def _trash_pipe(a: Analysis) -> list[int]:
    return [i for i in a.active("TRASH") if _pair(a, [i], "PIPE", 2)]


def _neighbours(a: Analysis) -> bool:
    return bool(a.lemmas("сосед", "соседка", "стояк", "вертикаль", "этаж", "квартира")) or bool(
        re.search(r"\bкв\b|\d+\s*,\s*\d+", a.text)
    )


def _own_only(a: Analysis) -> bool:
    return bool(re.search(r"только у (меня|нас)|у соседей (все )?(нормально|хорошо|в порядке)", a.text))


_IMPERFECTIVE_PAST: dict[str, bool] = {}


def _imperfective_past(word: str) -> bool:
    """«отсутствовала», «не было»: a state that held in the past, not now."""
    if word not in _IMPERFECTIVE_PAST:
        from domain.normalize import _MORPH

        tag = _MORPH.parse(word)[0].tag
        _IMPERFECTIVE_PAST[word] = (tag.tense == "past" and tag.aspect == "impf") or word in ("было", "была", "был")
    return _IMPERFECTIVE_PAST[word]


def _rule_outage(a: Analysis, ev: Evidence) -> None:
    absent: list[int] = []
    for concept in ("WATER", "HOT", "HEATING", "LIGHT", "GAS"):
        for i in a.absent(concept) + _near_absence(a, concept):
            if concept == "GAS" and _smell_nearby(a, i):
                continue
            if _lift_nearby(a, i):
                continue
            absent.append(i)
    cold_heating = _pair(a, "HEATING", "COLD", 6)
    if cold_heating:
        absent.extend(cold_heating)
    absent.extend(_hot_runs_cold(a))
    absent.extend(_weak_pressure(a))
    no_flow = _pair(a, a.absent("FLOW"), a.active("WATER") + a.active("HOT"), 3)
    if no_flow:
        absent.extend(no_flow)
    if absent:
        weight = STRONG
        if _lighting_in_common_area(a, absent):
            weight = 1.0
        elif _planned(a) or _told_in_past(a, absent):
            weight = 1.0 if a.question else 1.5
        ev.add(Category.UTILITY_OUTAGE, weight, a.phrase(sorted(set(absent))[:2]))
    weak = _pair(a, "ABSENT_WEAK", a.active("WATER") + a.active("HOT") + a.active("LIGHT") + a.active("HEATING"), 4)
    if weak:
        ev.add(Category.UTILITY_OUTAGE, 1.0, a.phrase(weak))


def _smell_nearby(a: Analysis, i: int) -> bool:
    """«пахнет не газом», «не газом пахнет, а краской»: a negated gas beside a smell is about the smell,
    not gas missing from the stove."""
    clause = a.words[i].clause
    return any("SMELL" in concepts_of(w.text)[1] and w.clause == clause for w in a.words[max(0, i - 3) : i + 4])


def _hot_runs_cold(a: Analysis) -> list[int]:
    """«горячая вода идёт холодная»: hot water that runs cold is missing hot water."""
    for i in a.active("HOT"):
        for j in a.active("WATER"):
            if 0 <= j - i <= 2:
                for k in a.active("COLD"):
                    if 0 < k - j <= 6 and a.words[k].clause == a.words[j].clause:
                        between = {w.text for w in a.words[j + 1 : k]}
                        if "и" not in between:
                            return [i, k]
    return []


def _weak_pressure(a: Analysis) -> list[int]:
    """«слабый напор», «нет давления»: the service is there in name only."""
    weak = a.lemmas("слабый", "плохой", "низкий", "еле", "никакой", "маленький")
    return [i for i in a.current("PRESSURE") if i in a.negated or _pair(a, [i], weak, 3)]


def _planned(a: Analysis) -> bool:
    """Planned works are mentioned, and not as «никаких объявлений не было»."""
    negated_segments = {w.segment for w in a.words if w.text in NEGATORS}
    return any(a.words[i].segment not in negated_segments for i in a.active("PLANNED"))


def _told_in_past(a: Analysis, absent: list[int]) -> bool:
    verbs = [w for w in a.words if w.index in set(a.all("ABSENT")) | {x - 1 for x in absent} | {x + 1 for x in absent}]
    return bool(verbs) and all(_imperfective_past(w.text) for w in verbs if w.lemma not in ("не", "нет"))


def _lift_nearby(a: Analysis, i: int) -> bool:
    return any(a.words[j].segment == a.words[i].segment for j in a.all("LIFT") + a.all("CABIN"))


def _lighting_in_common_area(a: Analysis, absent: list[int]) -> bool:
    """«в подъезде свет не горит» is a lamp to change, not a power outage."""
    only_light = all(i in a.all("LIGHT") for i in absent)
    if not only_light:
        return False
    return (_common_area_only(a) and not a.has("HOUSE_WIDE")) or a.has("MINOR")


def _san_actions(a: Analysis) -> list[int]:
    return a.lemmas(
        "чистить",
        "почистить",
        "убирать",
        "убрать",
        "мыть",
        "помыть",
        "подметать",
        "посыпать",
        "вывозить",
        "вывезти",
        "расчистить",
        "чищенный",
        "очистить",
    )


def _rule_minor(a: Analysis, ev: Evidence) -> None:
    if a.current("LIFT") or a.current("CABIN"):
        return
    minor = [i for i in a.current("MINOR") if not (i > 0 and a.words[i - 1].text in LOCATIVES)]
    strong_minor = [
        i
        for i in minor
        if a.words[i].lemma
        not in ("подвал", "подвальный", "балкон", "лестница", "трубка", "ключ", "окно", "дверь", "входной", "фасад")
    ]
    penalty = 1.5 if _san_actions(a) else 0.0
    if strong_minor:
        ev.add(Category.MINOR_REPAIR, 2.0 + 0.5 * min(len(strong_minor), 3) - penalty, a.phrase(strong_minor[:2]))
    elif minor and (a.absent("WORK_NOT") or a.has("BREAK") or _broken(a)):
        ev.add(Category.MINOR_REPAIR, 2.5 - penalty, a.phrase(minor[:2]))
    lights_out = [
        i for i in a.all("LIGHT") + a.all("MINOR") if _pair(a, [i], a.absent("WORK_NOT") + a.absent("LIGHT"), 3)
    ]
    if lights_out and (_common_area_only(a) or a.has("MINOR")):
        ev.add(Category.MINOR_REPAIR, 2.0, a.phrase(lights_out[:1]))
    dark = a.lemmas("темно", "темнота", "темень", "ощупь")
    if dark and a.has("COMMON"):
        ev.add(Category.MINOR_REPAIR, 1.5, a.phrase(dark[:1]))


def _broken(a: Analysis) -> bool:
    return bool(
        a.lemmas(
            "сломать",
            "сломаться",
            "разбить",
            "оторвать",
            "отвалиться",
            "шататься",
            "раскрошиться",
            "повредить",
            "сорвать",
            "хлопать",
            "закрываться",
            "открываться",
            "запираться",
            "срабатывать",
        )
    )


def _rule_paid(a: Analysis, ev: Evidence) -> None:
    paid = a.current("PAID")
    if not paid:
        return
    master = a.current("ASK_MASTER")
    weight = 1.0 * min(len(paid), 4) + (1.0 if master else 0.0)
    if a.question or master:
        weight += 0.5
    if a.current("OWN") or a.current("INFLAT"):
        weight += 0.5
    ev.add(Category.PAID_SERVICE, weight, a.phrase(paid[:2]))


def _sewage_nearby(a: Analysis, i: int) -> bool:
    """Smell, flies and rats that come with sewage in the basement belong to the sewer accident."""
    return bool(a.active("SEWER")) and (bool(a.active("BASEMENT")) or bool(a.active("STANDING")))


_HAZARDS = (
    "сосулька",
    "гололед",
    "наледь",
    "таракан",
    "крыса",
    "клоп",
    "мышь",
    "блоха",
    "шприц",
    "скользко",
    "обледенение",
    "грызун",
    "дезинсекция",
    "дератизация",
)


def _rule_sanitation(a: Analysis, ev: Evidence) -> None:
    san = a.current("SANITATION") + [i for i in a.current("TRASH") if not a.current("CHUTE")]
    san = [i for i in san if not _sewage_nearby(a, i)]
    if san:
        weight = 1.5 + 1.0 * min(len(set(san)), 3)
        if any(a.words[i].lemma in _HAZARDS for i in san):
            weight += 1.0
        if a.current("CHUTE") and (a.active("CLOG") or a.absent("OPEN")):
            weight = min(weight, 3.0)
        ev.add(Category.SANITATION, weight, a.phrase(san[:2]))
    dirty_smell = _pair(a, "SMELL", a.lemmas("кошка", "моча", "подъезд"), 5)
    if dirty_smell and not a.has("GAS") and not a.has("SEWER") and not a.current("CHUTE"):
        ev.add(Category.SANITATION, 1.5, a.phrase(dirty_smell))


def _rule_consultation(a: Analysis, ev: Evidence) -> None:
    consult = a.current("CONSULT")
    score = 1.5 * min(len(set(consult)), 4)
    quality = _pair(a, "WATER_QUALITY", a.current("WATER") + a.lemmas("кран"), 6)
    if quality and not a.has("LEAK") and not a.has("BURST"):
        score += 3.0
        consult = consult + list(quality)
    if a.question and (_planned(a) or a.hypothetical & set(a.all("BURST") + a.all("LEAK"))):
        score += 2.0
    if a.question and a.lemmas("подсказать", "узнать", "уточнить"):
        score += 1.0
    if a.question and a.current("QUESTION_WORD"):
        score += 1.0
    if a.question and re.search(r"что (мне |нам )?(делать|можно сделать)|как быть|куда (обращаться|звонить)", a.text):
        score += 1.5
    if a.words and a.words[0].lemma in ("подсказать", "скажите", "сказать", "как", "когда", "почему", "где", "куда"):
        score += 0.5
    if score:
        ev.add(Category.CONSULTATION, score, a.phrase((consult or a.current("QUESTION_WORD"))[:2]))


def _rule_other(a: Analysis, ev: Evidence) -> None:
    other = a.current("OTHER")
    if other:
        ev.add(Category.OTHER, 2.0 + 0.5 * min(len(other), 3), a.phrase(other[:2]))


RULES = (
    _rule_gas,
    _rule_lift,
    _rule_electricity,
    _rule_water_family,
    _rule_clogs,
    _rule_outage,
    _rule_minor,
    _rule_paid,
    _rule_sanitation,
    _rule_consultation,
    _rule_other,
)


def _decide(ev: Evidence) -> tuple[Category, float]:
    scores = ev.scores
    if not scores:
        return Category.OTHER, 0.3
    urgent = [c for c, s in scores.items() if CATEGORIES[c].emergency and s >= STRONG]
    ranked = sorted(scores.items(), key=lambda cs: (cs[1], CATEGORIES[cs[0]].severity), reverse=True)
    if Category.WATER_ACCIDENT in urgent:
        for specific in (Category.HEATING_ACCIDENT, Category.SEWER_ACCIDENT):
            if specific in urgent and scores[specific] + 1 >= scores[Category.WATER_ACCIDENT]:
                urgent.remove(Category.WATER_ACCIDENT)
                break
    if urgent:
        best = max(urgent, key=lambda c: (CATEGORIES[c].severity, scores[c]))
    else:
        best = ranked[0][0]
    top = scores[best]
    runner_up = max((s for c, s in scores.items() if c != best), default=0.0)
    confidence = 0.45 + 0.08 * min(top, 5.0) - 0.05 * max(0.0, runner_up - top + 2.0)
    if urgent:
        confidence += 0.1
    return best, max(0.2, min(0.99, confidence))


@dataclass(frozen=True)
class Combination:
    """How the rules and the learned model decide together: recall first.

    An emergency either finds is an emergency. Otherwise the rules decide when their evidence is strong, and
    the model when the rules have little to say and the model is sure enough. Training chooses the cut-offs
    on its own cross-validated decisions and stores them with the model."""

    emergency: float = 0.5
    """The model's summed probability of the emergency categories that makes a message an emergency."""
    category: float = 0.55
    """The model's probability of its likeliest category that overrides weak rules."""
    weak: float = STRONG
    """Rule evidence below this is weak."""

    @classmethod
    def of(cls, model: LinearModel) -> Combination:
        known = {k: v for k, v in model.thresholds.items() if k in ("emergency", "category", "weak")}
        return cls(**known)


def rules_only(text: str) -> tuple[Classification, Analysis]:
    analysis = Analysis(text)
    evidence = Evidence()
    for rule in RULES:
        rule(analysis, evidence)
    category, confidence = _decide(evidence)
    decided = Classification(
        category=category,
        emergency=CATEGORIES[category].emergency,
        confidence=round(confidence, 3),
        phrases=tuple(evidence.phrases.get(category, ())[:3]),
        scores={c.value: round(s, 2) for c, s in evidence.scores.items()},
    )
    return decided, analysis


EMERGENCIES = tuple(c for c in Category if CATEGORIES[c].emergency)


def combine(
    rules: Classification, prediction: Prediction, combination: Combination, analysis: Analysis
) -> tuple[Category, str, float]:
    """The category, who decided it (rules, model or both) and the confidence, from the two opinions.

    The model may not overrule the rules with words the rules read as negated, past or hypothetical
    («газом не пахнет», «вчера прорвало, уже починили»): there the rules know better."""
    best, probability = prediction.best
    strength = max(rules.scores.values(), default=0.0)
    if not rules.emergency and prediction.emergency_probability(EMERGENCIES) >= combination.emergency:
        chosen = max(EMERGENCIES, key=lambda c: prediction.probabilities.get(c, 0.0))
        if not _doubted(analysis, prediction, chosen):
            return chosen, "model", prediction.probabilities[chosen]
    if (
        strength < combination.weak
        and probability >= combination.category
        and best != rules.category
        and not _doubted(analysis, prediction, best)
    ):
        return best, "model", probability
    if best == rules.category:
        return rules.category, "rules+model", max(rules.confidence, probability)
    return rules.category, "rules", rules.confidence


def _doubted(analysis: Analysis, prediction: Prediction, category: Category, top: int = 2) -> bool:
    """Whether one of the model's weightiest words for ``category`` is a lexicon word the rules doubt."""
    for index, _ in prediction.evidence(category)[:top]:
        word = analysis.words[index]
        if index in analysis.negated or word.segment in analysis.historic or index in analysis.hypothetical:
            return True
    return False


def classify_with(text: str, model: LinearModel | None, combination: Combination | None = None) -> Classification:
    """Category, emergency flag, confidence and deciding phrases of one message, with a given model."""
    rules, analysis = rules_only(text)
    if model is None:
        return rules
    prediction = model.predict(analysis)
    chosen, by, confidence = combine(rules, prediction, combination or Combination.of(model), analysis)
    phrases = prediction.words_for(chosen) if by == "model" else rules.phrases
    ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])
    return Classification(
        category=chosen,
        emergency=CATEGORIES[chosen].emergency,
        confidence=round(min(0.99, confidence), 3),
        phrases=tuple(phrases[:4]),
        scores=rules.scores,
        decided_by=by,
        model={c.value: round(p, 3) for c, p in ranked[:3]},
    )


@lru_cache(maxsize=4096)
def classify(text: str) -> Classification:
    """Category, emergency flag, confidence and deciding phrases of one message: the rules and the shipped
    model together (the rules alone when no model is shipped)."""
    return classify_with(text, default_model())
