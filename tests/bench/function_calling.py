"""Function calling of the embedded model (SmolLM2-135M under llama.cpp), two ways.

`python -m tests.bench --only function_calling` (or `python -m tests.bench.function_calling`)
asks the questions of `fc_cases` (155, BFCL-style) through three paths, each on a
llama.cpp server it starts on a free port and stops:

- direct: POST /v1/chat/completions with native `tools` and `tool_choice: "auto"` to a
  server in llama.cpp's `chatml-function-calling` chat format, no system prompt;
- direct-prompt: the same with the one-line `DIRECT_SYSTEM_PROMPT`;
- colony: `activities.providers.client.complete` against the server as Colony configures it
  (`workers.model_server.server_spec`), with the tools as the agent loop sends them (the
  local provider uses Colony's JSON tool protocol, activities/providers/json_protocol.py), the default
  agent's instructions as system prompt, and the agent loop's dispatch: `run_tool`
  validates the arguments, and a `BadToolArgumentsError` goes back to the model as the
  tool result for one retry.

Every path runs the same step loop: after each reply with calls, every call gets the
result `{"ok": true}` in the path's own conversation format, until the model answers
or `MAX_STEPS` replies have been made (a direct reply with several calls counts them
all). The calls collected are then checked against the gold calls (`check_calls`),
order-free; an irrelevance case is right only when no call was attempted at all. Two
looser measures are reported too: the first reply alone (what BFCL scores) and the
calls with exact repeats dropped.

Per-case results go to `.bench/function_calling/`: `results-<path>.jsonl` (every case,
to diff two runs), `failures-<path>.md` (expected calls, actual calls, every reply) and
`llama-server.log`. `--path colony --category single --limit 10 --case single_04`
narrow a run (`--fc-path` etc. under `python -m tests.bench`).
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from activities.providers.client import ModelClient
from activities.runs.llm import MAX_TOOL_RESULT_IN_PROMPT
from activities.tools.framework import (
    BadToolArgumentsError,
    StaticToolRegistry,
    ToolContext,
    ToolDefinition,
    ToolError,
    run_tool,
)
from core.payloads import ChatMessage, ModelRequest, ToolCallRequest, wrap_untrusted
from core.providers import LOCAL_MODEL, local_model_installed
from tests.bench.fc_cases import CASES, CATEGORIES, FUNCTIONS, OMIT, Case, Category, GoldCall
from tests.conftest import make_settings
from workers import model_server
from workers.process import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / ".bench" / "function_calling"

MAX_STEPS = 4
"""Model replies per case (a colony retry after rejected arguments comes on top)."""
MAX_RETRIES = 1
"""Colony path: rejected arguments the model may correct, per case."""
MAX_TOKENS = 256
"""Per reply, both paths (llama.cpp ignores it for the direct path's call arguments)."""
TOOL_RESULT = '{"ok": true}'
DIRECT_SYSTEM_PROMPT = "You are a helpful assistant that calls functions when needed."
AGENT_INSTRUCTIONS = "You are a helpful assistant. Use the tools when they help; answer concisely."
"""The default agent's instructions (api/routes/runs.py)."""
REQUEST_TIMEOUT_S = 600.0
_NOW = datetime(2025, 6, 1, tzinfo=UTC)

PATHS = ("direct", "direct-prompt", "colony")
LABELS = {
    "direct": "direct (native tools)",
    "direct-prompt": "direct + one-line system prompt",
    "colony": "colony (`ModelClient.complete`)",
}
CATEGORY_LABELS: dict[Category, str] = {
    "single": "single function",
    "multiple": "choose among 2-4",
    "parallel": "parallel (2-3 calls)",
    "irrelevance": "no relevant function (right: no call)",
}


# -- checker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A call the model made: the arguments parsed, or their raw text if they do not parse."""

    name: str
    arguments: Any

    @classmethod
    def parse(cls, name: str, raw: str) -> "Call":
        """The call with its JSON arguments decoded when they are JSON."""
        try:
            return cls(name, json.loads(raw))
        except (TypeError, ValueError):
            return cls(name, raw)

    def __str__(self) -> str:
        args = self.arguments
        return f"{self.name}({json.dumps(args) if not isinstance(args, str) else repr(args)})"


def _normal(text: str) -> str:
    return text.strip().casefold()


def same_value(value: Any, accepted: Any) -> bool:
    """Whether `value` equals an acceptable value: strings ignoring case and outer blanks,
    numbers by value, booleans only as booleans, lists item by item, objects key by key."""
    if isinstance(accepted, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(accepted, bool) and value == accepted
    if isinstance(accepted, str):
        return isinstance(value, str) and _normal(value) == _normal(accepted)
    if isinstance(accepted, int | float):
        return isinstance(value, int | float) and math.isclose(
            value, accepted, rel_tol=1e-9, abs_tol=1e-12
        )
    if isinstance(accepted, list):
        return (
            isinstance(value, list)
            and len(value) == len(accepted)
            and all(same_value(v, a) for v, a in zip(value, accepted, strict=True))
        )
    if isinstance(accepted, dict):
        return (
            isinstance(value, dict)
            and value.keys() == accepted.keys()
            and all(same_value(value[k], a) for k, a in accepted.items())
        )
    return bool(value == accepted)


def type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `value` has the JSON Schema type of `schema` (arrays: their items too).

    An integer is a number; a number with no fraction (5.0) is an integer, as JSON Schema
    has it; a numeric string is neither, and a boolean is not a number.
    """
    kind = schema.get("type")
    if isinstance(value, bool):
        return kind in (None, "boolean")
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    if kind == "boolean":
        return False
    if kind == "array":
        items = schema.get("items", {})
        return isinstance(value, list) and all(type_ok(v, items) for v in value)
    if kind == "object":
        return isinstance(value, dict)
    return kind is None


def check_call(call: Call, gold: GoldCall, parameters: Mapping[str, Any]) -> str | None:
    """None when `call` is the gold call; otherwise what is wrong with it.

    `parameters` is the function's JSON Schema: required arguments must be present,
    unknown ones absent, every value of its type (and enum). Each gold argument must
    have one of its acceptable values, or be absent when `OMIT` is among them; an
    argument the gold call does not list must be absent.
    """
    ((name, expected),) = gold.items()
    if call.name != name:
        return f"called {call.name}, expected {name}"
    args = call.arguments
    if not isinstance(args, dict):
        return f"{name}: arguments are not a JSON object: {args!r}"
    properties: Mapping[str, Any] = parameters.get("properties", {})
    missing = [r for r in parameters.get("required", []) if r not in args]
    if missing:
        return f"{name}: missing required {', '.join(missing)}"
    unknown = [k for k in args if k not in properties]
    if unknown:
        return f"{name}: unknown argument {', '.join(unknown)}"
    for key, value in args.items():
        schema = properties[key]
        if not type_ok(value, schema):
            return f"{name}: {key}={value!r} is not of type {schema.get('type')}"
        if "enum" in schema and not any(same_value(value, e) for e in schema["enum"]):
            return f"{name}: {key}={value!r} is not one of {schema['enum']}"
        if key not in expected:
            return f"{name}: unexpected argument {key}={value!r}"
    for key, accepted in expected.items():
        values = [a for a in accepted if not (isinstance(a, str) and a == OMIT)]
        if key not in args:
            if len(values) < len(accepted):
                continue
            return f"{name}: {key} missing, expected one of {values}"
        if not any(same_value(args[key], a) for a in values):
            if not values:
                return f"{name}: {key}={args[key]!r} should be omitted"
            return f"{name}: {key}={args[key]!r}, expected one of {values}"
    return None


def check_calls(calls: Sequence[Call], gold: Sequence[GoldCall]) -> str | None:
    """None when the calls are the gold calls in some order; otherwise why not."""
    if not gold:
        return None if not calls else f"{len(calls)} call(s), expected none"
    if len(calls) != len(gold):
        return f"{len(calls)} call(s), expected {len(gold)}"

    def check(call: Call, expected: GoldCall) -> str | None:
        (name,) = expected
        return check_call(call, expected, FUNCTIONS[name].parameters)

    for order in itertools.permutations(calls):
        if all(check(c, g) is None for c, g in zip(order, gold, strict=True)):
            return None
    if len(gold) == 1:
        return check(calls[0], gold[0])
    # Why not: each gold call no call matches, against a call left over (same name first).
    unused = list(calls)
    unmatched = []
    for expected in gold:
        hit = next((c for c in unused if check(c, expected) is None), None)
        if hit is None:
            unmatched.append(expected)
        else:
            unused.remove(hit)
    reasons = []
    for expected in unmatched:
        (name,) = expected
        pool = [c for c in unused if c.name == name] or unused
        reasons.append(str(check(pool[0], expected)) if pool else f"no call matches {name}")
    return "; ".join(reasons)


# -- runs ------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case through one path."""

    case_id: str
    category: Category
    path: str
    correct: bool = False
    reason: str = ""
    first_reply_correct: bool = False
    """The first reply's calls alone are the gold calls (BFCL's single-turn measure)."""
    correct_without_repeats: bool = False
    """Correct once exact repeats of a call are dropped (the model re-calling in a loop)."""
    calls: list[Call] = field(default_factory=list)
    """Every call made, in order (colony: not the rejected calls that were retried)."""
    rejected: list[tuple[Call, str]] = field(default_factory=list)
    """Colony: calls whose arguments were refused and which the model then retried."""
    answer: str | None = None
    replies: list[str] = field(default_factory=list)
    """Each model reply: content and calls (colony: as `complete` returns it, decoded)."""
    error: str | None = None
    seconds: float = 0.0

    def score(self, case: Case) -> None:
        """Set `correct`, `reason` and the looser measures from the calls and replies."""
        attempted = [*self.calls, *(c for c, _ in self.rejected)]
        self.correct_without_repeats = False
        self.first_reply_correct = False
        if self.replies:  # whatever came after it (even an error)
            first = json.loads(self.replies[0])["tool_calls"]
            calls = [Call.parse(c["name"], c["arguments"]) for c in first]
            self.first_reply_correct = check_calls(calls, case.gold) is None
        if self.error is not None:
            self.correct, self.reason = False, f"error: {self.error}"
        elif not case.gold and attempted:
            self.correct = False
            self.reason = f"{len(attempted)} call(s), expected none"
        else:
            reason = check_calls(self.calls, case.gold)
            self.correct, self.reason = reason is None, reason or ""
            unique = list({_key(c): c for c in self.calls}.values())
            self.correct_without_repeats = check_calls(unique, case.gold) is None
            if not self.correct and not self.calls and case.gold:
                self.reason = "answered without a call"


def _key(call: Call) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True)


@dataclass
class Loop:
    """A case's step loop as it goes: the result so far (kept if a call fails midway)."""

    case: Case
    result: CaseResult
    model_calls: int = 0

    def finish(self) -> CaseResult:
        """Score the result."""
        self.result.score(self.case)
        return self.result


async def run_direct(
    loop: Loop, http: httpx.AsyncClient, base_url: str, system_prompt: str | None
) -> None:
    """One case over llama.cpp's native function calling."""
    case = loop.case
    tools = [
        {
            "type": "function",
            "function": {"name": f.name, "description": f.description, "parameters": f.parameters},
        }
        for f in (FUNCTIONS[name] for name in case.functions)
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": case.question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    while loop.model_calls < MAX_STEPS:
        response = await http.post(
            f"{base_url}/chat/completions",
            json={
                "model": LOCAL_MODEL,
                "messages": messages,
                "tools": tools,
                "tool_choice": "auto",
                "temperature": 0,
                "max_tokens": MAX_TOKENS,
            },
        )
        if response.is_error:  # with llama.cpp's reason (e.g. the context window is full)
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}: {response.text[:300]}",
                request=response.request,
                response=response,
            )
        message = response.json()["choices"][0]["message"]
        loop.model_calls += 1
        tool_calls = message.get("tool_calls") or []
        loop.result.replies.append(
            json.dumps({"content": message.get("content"), "tool_calls": [
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                for c in tool_calls
            ]})
        )  # fmt: skip
        if not tool_calls:
            loop.result.answer = message.get("content") or ""
            break
        made = [Call.parse(c["function"]["name"], c["function"]["arguments"]) for c in tool_calls]
        loop.result.calls += made
        # llama.cpp's server refuses a null content (and a tool message with a name).
        messages.append(
            {"role": "assistant", "content": message.get("content") or "", "tool_calls": tool_calls}
        )
        messages += [
            {"role": "tool", "tool_call_id": c["id"], "content": TOOL_RESULT} for c in tool_calls
        ]


