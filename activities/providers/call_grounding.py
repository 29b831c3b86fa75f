"""A call's argument grammar narrowed to the values the user's request states.

A small model asked for `convert_units(value, from_unit, to_unit)` after "Convert 10
kilometers to miles" writes `to_unit: "miles }} You can use..."`, `value: 1.0` or an
optional `precision: 3` nobody asked for. The protocol tells it to copy argument values
from the user's words; here the grammar holds it to that, one argument at a time:

- a number takes one of the numbers the request states ("84.50", "-3", "six");
- a string takes a span of the request's words ("Paris", "living room", a quoted
  'Good morning'), or a span matching its pattern; a free-text argument (code, an email
  body) is left free unless the request quotes something;
- an enum takes the values the request names, when it names any;
- a boolean the request names is true, or false after "without", "no", "not";
- an optional argument the request says nothing about is left out (its default holds),
  and one it names must be given.

Where the request gives nothing to copy for a required argument, its grammar is kept.
The full schema still validates the call. A request with several parts ("in Paris and in
Rome") is grounded on the part being called for, falling back to the whole request for an
argument the part does not mention (`parts`).
"""

import re
from collections.abc import Iterable, Sequence
from typing import Any

from core.payloads import FREE_TEXT, ToolSchema

COPY_PATTERN = "x-copy-pattern"
"""A string argument's hint: a regex that finds a complete value in the user's request.

When the request holds exactly one such span, the grammar allows that span only: a small
model then copies "17 * 23" from "What is 17 * 23?" instead of writing "23.0"."""

MAX_SPAN_WORDS = 6
"""Longest span of words a string argument may copy."""
MAX_SPANS = 200
"""Most spans offered to one argument (the grammar's enum stays far below its limit)."""

_FREE_TEXT_NAMES = frozenset(
    {
        "body", "code", "command", "content", "data", "diff", "html", "instructions",
        "json", "markdown", "patch", "payload", "program", "prompt", "script", "source",
        "sql", "template",
    }
)  # fmt: skip
"""Argument names that mean written text, when the schema does not say (`FREE_TEXT`)."""
_STOPWORDS = frozenset(
    {
        "a", "an", "the", "in", "of", "to", "for", "and", "or", "at", "on", "with", "from",
        "by", "me", "my", "i", "is", "it", "its", "be", "what", "what's", "whats", "please",
        "give", "get", "show", "find", "tell", "can", "you", "your", "how", "much", "many",
        "set", "into", "as", "this", "that", "then", "also", "both", "now", "right", "us",
        "do", "does", "are", "was", "which", "who", "whether", "check", "need", "want",
        "like", "current", "currently", "some", "any", "all", "one", "just",
    }
)  # fmt: skip
"""Words a copied span neither starts nor ends with ("in Paris" is "Paris")."""
_NAME_NOISE = frozenset(
    {
        "get", "include", "is", "use", "num", "number", "max", "min", "the", "of", "to",
        "from", "in", "by", "type", "value", "id", "name", "enable", "show", "with", "do",
        "should", "allow", "a", "count", "list",
    }
)  # fmt: skip
"""Words of an argument's name that do not show the request is about it."""
_NEGATIONS = frozenset({"no", "not", "without", "don't", "dont", "exclude", "excluding", "never"})
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "thousand": 1000,
}  # fmt: skip
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?|\b([A-Za-z]+)\b")
"""A number ("-3", "84.50", "1,000"; a minus sign right before its digits) or a word."""
_QUOTED = re.compile(r"'([^'\n]{1,200})'(?!\w)|\"([^\"\n]{1,200})\"|“([^”\n]{1,200})”")
_EDGE_PUNCTUATION = ".,;:!?()[]{}'\"\u201c\u201d\u2018\u2019"
_SEPARATOR = re.compile(r"\s*(?:[;,]\s*(?:and|then|also)?|\b(?:and|then|also)\b)\s*", re.IGNORECASE)


def parts(text: str) -> list[str]:
    """The parts a short request asks for: "Paris and Rome" has two.

    Split at "and", "then", "also", commas and semicolons; a quoted value is never split.
    """
    quoted = [m.span() for m in _QUOTED.finditer(text)]
    pieces, start = [], 0
    for m in _SEPARATOR.finditer(text):
        if any(a <= m.start() < b for a, b in quoted):
            continue
        pieces.append(text[start : m.start()])
        start = m.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if re.search(r"\w", p)]


