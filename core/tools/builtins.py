"""The built-in code tools as models and the API see them: names, descriptions, schemas.

Pure data, so that the API can list the built-ins without importing the activities that
run them. Each activity module gives its tools a handler
(`activities.tools.framework.ToolDefinition.serving`); `tests/unit/test_tool_names.py`
checks that the two agree with `core.tools.names.CODE_TOOL_NAMES`.
"""

from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from core.tools.names import (
    CALCULATOR,
    GET_TIME,
    HTTP_FETCH,
    LIST_FILES,
    POST_TO_BLACKBOARD,
    READ_BLACKBOARD,
    READ_FILE,
    READ_OUTPUT,
    RUN_PYTHON,
    RUN_SHELL,
    WRITE_FILE,
)


@dataclass(frozen=True)
class BuiltinTool:
    """What the model is told about a built-in tool, and whether a call changes the world."""

    name: str
    description: str
    parameters: dict[str, Any]
    side_effects: bool = False
    examples: tuple[str, ...] = ()
    """Requests the tool serves, e.g. "What is 17 * 23?" (the local model's tools are
    ranked by them)."""


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


# -- calculator ----------------------------------------------------------------------

MAX_EXPRESSION_CHARS: Final = 500
EXPRESSION_PATTERN = r"^[0-9A-Za-z_ .,+*/%()-]+$"
"""What a calculator expression is made of: numbers, names, operators, parentheses."""
EXPRESSION_GRAMMAR = r"^[0-9(-][0-9 .+*/%()-]*$"
"""The narrower form a small model is held to while it writes one (`x-grammar-pattern`):
numbers and operators only, so prose after the arithmetic ("17 * 23, result of...")
cannot continue it. It gives up names (sqrt, pi) for speed: one character class keeps
llama.cpp's grammar sampler fast; letters allowed only before "(" slowed it to a crawl
(over 120 s for one call on 2 cores)."""
EXPRESSION_IN_TEXT = r"[0-9(][0-9 .()]*(\*\*|[-+*/%])[0-9 .+*/%()-]*[0-9)]"
"""Arithmetic written out in a request ("17 * 23" in "What is 17 * 23?"): numbers joined
by operators. A small model is held to it when the request holds exactly one
(`x-copy-pattern`, activities/providers/call_grounding.py)."""

CALCULATOR_TOOL: Final = BuiltinTool(
    name=CALCULATOR,
    description=(
        "Evaluate an arithmetic expression and return the result. Supports numbers, "
        "+ - * / // % ** and parentheses; functions sqrt, sin, cos, tan, asin, acos, atan "
        "(radians), log(x) or log(x, base), log10, exp, abs, round(x) or round(x, digits), "
        "floor, ceil, min, max, hypot, factorial; constants pi, e, tau."
    ),
    parameters={
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The arithmetic expression, e.g. (1 + 2) * 3 / 4",
                "maxLength": MAX_EXPRESSION_CHARS,
                # Only what an expression can hold: a grammar built from the schema then
                # keeps a small model from writing JSON or prose into it.
                "pattern": EXPRESSION_PATTERN,
                "x-grammar-pattern": EXPRESSION_GRAMMAR,
                "x-copy-pattern": EXPRESSION_IN_TEXT,
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
    examples=(
        "What is 17 * 23?",
        "Compute 2 ** 10",
        "What is the square root of 144?",
        "How much is 15% of 80?",
    ),
)

# -- get_time ------------------------------------------------------------------------

ZONE_EXAMPLES: Final = "UTC, Europe/London, America/New_York, Asia/Tokyo"

GET_TIME_TOOL: Final = BuiltinTool(
    name=GET_TIME,
    description=(
        "Get the current date and time (ISO 8601) in a time zone, with the weekday. "
        f"timezone is an IANA name such as {ZONE_EXAMPLES}; the default is UTC."
    ),
    parameters={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone name, e.g. Europe/Paris",
                "default": "UTC",
                "maxLength": 64,
            }
        },
        "additionalProperties": False,
    },
    examples=("What time is it in Tokyo?", "What is today's date?", "What day is it in London?"),
)

# -- http_fetch ----------------------------------------------------------------------

HTTP_FETCH_TOOL: Final = BuiltinTool(
    name=HTTP_FETCH,
    description=(
        "Fetch a URL with GET and return its status, content type and text (HTML is "
        "converted to readable text). Only hosts on the tenant's egress allowlist can be "
        'reached. Example: {"url": "https://example.com/page"}'
    ),
    parameters=_object(
        {
            "url": {
                "type": "string",
                "description": "Absolute http(s) URL",
                "minLength": 8,
                "maxLength": 2048,
            },
            "max_chars": {
                "type": "integer",
                "description": "Longest text to return",
                "minimum": 100,
                "maximum": 100_000,
                "default": 20_000,
            },
        },
        ["url"],
    ),
)

# -- sandbox and workspace -----------------------------------------------------------

MIB: Final = 1024 * 1024
WORKSPACE_READ_LIMIT: Final = 64 * 1024
"""Bytes `read_file` returns per call."""