def _definitions(case: Case) -> StaticToolRegistry:
    def handler(arguments: dict[str, Any], ctx: ToolContext) -> str:
        return TOOL_RESULT

    return StaticToolRegistry(
        ToolDefinition(f.name, f.description, f.parameters, side_effects=False, handler=handler)
        for f in (FUNCTIONS[name] for name in case.functions)
    )


async def run_colony(loop: Loop, client: ModelClient) -> None:
    """One case through `ModelClient.complete` and the agent loop's tool dispatch."""
    case = loop.case
    registry = _definitions(case)
    schemas = registry.schemas(list(case.functions))
    ctx = ToolContext(tenant_id="bench", run_id="bench", step=0, now=_NOW)
    messages = [
        ChatMessage(role="system", content=AGENT_INSTRUCTIONS),
        ChatMessage(role="user", content=case.question),
    ]
    retries = MAX_RETRIES
    while loop.model_calls < MAX_STEPS + MAX_RETRIES - retries:
        request = ModelRequest(
            model=LOCAL_MODEL, messages=messages, tools=schemas, temperature=0.0,
            max_tokens=MAX_TOKENS, timeout_s=REQUEST_TIMEOUT_S,
        )  # fmt: skip
        message = (await client.complete(request)).message
        loop.model_calls += 1
        step = loop.model_calls
        loop.result.replies.append(
            json.dumps({"content": message.content, "tool_calls": [
                {"name": c.name, "arguments": c.arguments} for c in message.tool_calls
            ]})
        )  # fmt: skip
        if not message.tool_calls:
            loop.result.answer = message.content or ""
            break
        # As the agent loop does: unique call ids, results as delimited tool output.
        calls = [
            ToolCallRequest(id=f"call_{step}_{i}", name=c.name, arguments=c.arguments)
            for i, c in enumerate(message.tool_calls)
        ]
        messages.append(message.model_copy(update={"tool_calls": calls}))
        made = [Call.parse(c.name, c.arguments) for c in calls]
        for call, parsed in zip(calls, made, strict=True):
            try:
                content = await run_tool(registry, call, ctx)
            except BadToolArgumentsError as exc:
                content = f"Error: {exc}"
                if retries:
                    retries -= 1
                    loop.result.rejected.append((parsed, content))
                else:
                    loop.result.calls.append(parsed)
            except ToolError as exc:
                content = f"Error: {exc}"
                loop.result.calls.append(parsed)
            else:
                loop.result.calls.append(parsed)
            messages.append(
                ChatMessage(
                    role="tool", tool_call_id=call.id, name=call.name,
                    content=wrap_untrusted(
                        call.name, call.id, content, MAX_TOOL_RESULT_IN_PROMPT,
                        run_id="bench", seq=len(messages),
                    ),
                )
            )  # fmt: skip


