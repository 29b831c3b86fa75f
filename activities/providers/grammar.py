r"""JSON Schemas cut down to what llama.cpp turns into a grammar cheaply and safely.

The local model server (llama-cpp-python) compiles a `response_format` schema in two
steps: its Python converter (`llama_cpp.llama_grammar`) writes GBNF, then llama.cpp's
C++ parser builds the sampler. Many valid schemas break one step or the other. A break
in the second is a NULL sampler, which the server uses anyway: SIGSEGV, the stack
restarts the server, and after a few of those the provider's circuit breaker opens.

    in the schema                       what happens
    maxLength / maxItems n              n nested optional groups, ~2n parser rules: over
                                        ~1000 "exceeds sane defaults" (NULL); at 20,000
                                        (the agent tool's bound) the parser's stack overflows
    pattern with \d \w \. or [\w-]      escapes copied verbatim: "unknown escape" (NULL)
    pattern with a stray ] or }         the converter loops forever (the request hangs)
    "..." in an enum, const or name     a literal that ends early: parse error (NULL)
    \b or \f in one                     escapes GBNF lacks: parse error (NULL)
    anyOf [{$ref: itself}, ...]         a left-recursive rule (NULL)
    (x|)*, ()* in a pattern             a left-recursive rule (NULL)
    no type, true/false, not, a         a converter exception: the server falls back to
    pattern without ^...$, (?=...)      plain JSON, and the protocol's shape is lost
    a thousand properties               (recursion), likewise

`grammar_safe` returns a copy that keeps what the converter expresses cheaply - types,
properties, required, small length and item bounds, enums and consts, simple patterns
(rewritten into a form that means the same to the converter and to Python's `re`), the
date/time/uuid formats - and widens everything else, so the grammar only ever lets more
JSON through. Nothing is lost: the tool's arguments are still validated against the
full schema (`builtin_tools.parse_arguments`, the queen's `check_plan`), and the model
reads what was wrong. The thresholds are measured (tests/activities/test_grammar.py): a
bound of n costs 2n parser rules on top of an unbounded string's 10 (so 32 costs 71)
and an array's 45; every built-in tool then costs 7 to 48 rules, the whole protocol
over all of them about 200.

Deterministic and memoized on the schema's JSON text: it runs on every local model call.
"""

import functools
import json
import math
import re
from typing import Any, Final
from urllib.parse import unquote

MAX_STRING_LENGTH: Final = 32
"""Largest minLength/maxLength kept; longer bounds are left to validation."""
MAX_ITEMS: Final = 32
"""Largest minItems/maxItems (and prefixItems tuple) kept."""
MAX_ENUM: Final = 256
"""Most enum values or anyOf/oneOf options kept; more become their plain type."""
MAX_LITERAL_CHARS: Final = 16_384
"""Longest JSON text of an enum's values (or a const) kept."""
MAX_DEPTH: Final = 10
"""Deepest nesting of subschemas kept; deeper ones become their plain type."""
MAX_PROPERTIES: Final = 64
"""Most properties described per object; beyond that only the required ones are."""
MAX_NODES: Final = 1000
"""Most subschemas described in all ($refs are inlined); the rest become plain types."""
MAX_PATTERN_CHARS: Final = 1000
"""Longest pattern considered at all."""
MAX_PATTERN_REPEAT: Final = 64
"""Sum of a pattern's repetition bounds ({n,m} costs max(n, m) rules, *+? cost 1)."""
MAX_PATTERN_GROUPS: Final = 16
"""Deepest nesting of a pattern's groups."""

ANY: Final[dict[str, Any]] = {"type": ["object", "array", "string", "number", "boolean", "null"]}
"""Any JSON value (the converter reads `{}` as "any object")."""