def ground(
    arguments: dict[str, Any], tool: ToolSchema, part: str, whole: str | None = None
) -> dict[str, Any]:
    """`arguments` (a grammar-safe object schema of `tool`'s arguments) grounded in the request.

    Args:
        arguments: The schema to narrow (changed in place and returned).
        tool: The tool, whose full schema holds the hints (`COPY_PATTERN`, `FREE_TEXT`).
        part: The part of the request this call is for.
        whole: The whole request, for arguments the part says nothing about.
    """
    properties = arguments.get("properties")
    declared = tool.parameters.get("properties")
    if not isinstance(properties, dict) or not isinstance(declared, dict):
        return arguments
    required = set(arguments.get("required") or [])
    texts = [part] if whole is None or whole == part else [part, whole]
    verbs = _name_words(tool.name)
    for name in list(properties):
        schema, full = properties[name], declared.get(name)
        if not isinstance(schema, dict) or not isinstance(full, dict):
            continue
        named = any(_names(name, text) for text in texts)
        grounded = next(
            (g for g in (_grounded(name, schema, full, text, verbs) for text in texts) if g),
            None,
        )
        # An enum value or a flag the request states is asked for, even if not by name.
        stated = grounded is not None and (
            isinstance(schema.get("enum"), list) or _is(schema, "boolean")
        )
        if name not in required and not (named or stated):
            del properties[name]  # not asked for: its default holds
            continue
        if grounded is not None:
            properties[name] = grounded
        if named or stated:
            required.add(name)
    _by_position(properties, declared, texts[0])
    _whole_list(properties, declared, texts[0])
    arguments["required"] = [n for n in properties if n in required]
    return arguments


def _by_position(properties: dict[str, Any], declared: dict[str, Any], text: str) -> None:
    """Numbers nothing ties to an argument go to the remaining number arguments in order.

    "the GCD of 48 and 180" gives `a` 48 and `b` 180 (a small model writes 48 twice),
    "between 1 and 100" gives `min` 1 and `max` 100; only when the counts agree.
    """
    free, claimed = [], []
    for name in properties:
        full = declared.get(name)
        kind = full.get("type") if isinstance(full, dict) else None
        if kind not in ("number", "integer") or not isinstance(full, dict):
            continue
        specific = _specific_numbers(name, text, kind == "integer", full)
        if specific:
            claimed.extend(specific)
        else:
            free.append((name, kind == "integer", full))
    if not free:
        return
    numbers = [n for n, _ in _numbers(text, False, {})]
    remaining = [n for n in dict.fromkeys(numbers) if n not in claimed]
    if len(remaining) != len(free):
        return
    for (name, integer, full), value in zip(free, remaining, strict=True):
        fits = _numbers(str(value), integer, full)
        if fits:
            properties[name] = {"const": fits[0][0]}


def _whole_list(properties: dict[str, Any], declared: dict[str, Any], text: str) -> None:
    """A list of numbers, when it is the only number argument, is all the request's numbers.

    "Sort the numbers 5, 3, 9 and 1": a small model offered the four writes `[5, 5, 5]`.
    """
    kinds = {name: _kind(full) for name, full in declared.items()}
    lists = [n for n, k in kinds.items() if k == "array" and _kind(_items(declared[n])) in _NUMERIC]
    if len(lists) != 1 or any(k in _NUMERIC for k in kinds.values()) or lists[0] not in properties:
        return
    full = declared[lists[0]]
    integer = _kind(_items(full)) == "integer"
    numbers = [n for n, _ in _numbers(text, integer, _items(full))]
    if len(numbers) >= 2:
        properties[lists[0]] = {"const": numbers}


_NUMERIC = ("number", "integer")


def _kind(schema: Any) -> str | None:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return kind if isinstance(kind, str) else None


def _specific_numbers(
    name: str, text: str, integer: bool, full: dict[str, Any]
) -> list[int | float]:
    """The numbers `text` ties to the argument: written after its name, or next to it."""
    assigned = _assigned(name, text)
    if assigned is not None:
        return [n for n, _ in _numbers(assigned, integer, full)]
    return [n for n, place in _numbers(text, integer, full) if _near(name, text, place)]