def select(
    categories: Sequence[str] | None = None,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
) -> list[Case]:
    """The cases to run: of these categories (all), at most `limit` of each, or these ids."""
    if ids:
        known = {c.id: c for c in CASES}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise SystemExit(f"unknown case id(s): {', '.join(unknown)}")
        return [known[i] for i in ids]
    chosen: list[Case] = []
    for category in categories or CATEGORIES:
        chosen += [c for c in CASES if c.category == category][:limit]
    return chosen


async def run_path(
    path: str, cases: Sequence[Case], server: "Server | None", *, resume: bool = False
) -> list[CaseResult]:
    """Every case through one path, one after another (llama.cpp serves one at a time).

    With `resume`, cases already in this path's results file are taken from it (and
    scored again); `server` may then be None if they all are.

    Raises:
        RuntimeError: the server died (a case's failure is then not the model's).
    """
    done = load_results(path) if resume else {}
    results: list[CaseResult] = []
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:
        for n, case in enumerate(cases, 1):
            if case.id in done:
                done[case.id].score(case)
                results.append(done[case.id])
                continue
            assert server is not None, "no server, and cases left to run"
            started = time.perf_counter()
            loop = Loop(case, CaseResult(case.id, case.category, path))
            try:
                if path == "colony":
                    settings = make_settings(COLONY_LOCAL_MODEL_URL=server.url)
                    async with ModelClient(settings) as client:
                        await run_colony(loop, client)
                else:
                    prompt = DIRECT_SYSTEM_PROMPT if path == "direct-prompt" else None
                    await run_direct(loop, http, server.url, prompt)
            except (httpx.HTTPError, ApplicationError) as exc:
                if not server.process.running():
                    raise RuntimeError(
                        f"the llama.cpp server exited during {case.id} (see {server.log});"
                        " run again with --resume to go on"
                    ) from exc
                loop.result.error = f"{type(exc).__name__}: {exc}"[:500]
            result = loop.finish()
            result.seconds = time.perf_counter() - started
            results.append(result)
            write_results(path, cases, results)  # after every case: readable mid-run
            mark = "ok" if result.correct else f"FAIL ({result.reason[:80]!r})"
            sys.stderr.write(
                f"[function_calling] {path} {n}/{len(cases)} {case.id}"
                f" {result.seconds:.1f} s: {mark}\n"
            )
    return results