_TYPES: Final = ("object", "array", "string", "number", "integer", "boolean", "null")
_FORMATS: Final = frozenset(
    {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
)
_OBJECT_WORDS: Final = ("properties", "additionalProperties", "required")
_ARRAY_WORDS: Final = ("items", "prefixItems", "minItems", "maxItems")
_STRING_WORDS: Final = ("pattern", "minLength", "maxLength", "format")
_NUMBER_WORDS: Final = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_INERT: Final = frozenset(
    {
        "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
        "$comment", "$schema", "$id", "$anchor", "$defs", "definitions", "$vocabulary",
    }
)  # fmt: skip
"""Keywords that do not constrain a value."""


def grammar_safe(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` that llama.cpp's schema converter and grammar parser accept cheaply.

    Widens (never narrows) what the schema allows: long length and item bounds, patterns
    outside a safe subset, huge or unsafe enums, deep nesting, `$ref` cycles and keywords
    the converter does not know are dropped or replaced by the plain type (or any value).
    Local `$ref`s are inlined. The caller still validates the answer against `schema`.
    """
    try:
        text = json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # not JSON at all: allow any value
        return _any()
    safe: dict[str, Any] = json.loads(_cached(text))
    return safe


@functools.lru_cache(maxsize=512)
def _cached(text: str) -> str:
    try:
        schema = json.loads(text)
        return json.dumps(_Sanitizer(schema).visit(schema, 0))
    except RecursionError:  # nesting deeper than json itself handles
        return json.dumps(ANY)


class _Sanitizer:
    """One walk over a schema; `visit` returns the grammar-safe copy of a subschema."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._refs = ["#"]  # refs being inlined: one seen again is a cycle
        self._nodes = 0

    def visit(self, schema: Any, depth: int) -> dict[str, Any]:
        if not isinstance(schema, dict):
            return _any()  # true, false (validation refuses it), or not a schema
        self._nodes += 1
        if depth > MAX_DEPTH or self._nodes > MAX_NODES:
            return _plain(schema)
        if "$ref" in schema:
            return self._ref(schema, depth)
        if isinstance(schema.get("allOf"), list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self._deref(part))
            return self.visit(merged, depth + 1)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                return self._union(schema, schema[key], depth)
        if "const" in schema:
            return _literals([schema["const"]]) or _plain_values([schema["const"]])
        if isinstance(schema.get("enum"), list):
            values = schema["enum"]
            if not values:
                return _plain(schema)
            return _literals(values) or _plain_values(values)
        types = _types(schema)
        if not types:
            return _any()
        if len(types) > 1:
            # The converter drops every other keyword of a type list: one option per type.
            return {"anyOf": [self._typed(schema, t, depth + 1) for t in types]}
        return self._typed(schema, types[0], depth)

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> dict[str, Any]:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return _string(schema)
        return {"type": kind}  # number, integer, boolean, null: bounds go to validation

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        required = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        if not all(_safe_text_value(name) for name in required):
            return {"type": "object"}
        # Required names without a description are described as any value, so the grammar
        # lets the model write them.
        names = [n for n in properties if _safe_text_value(n) and properties[n] is not False]
        names += [r for r in dict.fromkeys(required) if r not in properties]
        additional = schema.get("additionalProperties")
        if len(names) > MAX_PROPERTIES:
            names = list(dict.fromkeys(required))
            if len(names) > MAX_PROPERTIES:
                return {"type": "object"}
            additional = True  # the optional ones may still be written
        out: dict[str, Any] = {"type": "object"}
        if names or "properties" in schema:
            out["properties"] = {n: self.visit(properties.get(n, True), depth + 1) for n in names}
        if required:
            out["required"] = list(dict.fromkeys(required))
        if additional is True:
            out["additionalProperties"] = _any()
        elif additional is False:
            out["additionalProperties"] = False
        elif isinstance(additional, dict):
            out["additionalProperties"] = self.visit(additional, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            if len(prefix) > MAX_ITEMS:
                return {"type": "array"}
            return {"type": "array", "prefixItems": [self.visit(p, depth + 1) for p in prefix]}
        low = _small(schema.get("minItems"), MAX_ITEMS)
        high = 0 if schema.get("items") is False else _small(schema.get("maxItems"), MAX_ITEMS)
        if low is not None and high is not None and low > high:
            low = high = None
        if "items" not in schema and not low and high is None:
            return {"type": "array"}
        out: dict[str, Any] = {"type": "array", "items": self.visit(schema.get("items"), depth + 1)}
        if low:
            out["minItems"] = low
        if high is not None:
            out["maxItems"] = high
        return out

    def _union(self, schema: dict[str, Any], options: list[Any], depth: int) -> dict[str, Any]:
        base = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        if not options or len(options) > MAX_ENUM:
            return _plain(base)
        if any(k not in _INERT for k in base):
            # The converter reads only the options: fold the keywords beside them into each.
            options = [_merge(base, self._deref(option)) for option in options]
        return {"anyOf": [self.visit(option, depth + 1) for option in options]}

    def _ref(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        ref = schema["$ref"]
        target = _resolve(self._root, ref) if isinstance(ref, str) else None
        if target is None or ref in self._refs:  # remote, unresolvable, or a cycle
            return _plain({k: v for k, v in schema.items() if k != "$ref"})
        self._refs.append(ref)
        try:
            return self.visit(target, depth + 1)
        finally:
            self._refs.pop()

    def _deref(self, schema: Any) -> Any:
        """`schema`, or what its local `$ref` points to (for merging; cycles stop at 8)."""
        for _ in range(8):
            if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
                return schema
            target = _resolve(self._root, schema["$ref"])
            if target is None:
                return {k: v for k, v in schema.items() if k != "$ref"}
            schema = target
        return True


def _any() -> dict[str, Any]:
    return {"type": list(ANY["type"])}


def _types(schema: dict[str, Any]) -> list[str]:
    """The schema's JSON types, inferred from its keywords when it names none ([]: any)."""
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared] if declared in _TYPES else []
    if isinstance(declared, list):
        return [t for t in dict.fromkeys(declared) if isinstance(t, str) and t in _TYPES]
    for kind, words in (
        ("object", _OBJECT_WORDS),
        ("array", _ARRAY_WORDS),
        ("string", _STRING_WORDS),
        ("number", _NUMBER_WORDS),
    ):
        if any(word in schema for word in words):
            return [kind]
    return []


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema's type alone, or any value."""
    types = _types(schema)
    return {"type": types[0]} if len(types) == 1 else _any()


def _plain_values(values: list[Any]) -> dict[str, Any]:
    """The one JSON type of `values`, or any value."""
    kinds = {_json_type(v) for v in values}
    if kinds == {"integer", "number"}:
        kinds = {"number"}
    return {"type": kinds.pop()} if len(kinds) == 1 else _any()


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    for kind, cls in (("number", float), ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, cls):
            return kind
    return "null"


def _literals(values: list[Any]) -> dict[str, Any] | None:
    """`{"enum": values}` if the converter writes each as a sound literal, else None."""
    if not values or len(values) > MAX_ENUM or not all(_safe_literal(v) for v in values):
        return None
    if len(json.dumps(values)) > MAX_LITERAL_CHARS:
        return None
    return {"const": values[0]} if len(values) == 1 else {"enum": values}


def _safe_literal(value: Any) -> bool:
    if isinstance(value, str):
        return _safe_text_value(value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_safe_literal(v) for v in value)
    if isinstance(value, dict):
        return all(_safe_text_value(k) and _safe_literal(v) for k, v in value.items())
    return True


def _safe_text_value(text: str) -> bool:
    r"""Whether the converter's literal for this JSON string parses and can be written.

    It escapes `"` wrongly (the literal ends early), leaves json's \b and \f escapes that
    GBNF lacks, turns \n into a raw newline (invalid JSON), and splits characters beyond
    U+FFFF into surrogates no UTF-8 text contains. An empty name would become the root rule.
    """
    return bool(text) and not any(
        c in '"\\' or ord(c) < 0x20 or ord(c) > 0xFFFF or 0xD800 <= ord(c) <= 0xDFFF for c in text
    )


def _small(value: Any, limit: int) -> int | None:
    """`value` as an int in [0, limit], else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if 0 <= value <= limit else None


def _merge(base: dict[str, Any], part: Any) -> dict[str, Any]:
    """`base` narrowed by `part` as far as the grammar cares (allOf; anyOf's siblings)."""
    if not isinstance(part, dict):
        return dict(base)
    out = dict(base)
    for key, value in part.items():
        if key not in out:
            out[key] = value
        elif key == "properties" and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = {**value, **out[key]}
        elif key == "required" and isinstance(out[key], list) and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key == "type":
            mine, theirs = _type_set(out[key]), _type_set(value)
            both = [t for t in mine if t in theirs]
            if "integer" in mine + theirs and "number" in mine + theirs:
                both = list(dict.fromkeys([*both, "integer"]))
            if both:
                out[key] = both[0] if len(both) == 1 else both
    return out


def _type_set(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _resolve(root: Any, ref: str) -> Any:
    """The target of a local `$ref` (`#` or `#/json/pointer`); None for anything else."""
    if not ref.startswith("#"):
        return None
    pointer = unquote(ref[1:])
    if not pointer:
        return root
    if not pointer.startswith("/"):
        return None  # a named anchor
    node = root
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


GRAMMAR_PATTERN: Final = "x-grammar-pattern"
"""A string's pattern for constrained decoding only, in place of its `pattern`: narrower
than what validation accepts, so a small model's output ends where a value should."""


def _string(schema: dict[str, Any]) -> dict[str, Any]:
    pattern = schema.get(GRAMMAR_PATTERN, schema.get("pattern"))
    if isinstance(pattern, str):
        rewritten = grammar_pattern(pattern)
        if rewritten is not None:
            return {"type": "string", "pattern": rewritten}
    if schema.get("format") in _FORMATS:
        return {"type": "string", "format": schema["format"]}
    low = _small(schema.get("minLength"), MAX_STRING_LENGTH)
    high = _small(schema.get("maxLength"), MAX_STRING_LENGTH)
    if low is not None and high is not None and low > high:
        low = high = None
    out: dict[str, Any] = {"type": "string"}
    if low:
        out["minLength"] = low
    if high is not None:
        out["maxLength"] = high
    return out


# -- patterns --------------------------------------------------------------------------

_Ranges = list[tuple[int, int]]

# A pattern's characters sit inside a JSON string: control characters, '"' and '\' there
# need escapes the converter never writes, and lone surrogates cannot be written at all.
_UNSAFE: Final[_Ranges] = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0xD800, 0xDFFF)]
_CLASS_ESCAPES: Final[dict[str, _Ranges]] = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x09, 0x0D), (0x20, 0x20)],
}
_CONTROL_ESCAPES: Final = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B}
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}
_QUANTIFIER: Final = re.compile(r"\{(\d*)(,?)(\d*)\}")
_CONVERTER_SPECIAL: Final = "|()[]{}*+?"  # escaped in literals; '.' goes into a class