def _grounded(
    name: str,
    schema: dict[str, Any],
    full: dict[str, Any],
    text: str,
    verbs: Sequence[str],
    item: bool = False,
) -> dict[str, Any] | None:
    """The argument's schema narrowed to what `text` states, or None when it states nothing.

    `verbs` are the words of the tool's name: "Convert" in "Convert 10 km to miles" is
    the request for `convert_units`, not a value of one of its arguments.
    """
    kinds = schema.get("type")
    kind = kinds if isinstance(kinds, str) else None
    assigned = _assigned(name, text)  # "b=-3"
    if isinstance(schema.get("enum"), list) or "const" in schema:
        values = schema.get("enum") or [schema.get("const")]
        named = _named_values(values, assigned or text, name)
        return _choice(named) if named else None
    if kind == "boolean":
        return _boolean(name, text)
    if kind in ("number", "integer"):
        integer = kind == "integer"
        specific = [] if item else _specific_numbers(name, text, integer, full)
        values = specific or [n for n, _ in _numbers(text, integer, full)]
        return _choice(list(dict.fromkeys(values))) if values else None
    if kind == "string":
        strings = _strings(full, text, name, verbs)
        if assigned is not None and assigned in strings:
            strings = [assigned]
        return _choice(strings) if strings else None
    if kind == "array" and isinstance(schema.get("items"), dict):
        items = _grounded(name, schema["items"], _items(full), text, verbs, item=True)
        return {**schema, "items": items} if items is not None else None
    return None


def _assigned(name: str, text: str) -> str | None:
    """The value written right after the argument's name ("b=-3", "priority: high")."""
    match = re.search(rf"(?<![\w-]){re.escape(name)}\s*[=:]\s*([^\s,;]+)", text, re.IGNORECASE)
    return match.group(1).strip(_EDGE_PUNCTUATION) if match else None


def _near(name: str, text: str, place: int) -> bool:
    """Whether a word of the argument's name is within two words of `place` in `text`.

    "a bill of 84.50" for `bill_amount`, "six-sided" for `sides`.
    """
    words = [
        w
        for w in re.finditer(r"[A-Za-z']+|-?\d[\d,.]*", text)
        if w.group(0).lower() not in _STOPWORDS
    ]
    at = next((i for i, w in enumerate(words) if w.start() <= place < w.end()), None)
    if at is None:
        return False
    keys = _name_words(name)
    return any(
        _same_word(w.group(0), key)
        for w in words[max(0, at - 1) : at + 2]
        for key in keys
        if not w.group(0)[0].isdigit()
    )


def _same_word(word: str, key: str) -> bool:
    """A word of the text and a word of a name agree ("sided" and "sides", "minutes")."""
    stem = _stem(word.lower())
    if stem == key:
        return True
    return min(len(stem), len(key)) >= 4 and (stem.startswith(key) or key.startswith(stem))


def _is(schema: dict[str, Any], kind: str) -> bool:
    return schema.get("type") == kind


def _items(full: dict[str, Any]) -> dict[str, Any]:
    items = full.get("items")
    return items if isinstance(items, dict) else {}


def _choice(values: Sequence[Any]) -> dict[str, Any]:
    return {"const": values[0]} if len(values) == 1 else {"enum": list(values)}


def _strings(full: dict[str, Any], text: str, name: str, verbs: Sequence[str]) -> list[str]:
    """The spans of `text` a string argument may take (none: leave it free)."""
    hint = full.get(COPY_PATTERN)
    if isinstance(hint, str):
        found = list(dict.fromkeys(m.group(0).strip() for m in re.finditer(hint, text)))
        found = [s for s in found if _literal_ok(s)]
        return found if len(found) == 1 else []
    if full.get("format") or full.get("enum"):
        return []
    quoted = [q for q in _quoted(text) if _literal_ok(q)]
    if full.get(FREE_TEXT) is True or (FREE_TEXT not in full and name.lower() in _FREE_TEXT_NAMES):
        return quoted
    spans = _ends(name, text) or list(dict.fromkeys([*quoted, *_spans(text, verbs)]))
    # A time, a date, a phone number holds digits; a name or a message does not.
    if set(_name_words(name)) & _DIGIT_NAMES:
        numeric = [s for s in spans if all(any(c.isdigit() for c in w) for w in s.split())]
        spans = numeric or [s for s in spans if any(c.isdigit() for c in s)] or spans
    else:
        spans = [s for s in spans if not any(c.isdigit() for c in s)] or spans
    pattern = full.get("pattern")
    if isinstance(pattern, str):
        try:
            spans = [s for s in spans if re.search(pattern, s)]
        except re.error:
            return []
    return [s for s in spans if _literal_ok(s)][:MAX_SPANS]


