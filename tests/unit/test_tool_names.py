"""The one list of reserved tool names agrees with the code that serves them."""

import inspect
from typing import cast

from activities.runs.outputs import output_tools
from activities.swarms.blackboard import blackboard_tools
from activities.tools import catalog
from core.db import Pool
from core.tools.builtins import builtin_tools
from core.tools.names import (
    AGENT_TOOL_PREFIX,
    ASK_HUMAN,
    CODE_TOOL_NAMES,
    RESERVED_TOOL_NAMES,
    WORKFLOW_TOOL_PREFIXES,
    WORKFLOW_TOOLS,
)
from tests.conftest import make_settings
from workflows import _agent_tools, agent_run


def test_every_code_tool_a_worker_runs_is_listed() -> None:
    registry = catalog.builtin_registry(
        make_settings(),
        extra=[*blackboard_tools(cast(Pool, None)), *output_tools(cast(Pool, None))],
    )
    assert set(registry.names) == CODE_TOOL_NAMES
    # ... and each is described in core, as the API lists it.
    described = {tool.name: tool for tool in builtin_tools()}
    assert set(described) == CODE_TOOL_NAMES
    for name in registry.names:
        definition = registry.get(name)
        assert definition is not None
        assert definition.description == described[name].description
        assert definition.parameters == described[name].parameters


def test_every_workflow_tool_is_answered_by_the_workflow() -> None:
    # ask_human goes to the human; every other workflow tool has a handler.
    assert set(_agent_tools.HANDLERS) | {ASK_HUMAN} == set(WORKFLOW_TOOLS)
    assert "self._desk.ask(" in inspect.getsource(agent_run.AgentRunWorkflow)
    assert all(catalog.answered_by_workflow(name) for name in WORKFLOW_TOOLS)


def test_every_workflow_tool_family_is_answered_by_the_workflow() -> None:
    # agent:<name> is the workflow's own child run; every other family has a handler.
    assert set(_agent_tools.PREFIX_HANDLERS) | {AGENT_TOOL_PREFIX} == set(WORKFLOW_TOOL_PREFIXES)
    for prefix in WORKFLOW_TOOL_PREFIXES:
        assert catalog.answered_by_workflow(prefix + "some-name")
    assert _agent_tools.handler_for("recipe:report") is _agent_tools.run_recipe
    assert _agent_tools.handler_for("recall") is _agent_tools.recall
    assert _agent_tools.handler_for("agent:x") is None and _agent_tools.handler_for("x") is None
    assert catalog.recipe_model_name("report") == "recipe__report"
    assert len(catalog.recipe_model_name("a.b" * 40)) <= 64


def test_reserved_names_are_both_kinds() -> None:
    assert RESERVED_TOOL_NAMES == CODE_TOOL_NAMES | set(WORKFLOW_TOOLS)
    assert {"post_to_blackboard", "read_blackboard", "ask_human"} <= RESERVED_TOOL_NAMES