# -- report ----------------------------------------------------------------------------


def _gold_text(gold: GoldCall) -> str:
    ((name, args),) = gold.items()
    parts = [f"{k}={json.dumps(v)}" for k, v in args.items()]
    return f"{name}({', '.join(parts)})"


def load_results(path: str) -> dict[str, CaseResult]:
    """The cases of `results-<path>.jsonl` (none if there is no such file), by id."""
    file = OUT_DIR / f"results-{path}.jsonl"
    if not file.exists():
        return {}
    out: dict[str, CaseResult] = {}
    for line in file.read_text().splitlines():
        row = json.loads(line)
        row["calls"] = [Call(**c) for c in row["calls"]]
        row["rejected"] = [(Call(**c), why) for c, why in row["rejected"]]
        out[row["case_id"]] = CaseResult(**row)
    return out


def write_results(path: str, cases: Sequence[Case], results: Sequence[CaseResult]) -> Path:
    """`results-<path>.jsonl` (every case) and `failures-<path>.md`; returns the latter."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    by_id = {c.id: c for c in cases}
    with (OUT_DIR / f"results-{path}.jsonl").open("w") as out:
        out.writelines(json.dumps(asdict(r)) + "\n" for r in results)
    failures = OUT_DIR / f"failures-{path}.md"
    lines = [f"# Function-calling failures: {LABELS[path]}", ""]
    for r in results:
        if r.correct:
            continue
        case = by_id[r.case_id]
        lines += [
            f"## {r.case_id}: {r.reason}",
            "",
            f"- question: {case.question}",
            f"- functions: {', '.join(case.functions)}",
            "- expected: "
            + ("no call" if not case.gold else " + ".join(map(_gold_text, case.gold))),
            "- calls: " + (" + ".join(map(str, r.calls)) or "none"),
        ]
        lines += [f"- rejected, then retried: {c} -> {why}" for c, why in r.rejected]
        if r.answer is not None:
            lines.append(f"- answer: {r.answer!r}")
        lines += [f"- reply {i}: {text}" for i, text in enumerate(r.replies, 1)]
        lines.append("")
    failures.write_text("\n".join(lines))
    return failures


def _cell(results: Sequence[CaseResult], attr: str = "correct") -> str:
    if not results:
        return "-"
    n = sum(bool(getattr(r, attr)) for r in results)
    return f"{n}/{len(results)} ({100 * n / len(results):.0f}%)"


def _count(results: Sequence[CaseResult], attr: str) -> str:
    return f"{sum(bool(getattr(r, attr)) for r in results)}"


def table(cases: Sequence[Case], by_path: Mapping[str, Sequence[CaseResult]]) -> list[str]:
    """The Markdown report: correct per category and path, then the details."""
    paths = list(by_path)
    categories = [c for c in CATEGORIES if any(case.category == c for case in cases)]

    def of(path: str, category: str | None = None) -> list[CaseResult]:
        return [r for r in by_path[path] if category is None or r.category == category]

    def rows(cell: Callable[[list[CaseResult]], str]) -> list[str]:
        out = []
        for category in [*categories, None]:
            n = sum(category in (None, c.category) for c in cases)
            label = CATEGORY_LABELS[category] if category else "**all**"
            out.append(
                f"| {label} | {n} | " + " | ".join(cell(of(p, category)) for p in paths) + " |"
            )
        return out

    head = [
        "| category | cases | " + " | ".join(LABELS[p] for p in paths) + " |",
        "|---|---|" + "---|" * len(paths),
    ]
    lines = [
        f"Function calling: {len(cases)} BFCL-style cases (tests/bench/fc_cases.py), "
        f"SmolLM2-135M-Instruct Q4_1 on llama.cpp, temperature 0, at most {MAX_STEPS} replies "
        f"per case, each call answered `{TOOL_RESULT}`. Correct = the calls made are the gold "
        "calls (order-free); no call at all on irrelevance cases. Per-case failures: "
        ".bench/function_calling/failures-<path>.md.",
        "",
        *head,
        *rows(_cell),
    ]
    extra: list[tuple[str, list[str]]] = []
    if "irrelevance" in categories:
        cells = []
        for p in paths:
            rs = of(p, "irrelevance")
            with_call = [r for r in rs if r.calls or r.rejected]
            made = sum(len(r.calls) + len(r.rejected) for r in rs)
            cells.append(f"{len(with_call)}/{len(rs)} cases, {made} calls")
        extra.append(("irrelevance: cases with a call, calls made", cells))
    extra += [
        ("calls made, all cases", [str(sum(len(r.calls) for r in of(p))) for p in paths]),
        ("arguments rejected, then retried (colony)",
         [str(sum(len(r.rejected) for r in of(p))) if p == "colony" else "-" for p in paths]),
        ("errors (HTTP, timeouts)", [str(sum(r.error is not None for r in of(p))) for p in paths]),
        ("wall time, median per case",
         [f"{sum(r.seconds for r in of(p)):.0f} s, {_median([r.seconds for r in of(p)]):.1f} s"
          for p in paths]),
    ]  # fmt: skip
    lines += [f"| {label} | | " + " | ".join(cells) + " |" for label, cells in extra]

    def lenient(results: list[CaseResult]) -> str:
        return (
            f"{_count(results, 'first_reply_correct')}"
            f" · {_count(results, 'correct_without_repeats')} / {len(results)}"
        )

    lines += [
        "",
        "Correct by a looser measure: the first reply alone (single-turn, as BFCL scores), "
        "and all calls with exact repeats of a call dropped (a model re-calling in a loop):",
        "",
        *head,
        *rows(lenient),
    ]
    return lines


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


NATIVE_CHAT_FORMAT = "chatml-function-calling"
"""llama.cpp's chat format with native tool calls: the direct paths' server runs it."""
NATIVE_N_CTX = 2048
"""The direct paths' context window. llama.cpp generates call arguments without a token
limit (it ignores `max_tokens` there), and the model sometimes writes a string forever:
in 8192 tokens of context that is four minutes of a useless call, in 2048 under one."""


@dataclass(frozen=True)
class Server:
    """A running llama.cpp server."""

    url: str  # .../v1
    process: ManagedProcess
    log: Path


@asynccontextmanager
async def llama_server(native: bool, threads: int = 1) -> AsyncIterator[Server]:
    """A llama.cpp server on a free port, as Colony configures it (`native`: with the
    function-calling chat format and `NATIVE_N_CTX`); stopped on exit.

    One thread by default: on a machine whose cores are busy, llama.cpp's threads wait
    on each other and two run many times slower than one (the answers are the same).
    """
    port = free_port()
    log = OUT_DIR / "llama-server.log"
    spec = model_server.server_spec(port, log, threads=threads)
    if native:
        spec.argv[spec.argv.index("--chat_format") + 1] = NATIVE_CHAT_FORMAT
        spec.argv[spec.argv.index("--n_ctx") + 1] = str(NATIVE_N_CTX)
    process = ManagedProcess(spec)
    await process.start()
    try:
        yield Server(f"http://127.0.0.1:{port}/v1", process, log)
    finally:
        await process.stop()


async def run_all(
    paths: Sequence[str] = PATHS,
    categories: Sequence[str] | None = None,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    resume: bool = False,
    threads: int = 1,
) -> list[str]:
    """Run the cases through each path, each on a llama.cpp server of its own; Markdown lines.

    The direct paths need llama.cpp's function-calling chat format; the colony path gets
    the server exactly as `workers.model_server` configures it for Colony. SIGTERM
    cancels the run, so the server is stopped too.
    """
    if not local_model_installed():
        return ["Function calling: skipped (the local-llm extra is not installed)."]
    cases = select(categories, limit, ids)
    by_path: dict[str, list[CaseResult]] = {}
    groups = [[p for p in paths if p != "colony"], [p for p in paths if p == "colony"]]
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        for native, group in zip((True, False), groups, strict=True):
            if not group:
                continue
            finished = resume and all(
                {c.id for c in cases} <= load_results(path).keys() for path in group
            )
            async with contextlib.AsyncExitStack() as stack:
                server = (
                    None
                    if finished
                    else await stack.enter_async_context(llama_server(native, threads))
                )
                for path in group:
                    by_path[path] = await run_path(path, cases, server, resume=resume)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    by_path = {p: by_path[p] for p in paths}
    return table(cases, by_path)


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The options that narrow a run (`prefix` "fc-" inside `python -m tests.bench`)."""
    parser.add_argument(
        f"--{prefix}path", nargs="+", choices=PATHS, default=list(PATHS),
        help="paths to run (default: all three)",
    )  # fmt: skip
    parser.add_argument(
        f"--{prefix}category", nargs="+", choices=CATEGORIES, default=None,
        help="categories to run (default: all)",
    )  # fmt: skip
    parser.add_argument(
        f"--{prefix}limit", type=int, default=None, help="at most this many cases per category"
    )
    parser.add_argument(
        f"--{prefix}case", nargs="+", default=None, metavar="ID", help="only these case ids"
    )
    parser.add_argument(
        f"--{prefix}resume", action="store_true",
        help="keep the cases already in .bench/function_calling/results-<path>.jsonl",
    )  # fmt: skip
    parser.add_argument(
        f"--{prefix}threads", type=int, default=1, help="llama.cpp threads (default: 1)"
    )


async def run_options(args: argparse.Namespace, prefix: str = "") -> list[str]:
    """`run_all` with the options of `add_arguments` (`prefix` "fc_" for "--fc-...")."""

    def option(name: str) -> Any:
        return getattr(args, prefix + name)

    return await run_all(
        option("path"), option("category"), option("limit"), option("case"),
        resume=option("resume"), threads=option("threads"),
    )  # fmt: skip


def main() -> None:
    """Run the benchmark alone and print its table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.function_calling")
    add_arguments(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = asyncio.run(run_options(args))
    print("\n".join(lines))
    print(f"\nTotal time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
