"""Every schema Colony can send the local model compiles in llama.cpp, after `grammar_safe`.

The schemas go through the real converter (`llama_cpp.llama_grammar`) and the real C++
grammar parser (`llama_sampler_init_grammar` over SmolLM2's vocabulary, loaded without
weights), exactly as the local model server compiles a `response_format`. A NULL sampler
is what crashes that server; here it is only a failed assertion.
"""

import contextlib
import copy
import json
import os
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
from jsonschema import Draft202012Validator

from activities.providers import json_protocol
from activities.providers.grammar import (
    ANY,
    MAX_ENUM,
    MAX_ITEMS,
    MAX_STRING_LENGTH,
    grammar_pattern,
    grammar_safe,
)
from activities.runs.outputs import output_tools
from activities.swarms.blackboard import blackboard_tools
from activities.swarms.queen import plan_schema
from activities.tools import catalog
from core.db import Pool
from core.errors import ConfigError
from core.payloads import ChatMessage, ModelRequest, ToolSchema
from core.providers import LOCAL_MODEL
from core.swarms.plan import BUILTIN_ROLES
from core.tools.builtins import MAX_POST_CHARS
from core.tools.names import WORKFLOW_TOOLS
from tests.conftest import make_settings

llama_cpp = pytest.importorskip("llama_cpp")
llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")

MAX_RULES = 300
"""Parser rules one tool's grammar may cost (llama.cpp refuses ~2000 in one repetition;
the built-in tools cost 7 to 48 after `grammar_safe`, the queen's plan about 120)."""
MAX_PROTOCOL_RULES = 1000
"""Parser rules of the whole protocol grammar over every built-in tool (about 200)."""


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    """SmolLM2's vocabulary (no weights): what the grammar parser needs."""
    from workers.model_server import gguf_path

    try:
        path = gguf_path()
    except ConfigError as exc:
        pytest.skip(str(exc))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"could not load {path}"
    try:
        yield llama_cpp.llama_model_get_vocab(model)
    finally:
        llama_cpp.llama_model_free(model)


def gbnf(schema: dict[str, Any]) -> str:
    """The converter's grammar for `schema`, as the server writes it."""
    return cast(str, llama_grammar.json_schema_to_gbnf(json.dumps(schema)))


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """The C++ parser prints every refused grammar whole to fd 2 (100 kB and more)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def parses(vocab: Any, grammar: str) -> bool:
    """Whether llama.cpp's parser builds a sampler from `grammar` (NULL crashes the server)."""
    with stderr_silenced():
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def parser_rules(grammar: str) -> int:
    """Rules llama.cpp's parser builds: one per named rule, group and `*`/`+`/`?`."""
    count, i = 0, 0
    while i < len(grammar):
        c = grammar[i]
        if c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            while grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif c in "(*+?":
            count += 1
        i += 1
    return count + grammar.count("::=")


def compiles(vocab: Any, schema: dict[str, Any], limit: int = MAX_RULES) -> int:
    """Assert that `schema` converts and parses within `limit` rules; the rule count."""
    grammar = gbnf(schema)
    rules = parser_rules(grammar)
    assert rules <= limit, f"{rules} parser rules for {json.dumps(schema)[:300]}"
    assert parses(vocab, grammar), f"llama.cpp refused the grammar of {json.dumps(schema)[:300]}"
    return rules


def every_tool() -> list[ToolSchema]:
    """Every tool schema a run can offer a model without registering anything."""
    registry = catalog.builtin_registry(make_settings())
    return [
        *registry.schemas(registry.names),  # calculator, get_time, http_fetch, sandbox
        *WORKFLOW_TOOLS.values(),  # ask_human, find_tools, remember, recall
        *(tool.schema() for tool in blackboard_tools(cast(Pool, None))),
        *(tool.schema() for tool in output_tools(cast(Pool, None))),
        ToolSchema(
            name=catalog.agent_model_name("researcher"),
            description="Delegate a task to the agent 'researcher'.",
            parameters=catalog.AGENT_TOOL_PARAMETERS,
        ),
    ]