class _Unsupported(Exception):
    """The pattern is outside the subset the grammar keeps."""


def grammar_pattern(pattern: str) -> str | None:
    r"""`pattern` rewritten into the subset llama.cpp's converter handles soundly, or None.

    Kept: anchored (`^...$`) patterns of literals, classes, `.`, groups, `|` and
    `* + ? {n} {n,} {n,m}` with small bounds. Rewritten: `\d \w \s` (and their
    negations) and every class become explicit code point ranges without the characters
    a JSON string cannot hold raw, `\.`-style escapes become classes, and the body is
    grouped so a top-level `|` stays inside the string's quotes. Dropped (None):
    unanchored patterns, lookarounds, backreferences, lazy or possessive quantifiers,
    `*`/`+` over something that can match nothing (a left-recursive rule), large bounds.
    """
    if len(pattern) > MAX_PATTERN_CHARS or not pattern.startswith("^"):
        return None
    if not pattern.endswith("$"):
        return None  # an escaped "$" leaves a dangling "\\" that the parser refuses
    try:
        parser = _PatternParser(pattern[1:-1])
        text, _ = parser.alternation()
        if parser.pos != len(parser.text):
            raise _Unsupported("unbalanced ')'")
    except _Unsupported:
        return None
    return f"^({text})$"


