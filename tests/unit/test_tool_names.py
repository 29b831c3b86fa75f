"""The one list of reserved tool names agrees with the code that serves them."""

import inspect
from typing import cast

from activities.tools import catalog
from activities.tools.blackboard import blackboard_tools
from activities.tools.outputs import output_tools
from core.db import Pool
from core.tools.builtins import builtin_tools
from core.tools.names import CODE_TOOL_NAMES, RESERVED_TOOL_NAMES, WORKFLOW_TOOLS
from tests.conftest import make_settings
from workflows import agent_run


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
    source = inspect.getsource(agent_run)
    for name in WORKFLOW_TOOLS:
        constant = name.upper()
        assert getattr(agent_run, constant) == name, f"agent_run does not know {name}"
        assert source.count(constant) >= 2, f"agent_run does not handle {name}"
    assert all(catalog.answered_by_workflow(name) for name in WORKFLOW_TOOLS)


def test_reserved_names_are_both_kinds() -> None:
    assert RESERVED_TOOL_NAMES == CODE_TOOL_NAMES | set(WORKFLOW_TOOLS)
    assert {"post_to_blackboard", "read_blackboard", "ask_human"} <= RESERVED_TOOL_NAMES
