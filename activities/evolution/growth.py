"""Generated code tools meet their tests, in the sandbox, on the tools lane.

`propose_candidates` (llm lane) stores the code tools a model wrote for a missing
capability (`core.evolution.growth`); `test_generated_tools` runs each one's tests the way
a registered code tool runs (`activities.tools.catalog.code_tool_definition`: the
worker's `run_python` sandbox, no network, only the sandbox's own environment, so no
secret), in a workspace of its own that is deleted afterwards. A tool that passes every
test becomes a candidate version with the tool registered as a draft attached to it; a
tool that fails one is never registered and its candidate is recorded as rejected with
the tests' results. The sandbox lives on tools workers, hence this lane (the llm lane's
workers need not have bubblewrap).

Idempotent: a tool whose tests have run keeps its outcome, so a retry runs only the tools
still pending, and the output is read back from what is stored.
"""

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from temporalio import activity

from activities.evolution.models import asks_for_approval
from activities.tools import workspace as ws
from activities.tools.catalog import code_tool_definition
from activities.tools.framework import StaticToolRegistry, ToolContext, ToolError, run_tool
from core.db import Pool
from core.errors import Conflict
from core.evolution import growth
from core.evolution import store as evolutions
from core.evolution.checks import run_checks
from core.evolution.growth import GeneratedTool, GrowthRecord
from core.evolution.payloads import ProposeInput, ProposeOutput
from core.payloads import RunEvent, ToolCallRequest
from core.runs import agents
from core.settings import Settings
from core.tools import store as tool_store
from core.tools.policy import ToolPolicyDefaults

MAX_DETAIL_CHARS: Final = 500
"""Of a failed test's output, kept in its result."""
_STDOUT: Final = "--- stdout ---\n"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")