_DIGIT_NAMES = frozenset(
    {"time", "date", "phone", "number", "zip", "code", "tracking", "year", "hour", "day"}
)
"""Words of a string argument's name that say its value holds digits."""
_FROM = frozenset({"from", "source", "origin", "start", "departure"})
_TO = frozenset({"to", "target", "destination", "end", "arrival", "into"})


def _ends(name: str, text: str) -> list[str]:
    """For a `from_*` or `to_*` argument, the words after "from" or "to" (or before "to").

    "from Lyon to Marseille", "10 kilometers to miles", "between 2025-01-01 and 2025-03-15".
    """
    words = set(_name_words(name, keep_noise=True))
    tokens = [w.strip(_EDGE_PUNCTUATION) for w in text.split()]
    lowered = [t.lower() for t in tokens]
    between = "between" in lowered
    if words & _FROM:
        after = {"from", "between"}
        run = _run_after(tokens, lowered, after)
        if run:
            return run
        for i, word in enumerate(lowered):  # "10 kilometers to miles": the words before "to"
            if word in ("to", "into") and i > 0:
                return _run_before(tokens, i)
        return []
    if words & _TO:
        return _run_after(tokens, lowered, {"to", "into"} | ({"and"} if between else set()))
    return []


def _run_after(tokens: list[str], lowered: list[str], anchors: set[str]) -> list[str]:
    for i, word in enumerate(lowered):
        if word in anchors:
            run: list[str] = []
            for token in tokens[i + 1 : i + 1 + MAX_SPAN_WORDS]:
                if not token or token.lower() in _STOPWORDS:
                    break
                run.append(token)
            if run:
                return [" ".join(run[:n]) for n in range(len(run), 0, -1)]
    return []


def _run_before(tokens: list[str], end: int) -> list[str]:
    run: list[str] = []
    for token in reversed(tokens[max(0, end - MAX_SPAN_WORDS) : end]):
        if not token or token.lower() in _STOPWORDS or token[0].isdigit():
            break
        run.insert(0, token)
    return [" ".join(run[n:]) for n in range(len(run))]


def _quoted(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _QUOTED.finditer(text)]


def _spans(text: str, verbs: Sequence[str] = ()) -> list[str]:
    """Runs of up to `MAX_SPAN_WORDS` words, not starting or ending with a stopword.

    Nor with a word of the tool's name: "in Paris" is "Paris", "Convert 10" no value.
    """
    words = [w.strip(_EDGE_PUNCTUATION) for w in text.split()]

    def edge(word: str) -> bool:
        return word.lower() in _STOPWORDS or any(_same_word(word, verb) for verb in verbs)

    out: list[str] = []
    for i, first in enumerate(words):
        if not first or edge(first):
            continue
        for j in range(i, min(i + MAX_SPAN_WORDS, len(words))):
            last = words[j]
            if not last:
                break
            if not edge(last):
                out.append(" ".join(words[i : j + 1]))
    return out


def _literal_ok(text: str) -> bool:
    """A value the grammar can hold as a literal (no quotes, escapes or control characters)."""
    return bool(text) and not any(c in '"\\' or ord(c) < 0x20 or ord(c) > 0xFFFF for c in text)


def _numbers(text: str, integer: bool, full: dict[str, Any]) -> list[tuple[int | float, int]]:
    """The numbers `text` states that fit the argument's type and bounds, and where."""
    out: list[tuple[int | float, int]] = []
    for match in _NUMBER.finditer(text):
        sign, digits, fraction, word = match.groups()
        if word is not None:
            if word.lower() not in _NUMBER_WORDS:
                continue
            value = float(_NUMBER_WORDS[word.lower()])
        else:
            value = float(digits.replace(",", "") + (fraction or ""))
            before = text[match.start() - 1] if match.start() > 0 else " "
            if sign and not (before.isalnum() or before == ")"):
                value = -value
        if (integer and not value.is_integer()) or not _in_bounds(value, full):
            continue
        out.append((int(value) if value.is_integer() else value, match.start()))
    return out