def hostile_schema() -> dict[str, Any]:
    """What a registered tool or an MCP server may legally send: valid, and nasty."""
    nested: dict[str, Any] = {"type": "string"}
    for level in range(50):
        nested = {
            "type": "object",
            "properties": {f"level{level}": nested, "note": {"type": "string"}},
            "required": [f"level{level}"],
        }
    return {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": 100_000},
            "nested": nested,
            "choice": {"enum": [f"v{i}" for i in range(10_000)]},
            "quoted": {"enum": ['say "hi"', "back\\slash", "bell\b"]},
            "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 5000},
            "email": {"type": "string", "pattern": r"^[\w.+-]+@[\w-]+\.\w{2,}$"},
            "lookahead": {"type": "string", "pattern": r"^(?!admin)\w{3,500}$"},
            "stray": {"type": "string", "pattern": "^a]b$"},
            "tree": {"$ref": "#/$defs/node"},
            "loop": {"$ref": "#/$defs/loop"},
            "anything": {"description": "no type at all"},
            "never": {"not": {}},
            '"odd" name': {"type": "string"},
        },
        "required": ["text", "choice"],
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
            },
            # Left-recursive: the converter writes `loop ::= loop | ...`, a NULL sampler.
            "loop": {"anyOf": [{"$ref": "#/$defs/loop"}, {"type": "null"}]},
        },
    }


# -- every schema Colony sends -----------------------------------------------------------


def test_every_built_in_tool_compiles(vocab: Any) -> None:
    tools = every_tool()
    names = {t.name for t in tools}
    assert {"calculator", "get_time", "http_fetch", "run_python", "read_file"} <= names
    assert {"ask_human", "find_tools", "remember", "recall"} <= names
    assert {"post_to_blackboard", "read_blackboard"} <= names
    for tool in tools:
        compiles(vocab, grammar_safe(tool.parameters))


def test_the_whole_protocol_over_every_tool_compiles(vocab: Any) -> None:
    tools = every_tool()
    request = ModelRequest(
        model=LOCAL_MODEL,
        messages=[ChatMessage(role="user", content="Post what you found.")],
        tools=tools,
    )
    schema = json_protocol.response_format(request)["schema"]
    assert len(schema["anyOf"]) == len(tools) + 1  # every tool and the answer
    compiles(vocab, schema, MAX_PROTOCOL_RULES)
    # ... and so it does after a short tool result (the answer must quote it).
    result = ChatMessage(role="tool", content="391", tool_call_id="c", name="calculator")
    request = request.model_copy(update={"messages": [*request.messages, result]})
    compiles(vocab, json_protocol.response_format(request)["schema"], MAX_PROTOCOL_RULES)


@pytest.mark.parametrize("max_subtasks", [1, 10, 100])
def test_the_queens_plan_schema_compiles(vocab: Any, max_subtasks: int) -> None:
    compiles(vocab, grammar_safe(plan_schema(list(BUILTIN_ROLES), max_subtasks)))
    many_roles = [f"role-{i}" for i in range(MAX_ENUM + 50)]  # a tenant with many agents
    compiles(vocab, grammar_safe(plan_schema(many_roles, max_subtasks)))


def test_the_queens_plan_keeps_its_shape() -> None:
    safe = grammar_safe(plan_schema(["researcher", "writer"], 10))
    subtasks = safe["properties"]["subtasks"]
    assert subtasks["maxItems"] == 10 and subtasks["minItems"] == 1
    item = subtasks["items"]
    assert item["properties"]["role"] == {"enum": ["researcher", "writer"]}
    assert item["required"] == plan_schema([], 10)["properties"]["subtasks"]["items"]["required"]
    # The id pattern is simple enough to keep (as explicit ranges).
    assert re.fullmatch(item["properties"]["id"]["pattern"], "t1-a_b")
    assert not re.fullmatch(item["properties"]["id"]["pattern"], "-t1")


# -- what is kept and what is dropped ----------------------------------------------------


