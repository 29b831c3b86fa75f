"""The one list of tool names Colony reserves, with the schemas of the tools it answers itself.

Two kinds of tool are Colony's own, and a tenant cannot register a tool by their names
(`core.tools.spec` checks `RESERVED_TOOL_NAMES`):

- code tools, run by a tools worker: `CODE_TOOL_NAMES` (activities/tools/framework.py,
  the sandbox and workspace tools, the swarm blackboard);
- workflow tools, answered by the agent-run workflow without reaching the tools lane:
  `WORKFLOW_TOOLS` (asking the human, searching tools, long-term memory), and the
  families named by a prefix: `agent:<name>` (another agent, as a child run) and
  `recipe:<name>` (a saved swarm plan, as a child swarm; `WORKFLOW_TOOL_PREFIXES`).

A new code tool adds its name here; a new workflow tool adds its name and schema here
and its handler to `HANDLERS` in `workflows/_agent_tools.py`
(`tests/unit/test_tool_names.py` checks that the lists and the code agree).
"""

from typing import Any, Final

from core.payloads import FREE_TEXT, ToolSchema

CALCULATOR: Final = "calculator"
GET_TIME: Final = "get_time"
HTTP_FETCH: Final = "http_fetch"
RUN_PYTHON: Final = "run_python"
RUN_SHELL: Final = "run_shell"
READ_FILE: Final = "read_file"
WRITE_FILE: Final = "write_file"
LIST_FILES: Final = "list_files"
POST_TO_BLACKBOARD: Final = "post_to_blackboard"
READ_BLACKBOARD: Final = "read_blackboard"
BLACKBOARD_TOOL_NAMES: Final = (POST_TO_BLACKBOARD, READ_BLACKBOARD)
READ_OUTPUT: Final = "read_output"

ASK_HUMAN: Final = "ask_human"
FIND_TOOLS: Final = "find_tools"
REMEMBER: Final = "remember"
RECALL: Final = "recall"

CODE_TOOL_NAMES: Final = frozenset(
    {
        CALCULATOR, GET_TIME, HTTP_FETCH, RUN_PYTHON, RUN_SHELL, READ_FILE, WRITE_FILE,
        LIST_FILES, POST_TO_BLACKBOARD, READ_BLACKBOARD, READ_OUTPUT,
    }
)  # fmt: skip
"""Tools a tools worker runs as code."""

LOCAL_TOOL_NAMES: Final = frozenset({CALCULATOR, GET_TIME})
"""Built-in tools that need no isolation: pure Python with bounded work, no I/O, no
secrets. The agent-run workflow runs their calls as local activities on its own worker
(`execute_local_tool`), one workflow task and one server round trip fewer per call than
the tools lane (docs/benchmarks.md, issue #16)."""

WORKSPACE_TOOL_NAMES: Final = frozenset({RUN_PYTHON, RUN_SHELL, READ_FILE, WRITE_FILE, LIST_FILES})
"""Built-in tools that work on the run's workspace (registered `code` tools do too): their
calls go to the tools host that holds it (workflows/_workspace.py)."""

_ASK_HUMAN: Final = ToolSchema(
    name=ASK_HUMAN,
    description=(
        "Ask the human who runs you a question and wait for the answer. Use it when you "
        "need a decision or information only they have; the run pauses until they answer "
        "(or a timeout passes, which you are told)."
    ),
    parameters={
        "type": "object",
        # Written by the model, not copied from the request (activities/providers/call_grounding.py).
        "properties": {
            "question": {"type": "string", "minLength": 1, "maxLength": 4000, FREE_TEXT: True}
        },
        "required": ["question"],
        "additionalProperties": False,
    },
)
_FIND_TOOLS: Final = ToolSchema(
    name=FIND_TOOLS,
    description=(
        "Search the tools you may use by what you need to do, e.g. 'convert time zones'. "
        "Matching tools are added to your tools for the rest of this run."
    ),
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 500},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
)

_REMEMBER: Final = ToolSchema(
    name=REMEMBER,
    description=(
        "Store a fact in your long-term memory, to recall in later runs (e.g. a user's "
        "preference, a result worth keeping). Secrets and personal data are masked."
    ),
    parameters={
        "type": "object",
        "properties": {
            "content": {"type": "string", "minLength": 1, "maxLength": 4000},
            "shared": {
                "type": "boolean",
                "default": False,
                "description": "true: the tenant's other agents may recall it too",
            },
        },
        "required": ["content"],
        "additionalProperties": False,
    },
)
_RECALL: Final = ToolSchema(
    name=RECALL,
    description="Search your long-term memory (facts, earlier runs, lessons) by meaning.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 1000},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
)
WORKFLOW_TOOLS: Final[dict[str, ToolSchema]] = {
    t.name: t for t in (_ASK_HUMAN, _FIND_TOOLS, _REMEMBER, _RECALL)
}
"""Tools the workflow answers itself; they never reach the tools lane."""

AGENT_TOOL_PREFIX: Final = "agent:"
RECIPE_TOOL_PREFIX: Final = "recipe:"
WORKFLOW_TOOL_PREFIXES: Final = (AGENT_TOOL_PREFIX, RECIPE_TOOL_PREFIX)
"""Tool families the workflow answers, one tool per agent or recipe of the tenant."""

RECIPE_TOOL_PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "objective": {
            "type": "string",
            "minLength": 1,
            "maxLength": 20_000,
            "description": "The objective the recipe's team of agents should work on, with "
            "everything they need to know.",
            FREE_TEXT: True,
        }
    },
    "required": ["objective"],
    "additionalProperties": False,
}
"""What a `recipe:<name>` tool takes."""

RESERVED_TOOL_NAMES: Final = CODE_TOOL_NAMES | frozenset(WORKFLOW_TOOLS)
"""Names no registered tool may take."""