def _in_bounds(value: float, full: dict[str, Any]) -> bool:
    def bound(key: str) -> float | None:
        found = full.get(key)
        if isinstance(found, bool) or not isinstance(found, int | float):
            return None
        return float(found)

    low, high = bound("minimum"), bound("maximum")
    above, below = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    return (
        (low is None or value >= low)
        and (high is None or value <= high)
        and (above is None or value > above)
        and (below is None or value < below)
    )


def _named_values(values: Iterable[Any], text: str, name: str) -> list[Any]:
    """The enum values `text` names, ordered for the argument (`from_*` first, `to_*` last)."""
    lowered = text.lower()
    found: list[tuple[int, Any]] = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            continue
        place = _find_phrase(lowered, value.lower().replace("_", " "))
        if place < 0 and "_" in value:
            place = _find_phrase(lowered, value.lower())
        if place >= 0:
            found.append((place, value))
    found.sort(key=lambda pair: pair[0])
    ordered = [value for _, value in found]
    words = set(_name_words(name, keep_noise=True))
    if len(ordered) > 1 and words & {"to", "target", "destination", "into"}:
        return [ordered[-1]]
    if len(ordered) > 1 and words & {"from", "source", "origin"}:
        return [ordered[0]]
    return ordered


def _find_phrase(text: str, phrase: str) -> int:
    match = re.search(rf"(?<![\w]){re.escape(phrase)}(?![\w])", text)
    return match.start() if match else -1


def _boolean(name: str, text: str) -> dict[str, Any] | None:
    """True when `text` names the argument, false when it names it after a negation."""
    words = _words(text)
    stems = [_stem(w) for w in words]
    for key in _name_words(name):
        for i, stem in enumerate(stems):
            if stem == key:
                negated = any(w in _NEGATIONS for w in words[max(0, i - 3) : i])
                return {"const": not negated}
    return None


def _names(name: str, text: str) -> bool:
    """Whether `text` speaks of the argument (a word of its name, singular or plural)."""
    stems = {_stem(w) for w in _words(text)}
    return any(key in stems for key in _name_words(name))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _name_words(name: str, keep_noise: bool = False) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    words = [w.lower() for w in spaced.split()]
    if keep_noise:
        return words
    return [_stem(w) for w in words if w not in _NAME_NOISE and len(w) >= 2]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def uncovered(
    parts: Sequence[str], calls: Sequence[tuple[ToolSchema, Any]], tools: Sequence[ToolSchema]
) -> list[str]:
    """The parts of a request that no call so far speaks to, in order.

    A part is left when it holds a value no call has taken (a number, a capitalized
    or quoted word: "in Rome" after Paris) or names an offered tool not called yet
    ("and the air quality" after the weather). "Sort 5, 3, 9 and 1" is one call with
    all four numbers; "with a=1, b=-3 and c=2" one call with all three.
    """
    taken = {t for _, arguments in calls for t in _tokens(" ".join(_flatten(arguments)))}
    called = {tool.name for tool, _ in calls}
    others = {w for t in tools if t.name not in called for w in _tokens(t.name)}
    others -= {w for tool, _ in calls for w in _tokens(tool.name)}
    return [part for part in parts if (_values(part) - taken) or (set(_tokens(part)) & others)]


def _tokens(text: str) -> list[str]:
    out = []
    for token in re.findall(r"[a-z']+|\d+(?:\.\d+)?", text.lower().replace("_", " ")):
        if token[0].isdigit():
            out.append(repr(float(token)))
        elif token not in _STOPWORDS:
            out.append(_stem(token))
    return out


def _values(part: str) -> set[str]:
    """The tokens of a part that are values: numbers, quoted or capitalized words."""
    quoted = " ".join(_quoted(part))
    words = re.findall(r"[A-Za-z']+|\d+(?:\.\d+)?", part)
    capitalized = " ".join(w for i, w in enumerate(words) if i > 0 and w[0].isupper())
    numbers = " ".join(w for w in words if w[0].isdigit())
    return set(_tokens(f"{quoted} {capitalized} {numbers}"))


def _flatten(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *_flatten(item))]
    if isinstance(value, list):
        return [text for item in value for text in _flatten(item)]
    return [str(value)]