def test_the_blackboard_schema_crashed_the_parser_and_no_longer_does(vocab: Any) -> None:
    post = next(t for t in blackboard_tools(cast(Pool, None)) if t.name == "post_to_blackboard")
    assert post.parameters["properties"]["content"]["maxLength"] == MAX_POST_CHARS
    raw = gbnf(post.parameters)
    assert parser_rules(raw) > 2 * MAX_POST_CHARS
    assert not parses(vocab, raw)  # what crashed the server: "exceeds sane defaults"
    safe = grammar_safe(post.parameters)
    assert safe["properties"]["content"] == {"type": "string", "minLength": 1}
    assert compiles(vocab, safe) < 50


def test_a_hostile_schema_compiles_after_grammar_safe(vocab: Any) -> None:
    hostile = hostile_schema()
    Draft202012Validator.check_schema(hostile)  # valid: registration accepts it
    before = copy.deepcopy(hostile)
    safe = grammar_safe(hostile)
    assert hostile == before  # the input is not touched
    rules = compiles(vocab, safe)
    props = safe["properties"]
    assert props["text"] == {"type": "string", "minLength": 1}
    assert props["choice"] == {"type": "string"}  # 10,000 values: validation checks them
    assert props["quoted"] == {"type": "string"}
    assert props["items"] == {"type": "array", "items": {"type": "integer"}}
    assert props["email"]["pattern"] == (
        r"^([\x2B\x2D-\x2E\x30-\x39\x41-\x5A\x5F\x61-\x7A]+@[\x2D\x30-\x39\x41-\x5A\x5F\x61-\x7A]+"
        r"[\x2E][\x30-\x39\x41-\x5A\x5F\x61-\x7A]{2,})$"
    )
    assert props["lookahead"] == {"type": "string"} and props["stray"]["pattern"] == "^(a\\]b)$"
    assert '"odd" name' not in props and safe["required"] == ["text", "choice"]
    depth, node = 0, props["nested"]
    while "properties" in node:
        node = node["properties"][next(iter(node["properties"]))]
        depth += 1
    assert depth <= 10 and node == {"type": "object"}
    assert rules < 400


def test_the_raw_hostile_schema_is_what_crashes_the_server(vocab: Any) -> None:
    # Whole, it would take the C++ parser 100,000 nested groups deep, past the end of its
    # stack (and the converter loops forever on the stray "]" pattern): its parts show
    # the failures instead.
    parts = hostile_schema()["properties"]
    text = gbnf({"type": "object", "properties": {"text": parts["text"]}})
    assert parser_rules(text) > 100_000
    for name in ("quoted", "email"):
        assert not parses(vocab, gbnf({"type": "object", "properties": {name: parts[name]}}))
    long_text = {"type": "string", "maxLength": 4000}  # ask_human's and remember's bound
    assert not parses(vocab, gbnf({"type": "object", "properties": {"s": long_text}}))
    left_recursive = {"type": "object", "properties": {"loop": parts["loop"]}}
    assert not parses(vocab, gbnf({**left_recursive, "$defs": hostile_schema()["$defs"]}))


@pytest.mark.parametrize("n", [1, 8, min(MAX_STRING_LENGTH, MAX_ITEMS)])
def test_small_bounds_are_kept_and_measured(vocab: Any, n: int) -> None:
    # Measured: a bound of n costs 2n rules more than none (string 10 rules, array of
    # integers 45); at 32 that is 71 and 105, at 1000 over 2000 and llama.cpp refuses.
    for value, unbounded in (
        ({"type": "string", "minLength": 1, "maxLength": n}, 10),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": n}, 45),
    ):
        schema = {"type": "object", "properties": {"x": value}}
        assert grammar_safe(schema) == schema
        assert compiles(vocab, schema) <= unbounded + 2 * n


def test_long_bounds_are_dropped(vocab: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "minLength": 40, "maxLength": MAX_STRING_LENGTH + 1},
            "a": {"type": "array", "items": {}, "minItems": 2, "maxItems": 1000},
            "bad": {"type": "string", "minLength": 5, "maxLength": 2},
            "float": {"type": "string", "maxLength": 5.0},
        },
    }
    safe = grammar_safe(schema)["properties"]
    assert safe["s"] == {"type": "string"}
    assert safe["a"]["minItems"] == 2 and "maxItems" not in safe["a"]
    assert safe["bad"] == {"type": "string"} and safe["float"] == {"type": "string", "maxLength": 5}
    compiles(vocab, grammar_safe(schema))


