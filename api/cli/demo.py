"""The main job end to end: a stack check, an agent run and a swarm, each judged by its answer.

`colony demo` (workers/cli.py) runs it after starting the stack when none answers.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from rich.table import Table

from api.cli.output import console, errors
from api.cli.runs import SMALL_MODEL_NOTE, render_events
from api.cli.swarms import render_swarm_events
from api.client import ColonyClient, EventStream
from core.providers import LOCAL_MODEL, default_model
from core.settings import Settings


@dataclass(frozen=True)
class DemoPart:
    """How one part of the demo went: its name, whether it did its job, and why not."""

    name: str
    ok: bool
    detail: str


def main_job(settings: Settings) -> bool:
    """The demo: a stack check across every lane, a real agent run, then a swarm.

    Every part runs, and each must not only finish but give the expected answer; the
    summary names each failed part and why.
    """
    parts: list[DemoPart] = []
    for name, part in (
        ("stack check", _run_stack_check),
        ("agent run", _run_demo_agent),
        ("swarm", _run_demo_swarm),
    ):
        try:
            parts.append(part(settings))
        except Exception as exc:  # any failure of a part is reported, then the next runs
            parts.append(DemoPart(name, False, f"{type(exc).__name__}: {exc}"))
    table = Table(title="Demo summary", title_justify="left")
    for column in ("part", "ok", "detail"):
        table.add_column(column, overflow="fold")
    for p in parts:
        table.add_row(p.name, "yes" if p.ok else "[red]NO[/]", escape(p.detail))
    console.print()
    console.print(table)
    return all(p.ok for p in parts)


def _run_stack_check(settings: Settings) -> DemoPart:
    with ColonyClient(settings, timeout=90) as api_client:
        check = api_client.post("/v1/stack-checks", params={"wait": 60})
    table = Table(title=f"Stack check {check['id']}: {check['status']}", title_justify="left")
    for column in ("lane", "ok", "detail", "worker", "ms"):
        table.add_column(column, overflow="fold")
    for lane in check["lanes"]:
        table.add_row(
            lane["lane"],
            "yes" if lane["ok"] else "[red]no[/]",
            lane["detail"],
            lane["worker"],
            f"{lane['duration_ms']:.1f}",
        )
    console.print(table)
    if check.get("temporal_ui"):
        console.print(f"Temporal UI: {check['temporal_ui']}")
    failed = [lane["lane"] for lane in check["lanes"] if not lane["ok"]]
    if check["status"] != "succeeded" or failed:
        return DemoPart(
            "stack check", False, f"{check['status']}; lanes not ok: {', '.join(failed) or '-'}"
        )
    return DemoPart("stack check", True, f"{len(check['lanes'])} lanes ok")


DEMO_AGENT = {
    "name": "colony-demo",
    "instructions": (
        "You are a precise assistant. For arithmetic, call the calculator tool with the "
        "expression, then answer with the result in one short sentence."
    ),
    "tools": ["calculator", "get_time"],
    "temperature": 0,
    "max_output_tokens": 256,
    "limits": {"max_steps": 4},
}
DEMO_OBJECTIVE = "What is 17 * 23? Use the calculator tool."
DEMO_AGENT_EXPECTS = ("391",)


def _run_demo_agent(settings: Settings) -> DemoPart:
    """A real agent run with the default model; ok when it succeeded with 17 * 23 = 391."""
    model = default_model(settings)
    with ColonyClient(settings, timeout=60) as api_client:
        agent = api_client.post("/v1/agents", json={**DEMO_AGENT, "model": model})
        console.print(
            f"\nAgent run: {agent['name']} v{agent['version']} ({model}) · {DEMO_OBJECTIVE}",
            highlight=False,
        )
        if model == LOCAL_MODEL:
            errors.print(f"[yellow]{SMALL_MODEL_NOTE}[/]", highlight=False)
        run = api_client.post(
            "/v1/runs", json={"agent": agent["name"], "objective": DEMO_OBJECTIVE}
        )
        render_events(EventStream.of_run(api_client, run["id"]), run["id"])
        if run.get("temporal_ui"):
            console.print(f"Temporal UI: {run['temporal_ui']}", highlight=False)
        finished = api_client.get(f"/v1/runs/{run['id']}")
    return _judge("agent run", finished, DEMO_AGENT_EXPECTS)


DEMO_SWARM = {
    "objective": "Work out 17 * 23 and 2 ** 10, then report both results in one sentence.",
    "mode": "parallel",
    "plan": [
        {
            "id": "product",
            "role": "analyst",
            "description": "Compute 17 * 23 with the calculator tool.",
            "expected_output": "the number",
            "complexity": "low",
        },
        {
            "id": "power",
            "role": "analyst",
            "description": "Compute 2 ** 10 with the calculator tool.",
            "expected_output": "the number",
            "complexity": "low",
        },
    ],
    "limits": {"max_parallel": 2, "max_retries": 0},
}
DEMO_SWARM_EXPECTS = ("391", "1024")


def _run_demo_swarm(settings: Settings) -> DemoPart:
    """A swarm of two parallel subtasks; ok when its answer holds 391 and 1024."""
    with ColonyClient(settings, timeout=60) as api_client:
        swarm = api_client.post("/v1/swarms", json=DEMO_SWARM)
        console.print(
            f"\nSwarm: {swarm['id']} · {DEMO_SWARM['objective']}", highlight=False, soft_wrap=True
        )
        render_swarm_events(EventStream.of_swarm(api_client, swarm["id"]))
        if swarm.get("temporal_ui"):
            console.print(f"Temporal UI: {swarm['temporal_ui']}", highlight=False, soft_wrap=True)
        finished = api_client.get(f"/v1/swarms/{swarm['id']}")
    return _judge("swarm", finished, DEMO_SWARM_EXPECTS)


def _judge(part: str, finished: dict[str, Any], expects: Sequence[str]) -> DemoPart:
    """A finished run or swarm against the numbers its answer must contain."""
    if finished.get("outcome") != "succeeded":
        reason = finished.get("reason") or "no reason recorded"
        return DemoPart(part, False, f"{finished.get('outcome') or finished['status']}: {reason}")
    result = finished.get("result") or ""
    numbers = set(re.findall(r"\d+", result.replace(",", "")))
    missing = [n for n in expects if n not in numbers]
    if missing:
        return DemoPart(
            part, False, f"wrong answer: {', '.join(missing)} missing from {result[:300]!r}"
        )
    return DemoPart(part, True, f"answered {', '.join(expects)}")