class _PatternParser:
    """Recursive descent over a pattern body; each step returns (rewritten text, nullable)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.cost = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else ""

    def alternation(self) -> tuple[str, bool]:
        parts = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            parts.append(self.sequence())
        return "|".join(p[0] for p in parts), any(p[1] for p in parts)

    def sequence(self) -> tuple[str, bool]:
        text, nullable = "", True
        while self.peek() not in ("", "|", ")"):
            atom, atom_nullable, grouped = self.atom()
            quantified = self.quantifier(atom_nullable)
            if quantified is not None:
                suffix, atom_nullable = quantified
                # A repeated literal must be its own group: the converter would otherwise
                # repeat the whole run of literal characters before it.
                atom = (atom if grouped else f"({atom})") + suffix
            text += atom
            nullable = nullable and atom_nullable
        return text, nullable

    def atom(self) -> tuple[str, bool, bool]:
        """(text, nullable, whether the text is one group or class)."""
        c = self.peek()
        if c == "(":
            if self.peek(1) == "?":
                raise _Unsupported("lookaround or special group")
            self.depth += 1
            if self.depth > MAX_PATTERN_GROUPS:
                raise _Unsupported("groups nested too deep")
            self.pos += 1
            text, nullable = self.alternation()
            self.depth -= 1
            if self.peek() != ")":
                raise _Unsupported("unbalanced '('")
            self.pos += 1
            return f"({text})", nullable, True
        if c == "[":
            return _class_text(self.char_class()), False, True
        if c == ".":
            self.pos += 1
            return _class_text([(0, 0x10FFFF)]), False, True
        if c == "\\":
            escape = self.peek(1)
            self.pos += 2
            if escape.lower() in _CLASS_ESCAPES:
                ranges = _CLASS_ESCAPES[escape.lower()]
                return _class_text(_complement(ranges) if escape.isupper() else ranges), False, True
            if escape and escape.isascii() and not escape.isalnum():
                return _literal(escape), False, False
            raise _Unsupported(f"escape \\{escape}")
        if c in "*+?{":
            raise _Unsupported("nothing to repeat")
        if c in "^$":
            raise _Unsupported("anchor inside the pattern")
        self.pos += 1
        return _literal(c), False, False

    def quantifier(self, nullable: bool) -> tuple[str, bool] | None:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.pos += 1
            suffix, low, high = c, (1 if c == "+" else 0), (1 if c == "?" else None)
            self.cost += 1
        elif c == "{":
            match = _QUANTIFIER.match(self.text, self.pos)
            if match is None or not (match[1] or match[3]):
                raise _Unsupported("not a quantifier")
            self.pos = match.end()
            low = int(match[1] or 0)
            high = int(match[3]) if match[3] else (None if match[2] else low)
            if high is not None and low > high:
                raise _Unsupported("bad bounds")
            suffix = f"{{{low},{'' if high is None else high}}}" if match[2] else f"{{{low}}}"
            self.cost += max(low, high or 0, 1)
        else:
            return None
        if self.cost > MAX_PATTERN_REPEAT:
            raise _Unsupported("repetition too large")
        if high is None and nullable:
            raise _Unsupported("unbounded repetition of something that can be empty")
        if self.peek() in ("*", "+", "?", "{"):
            raise _Unsupported("lazy, possessive or repeated quantifier")
        return suffix, nullable or low == 0

    def char_class(self) -> _Ranges:
        self.pos += 1  # '['
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: _Ranges = []
        first = True
        while True:
            c = self.peek()
            if not c:
                raise _Unsupported("unbalanced '['")
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            low = self.class_item(ranges)
            if low is None:
                continue
            high = low
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                high_item = self.class_item([])
                if high_item is None or high_item < low:
                    raise _Unsupported("bad range")
                high = high_item
            ranges.append((low, high))
        return _complement(_normalize(ranges)) if negated else _normalize(ranges)

    def class_item(self, ranges: _Ranges) -> int | None:
        r"""One class member's code point; a \d-style set goes into `ranges` (None)."""
        c = self.peek()
        if c == "[":
            raise _Unsupported("'[' inside a class")
        if c != "\\":
            self.pos += 1
            return ord(c)
        escape = self.peek(1)
        self.pos += 2
        if escape.lower() in _CLASS_ESCAPES:
            found = _CLASS_ESCAPES[escape.lower()]
            ranges.extend(_complement(found) if escape.isupper() else found)
            return None
        if escape in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[escape]
        if escape in _HEX_ESCAPES:
            digits = self.text[self.pos : self.pos + _HEX_ESCAPES[escape]]
            if len(digits) != _HEX_ESCAPES[escape] or not all(
                d in "0123456789abcdefABCDEF" for d in digits
            ):
                raise _Unsupported("bad hex escape")
            self.pos += len(digits)
            return int(digits, 16)
        if escape and escape.isascii() and not escape.isalnum():
            return ord(escape)
        raise _Unsupported(f"escape \\{escape}")


def _literal(c: str) -> str:
    if c in '"\\' or ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF:
        raise _Unsupported("a character a JSON string holds only escaped")
    if c in ".^$":
        # The converter copies "\." verbatim (bad GBNF) and reads a bare "^" or "$" as a
        # character; a class means the same to it and to Python's re.
        return _class_text([(ord(c), ord(c))])
    return "\\" + c if c in _CONVERTER_SPECIAL else c


def _class_text(ranges: _Ranges) -> str:
    """A class of `ranges` minus the JSON-unsafe characters, every bound a hex escape."""
    safe = _subtract(ranges, _UNSAFE)
    if not safe:
        raise _Unsupported("a class of characters a JSON string holds only escaped")
    return "[" + "".join(_hex(a) if a == b else f"{_hex(a)}-{_hex(b)}" for a, b in safe) + "]"


def _hex(code: int) -> str:
    if code <= 0xFF:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


def _normalize(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _complement(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    start = 0
    for low, high in _normalize(ranges):
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= 0x10FFFF:
        out.append((start, 0x10FFFF))
    return out


def _subtract(ranges: _Ranges, removed: _Ranges) -> _Ranges:
    return _complement([*_complement(ranges), *removed])