def test_unions_refs_and_odd_keywords(vocab: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "maybe": {"type": ["string", "null"], "maxLength": 4},
            "pick": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
            },
            "both": {"allOf": [{"$ref": "#/$defs/named"}, {"required": ["name"]}]},
            "open": {"type": "object", "additionalProperties": True},
            "closed": {"type": "object", "properties": {}, "additionalProperties": False},
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "mail": {"type": "string", "format": "email"},
            "flag": True,
            "remote": {"$ref": "https://example.com/schema.json"},
            "dynamic": {"if": {"type": "string"}, "then": {"minLength": 1}},
        },
        "$defs": {"named": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    safe = grammar_safe(schema)
    props = safe["properties"]
    assert props["maybe"] == {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]}
    assert [o["required"] for o in props["pick"]["anyOf"]] == [["a"], ["b"]]
    assert props["both"]["required"] == ["name"] and "$ref" not in json.dumps(safe)
    assert props["mail"] == {"type": "string"} and props["when"]["format"] == "date-time"
    assert props["flag"]["type"] == props["remote"]["type"] == props["dynamic"]["type"]
    compiles(vocab, safe)


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        (r"^\d+\.\d+$", ["3.14", "10.0"], ["3", "3x14", ".5"]),
        (r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$", ["t1", "a_b-c"], ["-a", "", "a" * 41]),
        (r"^[0-9A-Za-z_ .,+*/%()-]+$", ["(1 + 2) * 3", "sqrt(2)"], ["1; drop", "{}", ""]),
        (r"^a|b$", ["a", "b"], ["ab", ""]),
        (r"^\$\d{1,3}(,\d{3})*$", ["$1", "$1,000"], ["1", "$1000,0"]),
        (r"^[^\d]{2}$", ["ab", "é!"], ["a1", "abc"]),
        (r"^\w+@\w+\.[a-z]{2,3}$", ["me@x.io"], ["me@x", "me@x.info"]),
        (r"^(yes|no)?$", ["", "yes"], ["maybe"]),
        (r"^a]b}$", ["a]b}"], ["ab"]),
        (r"^\^x\*{2}$", ["^x**"], ["^x*", "x**"]),
        (r"^.{2,4}$", ["ab", "abcd"], ["a", "abcde"]),
        (r"^[\s]+$", [" "], ["a"]),
    ],
)
def test_simple_patterns_are_kept_with_their_meaning(
    vocab: Any, pattern: str, matches: list[str], misses: list[str]
) -> None:
    kept = grammar_pattern(pattern)
    assert kept is not None
    for text in matches:
        assert re.fullmatch(pattern, text) and re.fullmatch(kept, text), text
    for text in misses:
        assert not re.fullmatch(pattern, text) and not re.fullmatch(kept, text), text
    compiles(vocab, {"type": "object", "properties": {"p": {"type": "string", "pattern": kept}}})
    assert grammar_safe({"type": "string", "pattern": pattern}) == {
        "type": "string",
        "pattern": kept,
    }


@pytest.mark.parametrize(
    "pattern",
    [
        "[0-9]+",  # unanchored: the converter refuses it
        "^(?=a)a$",  # lookahead
        r"^(a)\1$",  # backreference
        r"^a*?$",  # lazy
        r"^(a|)*$",  # a repeated empty match: left recursion, NULL sampler
        r"^()+$",
        r"^a{1,1000}$",  # too many rules
        r"^a{x}$",  # not a quantifier
        r"^[[:alpha:]]$",
        r"^\bword\b$",
        r'^say "hi"$',  # quotes need JSON escapes the converter never writes
        "^a\nb$",
        "^(a$",
        "^a)$",
        "^[a$",
        "^a\\",
        "^" + "(" * 300 + "a" + ")" * 300 + "$",  # deep enough to exhaust the recursion
    ],
)
def test_other_patterns_are_dropped(vocab: Any, pattern: str) -> None:
    assert grammar_pattern(pattern) is None
    safe = grammar_safe({"type": "string", "pattern": pattern, "maxLength": 8})
    assert safe == {"type": "string", "maxLength": 8}
    compiles(vocab, safe)