class SandboxLimits(BaseModel):
    """Resource limits of one sandboxed call (see the decision record for enforcement)."""

    model_config = ConfigDict(frozen=True)

    cpu_seconds: int = Field(default=10, ge=1, le=3600)
    memory_mb: int = Field(default=512, ge=64, le=65536)
    """Address space per process (RLIMIT_AS)."""
    max_processes: int = Field(default=64, ge=4, le=4096)
    wall_seconds: float = Field(default=30, gt=0, le=3600)
    max_output_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * MIB)
    """Kept per stream (stdout, stderr); the rest is counted and dropped."""
    max_workspace_mb: int = Field(default=256, ge=1, le=1024 * 1024)
    """Largest file (RLIMIT_FSIZE); the workspace total is checked after each call."""
    tmp_mb: int = Field(default=64, ge=1, le=4096)
    """Size of the in-memory /tmp and /dev/shm of each call."""


def sandbox_tools(limits: SandboxLimits) -> list[BuiltinTool]:
    """run_python, run_shell, read_file, write_file and list_files under `limits`."""
    where = (
        "The working directory /workspace belongs to this run and persists between calls "
        "(run_python, run_shell, read_file, write_file and list_files all see it); "
        "everything else is read-only or discarded after the call. No network access. "
        f"Limits per call: {limits.cpu_seconds} s CPU, {limits.wall_seconds:g} s wall clock, "
        f"{limits.memory_mb} MB memory, {limits.max_processes} processes; output beyond "
        f"{limits.max_output_bytes // 1024} KiB per stream is cut."
    )
    path = {
        "type": "string",
        "minLength": 1,
        "description": "Path relative to the workspace, e.g. 'data/out.csv'.",
    }
    return [
        BuiltinTool(
            name=RUN_PYTHON,
            description=(
                "Run a Python 3 program in an isolated sandbox and get its exit code, "
                f"stdout and stderr. Print what you want to see. {where}"
            ),
            parameters=_object(
                {"code": {"type": "string", "minLength": 1, "description": "Python source."}},
                ["code"],
            ),
        ),
        BuiltinTool(
            name=RUN_SHELL,
            description=(
                "Run a bash script in an isolated Linux sandbox (coreutils, python3) and "
                f"get its exit code, stdout and stderr. {where}"
            ),
            parameters=_object(
                {"command": {"type": "string", "minLength": 1, "description": "Bash script."}},
                ["command"],
            ),
        ),
        BuiltinTool(
            name=READ_FILE,
            description=(
                f"Read a text file from this run's workspace (/workspace), "
                f"{WORKSPACE_READ_LIMIT // 1024} KiB per call; page on with `offset`."
            ),
            parameters=_object(
                {
                    "path": path,
                    "offset": {
                        "type": "integer",
                        "minimum": 0,
                        "default": 0,
                        "description": "Byte offset to start at.",
                    },
                },
                ["path"],
            ),
        ),
        BuiltinTool(
            name=WRITE_FILE,
            description=(
                "Create or replace a text file in this run's workspace (/workspace); "
                "missing directories are created. run_python and run_shell see the file."
            ),
            parameters=_object(
                {"path": path, "content": {"type": "string", "description": "Full file text."}},
                ["path", "content"],
            ),
        ),
        BuiltinTool(
            name=LIST_FILES,
            description=(
                "List files and directories in this run's workspace (/workspace), recursively."
            ),
            parameters=_object(
                {
                    "path": {
                        "type": "string",
                        "default": ".",
                        "description": "Directory relative to the workspace.",
                    }
                },
                [],
            ),
        ),
    ]


# -- blackboard ----------------------------------------------------------------------

MAX_POST_CHARS: Final = 8000

BLACKBOARD_TOOLS: Final = (
    BuiltinTool(
        name=POST_TO_BLACKBOARD,
        description=(
            "Share a finding with the other agents of your swarm and with the queen "
            "(a fact, a partial result, a warning). Keep it short and self-contained."
        ),
        parameters=_object(
            {
                "content": {"type": "string", "minLength": 1, "maxLength": MAX_POST_CHARS},
                "topic": {
                    "type": "string",
                    "maxLength": 100,
                    "description": "a short label others can filter by",
                },
            },
            ["content"],
        ),
    ),
    BuiltinTool(
        name=READ_BLACKBOARD,
        description="Read what the agents of your swarm have posted, oldest first.",
        parameters={
            "type": "object",
            "properties": {
                "topic": {"type": "string", "maxLength": 100},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 20},
            },
            "additionalProperties": False,
        },
    ),
)

# -- read_output ---------------------------------------------------------------------

OUTPUT_PAGE_CHARS: Final = 16_000
"""Characters per page of `read_output` (as much as the prompt shows of one tool output)."""

READ_OUTPUT_TOOL: Final = BuiltinTool(
    name=READ_OUTPUT,
    description=(
        "Read a tool output that was cut short, by the colony:// reference in its note, "
        f"{OUTPUT_PAGE_CHARS} characters at a time from `offset`."
    ),
    parameters=_object(
        {
            "ref": {
                "type": "string",
                "maxLength": 300,
                "description": "colony://runs/<run>/messages/<seq>",
            },
            "offset": {"type": "integer", "minimum": 0, "default": 0},
        },
        ["ref"],
    ),
)


def builtin_tools(limits: SandboxLimits | None = None) -> list[BuiltinTool]:
    """Every built-in code tool (the sandbox's described with `limits`, default ones)."""
    return [
        CALCULATOR_TOOL,
        GET_TIME_TOOL,
        HTTP_FETCH_TOOL,
        *sandbox_tools(limits or SandboxLimits()),
        *BLACKBOARD_TOOLS,
        READ_OUTPUT_TOOL,
    ]