class GrowthActivities:
    """Tests of the code tools an evolution cycle wrote (the tools lane)."""

    def __init__(self, settings: Settings, pool: Pool, builtins: StaticToolRegistry) -> None:
        self._settings = settings
        self._pool = pool
        self._builtins = builtins  # run_python: the sandbox registered code tools run in

    @activity.defn(name="test_generated_tools")
    async def test_generated_tools(self, input: ProposeInput) -> ProposeOutput:
        """Run the pending generated tools' tests; register the passing ones as drafts.

        Returns the candidate versions of the tools that passed (and how many were
        rejected); `needs_approval` holds those whose tool asked for the network.
        """
        async with self._pool.connection() as conn:
            record = await evolutions.get_evolution(conn, input.tenant_id, input.evolution_id)
            pending = [t for t in await growth.list_tools(conn, record.id) if t.status == "pending"]
        for item in pending:
            results = await self._run_tests(record.tenant_id, record.id, item)
            failed = [r for r in results if not r["passed"]]
            async with self._pool.connection() as conn, conn.transaction():
                if failed:
                    await self._reject(
                        conn, record, item, results, _failure_reason(failed, results)
                    )
                else:
                    await self._register(conn, record, item, results)
        async with self._pool.connection() as conn:
            done = await growth.list_tools(conn, record.id)
        kept = [t for t in done if t.status == "registered" and t.version is not None]
        return ProposeOutput(
            versions=[t.version for t in kept if t.version is not None],
            rejected=sum(t.status == "rejected" for t in done),
            needs_approval=[
                t.version for t in kept if t.version is not None and asks_for_approval(t.rationale)
            ],
        )

    async def _run_tests(
        self, tenant_id: str, evolution_id: str, item: GrowthRecord
    ) -> list[dict[str, Any]]:
        """Each test's outcome: passed, and why not (the checks that failed, or the error)."""
        tool = item.tool
        stored = tool_store.StoredTool(
            name=tool.name, version=1, kind="code", description=tool.description,
            input_schema=tool.input_schema, config=tool.tool_spec().config,
            timeout_s=growth.TOOL_TIMEOUT_S, side_effects=False, policy=ToolPolicyDefaults(),
            enabled=True, created_at=datetime.now(UTC),
        )  # fmt: skip
        registry = StaticToolRegistry([code_tool_definition(self._builtins, stored)])
        # A workspace of its own: no run's id starts with "growth-".
        ctx = ToolContext(
            tenant_id=tenant_id, run_id=_UNSAFE.sub("-", f"growth-{evolution_id}-{item.slot}")[:120],
            step=0,
            now=datetime.now(UTC),
        )  # fmt: skip
        results: list[dict[str, Any]] = []
        try:
            for index, test in enumerate(tool.tests):
                activity.heartbeat(index)
                call = ToolCallRequest(
                    id=f"test-{index}", name=tool.name, arguments=json.dumps(test.arguments)
                )
                try:
                    output = _stdout(await run_tool(registry, call, ctx))
                except ToolError as exc:
                    results.append(_result(index, test.arguments, False, f"error: {exc}"))
                    continue
                checked = run_checks(test.checks, output)
                detail = "; ".join(checked.failures) or "all checks pass"
                if not checked.passed:
                    detail += f" (output: {output[:MAX_DETAIL_CHARS]!r})"
                results.append(_result(index, test.arguments, checked.passed, detail))
        finally:
            await asyncio.to_thread(ws.remove_workspace, self._settings, ctx.tenant_id, ctx.run_id)
        return results

    async def _register(
        self,
        conn: evolutions.Conn,
        record: evolutions.EvolutionRecord,
        item: GrowthRecord,
        results: list[dict[str, Any]],
    ) -> None:
        """The candidate version with the tool, and the tool as a draft attached to it."""
        tool = item.tool
        # Like every candidate: the incumbent with its parent's instructions and tools.
        incumbent = await agents.get_version(
            conn, record.tenant_id, record.agent_name, record.incumbent_version
        )
        parent = await agents.get_version(
            conn, record.tenant_id, record.agent_name, item.parent_version
        )
        spec = incumbent.spec.model_copy(
            update={
                "instructions": parent.spec.instructions,
                "tools": [*parent.spec.tools, tool.name],
            }
        )
        try:
            async with conn.transaction():
                version = await agents.add_candidate(
                    conn, record.tenant_id, record.agent_name, spec, parent=item.parent_version,
                    evolution_id=record.id, rationale=item.rationale,
                )  # fmt: skip
                await tool_store.register_draft_tool(
                    conn, record.tenant_id, tool.name, tool.tool_spec(),
                    agent_name=record.agent_name, agent_version=version.version,
                    evolution_id=record.id,
                )  # fmt: skip
        except Conflict as exc:  # the name was taken since the proposal
            await self._reject(conn, record, item, results, f"the tool cannot be registered: {exc}")
            return
        await evolutions.add_candidate(
            conn, record.tenant_id, record.id, version=version.version, kind="code_tool",
            rationale=item.rationale, diff=_diff(tool),
        )  # fmt: skip
        await growth.settle_tool(
            conn, record.id, item.slot, status="registered", results=results,
            version=version.version,
        )  # fmt: skip
        await evolutions.append_events(
            conn, record.tenant_id, record.id,
            [RunEvent(key=f"proposed-{item.slot}", type="candidate.proposed",
                      data={"version": version.version, "kind": "code_tool",
                            "rationale": item.rationale, "tool": tool.name,
                            "tests": results})],
        )  # fmt: skip

    async def _reject(
        self,
        conn: evolutions.Conn,
        record: evolutions.EvolutionRecord,
        item: GrowthRecord,
        results: list[dict[str, Any]],
        reason: str,
    ) -> None:
        await evolutions.add_candidate(
            conn, record.tenant_id, record.id, version=-(item.slot + 1), kind="code_tool",
            rationale=item.rationale, diff=_diff(item.tool), rejected=reason,
        )  # fmt: skip
        await growth.settle_tool(
            conn, record.id, item.slot, status="rejected", results=results, reason=reason
        )
        await evolutions.append_events(
            conn, record.tenant_id, record.id,
            [RunEvent(key=f"rejected-{item.slot}", type="candidate.rejected",
                      data={"kind": "code_tool", "reason": reason, "tool": item.tool.name,
                            "tests": results})],
        )  # fmt: skip


def _result(index: int, arguments: dict[str, Any], passed: bool, detail: str) -> dict[str, Any]:
    return {"test": index, "arguments": arguments, "passed": passed, "detail": detail[:1000]}


def _failure_reason(failed: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    first = failed[0]
    return (
        f"the generated tool failed {len(failed)} of its {len(results)} test(s); "
        f"test {first['test']}: {first['detail']}"
    )[:1000]


def _stdout(rendered: str) -> str:
    """What a sandboxed call printed to stdout, from its rendering for the model."""
    if _STDOUT not in rendered:
        return ""
    out = rendered.split(_STDOUT, 1)[1]
    for end in ("\n--- stderr ---", "\n[stdout truncated"):
        out = out.split(end, 1)[0]
    return out


def _diff(tool: GeneratedTool) -> str:
    return f"tools:\n+ {tool.name} (new code tool, draft)\n\n{tool.description}\n\n{tool.source}"