def test_every_class_leaves_out_what_a_json_string_cannot_hold_raw() -> None:
    kept = grammar_pattern(r'^[^a]["\\\n\t x]$')
    assert kept is not None
    assert re.fullmatch(kept, "b ") and re.fullmatch(kept, "éx")
    for bad in ('"x', "\\x", "\nx", "b\t", 'b"', "b\\"):
        assert not re.fullmatch(kept, bad)
    assert grammar_pattern(r'^["\\]$') is None  # nothing would be left


def test_enum_and_const_literals(vocab: Any) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "mode": {"enum": ["fast", "slow", 3, None, True]},
            "unit": {"const": "°C"},
            "emoji": {"const": "😀"},
            "nested": {"const": {"a": [1, 2.5]}},
            "empty": {"enum": []},
            "huge": {"enum": list(range(MAX_ENUM + 1))},
            "mixed": {"enum": ['a"', 1]},
        },
    }
    props = grammar_safe(schema)["properties"]
    assert props["mode"] == schema["properties"]["mode"]
    assert props["unit"] == {"const": "°C"} and props["nested"] == {"const": {"a": [1, 2.5]}}
    assert props["emoji"] == {"type": "string"}  # surrogate pairs in the grammar
    assert props["huge"] == {"type": "integer"}
    assert props["empty"] == props["mixed"] == ANY
    compiles(vocab, grammar_safe(schema))


def test_wide_objects_keep_their_required_properties(vocab: Any) -> None:
    wide = {
        "type": "object",
        "properties": {f"p{i}": {"type": "integer"} for i in range(1500)},
        "required": ["p7", "p1499"],
    }
    safe = grammar_safe(wide)
    assert list(safe["properties"]) == ["p7", "p1499"] and safe["required"] == ["p7", "p1499"]
    assert safe["additionalProperties"]["type"][0] == "object"
    compiles(vocab, safe)


def test_values_valid_for_the_schema_stay_valid_for_its_grammar() -> None:
    # Widening only: what the full schema accepts, the grammar's schema accepts too.
    schema = hostile_schema()
    del schema["properties"]['"odd" name']  # dropped from the grammar: never written
    value = {
        "text": "x" * 5000,
        "choice": "v9999",
        "quoted": 'say "hi"',
        "items": list(range(100)),
        "email": "me.you+tag@example-mail.org",
        "lookahead": "user_1",
        "stray": "a]b",
        "tree": {"name": "a", "children": [{"name": "b", "children": []}]},
        "anything": {"any": ["thing"]},
    }
    Draft202012Validator(schema).validate(value)
    Draft202012Validator(grammar_safe(schema)).validate(value)
    for tool in every_tool():
        Draft202012Validator.check_schema(grammar_safe(tool.parameters))


def test_grammar_safe_is_deterministic_and_returns_fresh_copies() -> None:
    schema = every_tool()[0].parameters
    first = grammar_safe(schema)
    first["properties"].clear()
    assert grammar_safe(copy.deepcopy(schema)) == grammar_safe(schema) != first
    assert grammar_safe({"type": "object", "properties": {"x": {"const": float("nan")}}}) == ANY


def test_grounded_arguments_compile_for_every_benchmark_question(vocab: Any) -> None:
    """Spans, numbers and enums copied from a request stay literals llama.cpp accepts."""
    from tests.bench.fc_cases import CASES, FUNCTIONS

    for case in CASES:
        tools = [
            ToolSchema(name=f.name, description=f.description, parameters=f.parameters)
            for f in (FUNCTIONS[name] for name in case.functions)
        ]
        request = ModelRequest(
            model=LOCAL_MODEL,
            messages=[ChatMessage(role="user", content=case.question)],
            tools=tools,
        )
        compiles(vocab, json_protocol.response_format(request)["schema"], MAX_PROTOCOL_RULES)
