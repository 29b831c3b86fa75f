"""`colony swarm` and `colony swarms`: the CLI side of swarms."""

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from api.cli.output import api_client, console, fail_api, preview
from api.client import EventStream
from core.errors import ColonyError


def _read_plan(ctx: click.Context, param: click.Parameter, path: Path | None) -> list[Any] | None:
    """The subtasks of a plan file: a JSON list, or an object {"subtasks": [...]}."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not valid JSON: {exc}") from None
    subtasks = data.get("subtasks") if isinstance(data, dict) else data
    if not isinstance(subtasks, list) or not subtasks:
        raise click.BadParameter(
            f'{path} must hold a non-empty list of subtasks, or {{"subtasks": [...]}}'
        )
    return subtasks


@click.command("swarm")
@click.argument("objective")
@click.option(
    "--mode",
    type=click.Choice(["sequential", "parallel", "hierarchical"]),
    default="hierarchical",
    show_default=True,
    help="sequential: a pipeline; parallel: independent subtasks; hierarchical: a DAG.",
)
@click.option(
    "--plan",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_read_plan,
    help='Your own plan: a JSON file with a list of subtasks or {"subtasks": [...]} '
    "(id, description, role, depends_on, expected_output, complexity).",
)
@click.option(
    "--recipe",
    default=None,
    help="Run this recipe's saved plan (its mode, limits and models unless given).",
)
@click.option("--queen", default=None, help="The agent that plans and synthesizes.")
@click.option("--max-parallel", type=click.IntRange(1, 64), default=None, help="default 4")
@click.option("--max-subtasks", type=click.IntRange(1, 100), default=None, help="default 10")
@click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Budget of the whole swarm in USD.")  # fmt: skip
@click.option(
    "--failure-policy",
    type=click.Choice(["retry", "replan", "fail"]),
    default=None,
    help="After a subtask's retries (default: replan in hierarchical mode, else retry).",
)
@click.option(
    "--follow/--no-follow", "-f", default=True, show_default=True, help="Stream the swarm's events."
)
def swarm_command(
    objective: str,
    mode: str,
    plan: list[Any] | None,
    recipe: str | None,
    queen: str | None,
    max_parallel: int | None,
    max_subtasks: int | None,
    max_cost: float | None,
    failure_policy: str | None,
    follow: bool,
) -> None:
    """Start a swarm on OBJECTIVE: a queen plans subtasks, role agents run them."""
    limits = {
        "max_parallel": max_parallel,
        "max_subtasks": max_subtasks,
        "max_cost_usd": max_cost,
        "failure_policy": failure_policy,
    }
    body: dict[str, Any] = {"objective": objective}
    if recipe is not None:
        if plan is not None:
            raise click.UsageError("--recipe brings its own plan; leave out --plan")
        body["recipe"] = recipe  # and its mode
    else:
        body["mode"] = mode
    if any(v is not None for v in limits.values()):
        body["limits"] = {k: v for k, v in limits.items() if v is not None}
    if plan is not None:
        body["plan"] = plan
    if queen:
        body["queen"] = queen
    try:
        with api_client() as api:
            swarm = api.post("/v1/swarms", json=body)
            console.print(
                f"swarm [bold]{swarm['id']}[/] · {swarm['mode']} · queen {swarm['queen']} "
                f"v{swarm['queen_version']}",
                highlight=False,
            )
            if swarm.get("temporal_ui"):
                console.print(
                    f"Temporal UI: {swarm['temporal_ui']}", highlight=False, soft_wrap=True
                )
            if not follow:
                return
            finished = render_swarm_events(EventStream.of_swarm(api, swarm["id"]))
    except ColonyError as exc:
        fail_api(exc)
    if finished is None or finished["outcome"] != "succeeded":
        sys.exit(1)


def render_swarm_events(events: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Print a swarm's events as they come; returns the `swarm.finished` event's data."""
    subtasks: dict[str, str] = {}  # id -> status, as the events tell it
    for event in events:
        kind, data = event["type"], event["data"]
        if kind == "swarm.started":
            source = "your plan" if data.get("user_plan") else f"queen {escape(data['queen'])}"
            if data.get("recipe"):
                source = f"recipe {escape(data['recipe'])}"
            console.print(f"[dim]▶ started · {data['mode']} · {source}[/]", highlight=False)
        elif kind in ("swarm.planned", "swarm.replanned"):
            planned = data["subtasks"]
            kept = {k: v for k, v in subtasks.items() if v == "succeeded"}
            subtasks = kept | {s["id"]: "pending" for s in planned}
            console.print(_plan_table(kind, data))
        elif kind == "plan.invalid":
            console.print(
                f"[yellow]! plan {data['plan_version']} attempt {data['attempt']} is invalid:[/]",
                highlight=False,
            )
            for error in data["errors"]:
                console.print(f"  - {error}", style="yellow", markup=False, highlight=False)
        elif kind == "subtask.started":
            subtasks[data["subtask_id"]] = "running"
            attempt = f" · attempt {data['attempt']}" if data["attempt"] > 1 else ""
            console.print(
                f"[cyan]▶ {data['subtask_id']}[/] · {escape(data['agent'])} · "
                f"{escape(data['model'])} · {data['run_id']}{attempt}",
                highlight=False,
            )
            _progress(subtasks)
        elif kind == "subtask.finished":
            subtasks[data["subtask_id"]] = "succeeded"
            console.print(
                f"[green]✔ {data['subtask_id']}[/] · {_cost(data)} · "
                f"{escape(preview(data.get('result')))}",
                highlight=False,
            )
            _progress(subtasks)
        elif kind == "subtask.failed":
            subtasks[data["subtask_id"]] = "failed"
            console.print(
                f"[red]✘ {data['subtask_id']}[/] · {escape(data.get('reason') or data['outcome'])}",
                highlight=False,
            )
            _progress(subtasks)
        elif kind == "blackboard.posted":
            topic = f" ({data['topic']})" if data.get("topic") else ""
            console.print(
                f"  ✎ {data.get('subtask_id') or '?'}{topic}: {preview(data['content'])}",
                style="dim",
                markup=False,
                highlight=False,
            )
        elif kind == "swarm.synthesized":
            cited = ", ".join(data["attribution"]) or "none"
            console.print(f"[dim]✦ synthesized · cites {cited}[/]", highlight=False)
        elif kind == "swarm.finished":
            _print_finished(data)
            return dict(data)
    return None


def _plan_table(kind: str, data: dict[str, Any]) -> Table:
    title = f"plan v{data['plan_version']}"
    if kind == "swarm.replanned":
        title += f" (re-planned after {', '.join(data.get('failures', [])) or 'a failure'})"
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("role", "depends on", "complexity", "description"):
        table.add_column(column, overflow="fold")
    for s in data["subtasks"]:
        table.add_row(
            s["id"], escape(s["role"]), ", ".join(s["depends_on"]) or "-", s["complexity"],
            escape(preview(s["description"])),
        )  # fmt: skip
    return table


def _progress(subtasks: dict[str, str]) -> None:
    counts = {name: sum(1 for v in subtasks.values() if v == name)
              for name in ("succeeded", "running", "failed")}  # fmt: skip
    line = f"[{counts['succeeded']}/{len(subtasks)} done · {counts['running']} running"
    if counts["failed"]:
        line += f" · {counts['failed']} failed"
    console.print(line + "]", style="dim", markup=False, highlight=False)


def _cost(data: dict[str, Any]) -> str:
    cost = f"${data['cost_usd']:.6f}"
    return cost if data.get("cost_complete", True) else cost + " (some prices unknown)"


def _print_finished(data: dict[str, Any]) -> None:
    statuses = data.get("subtasks", {})
    done = sum(1 for v in statuses.values() if v == "succeeded")
    summary = f"{done}/{len(statuses)} subtasks · {_cost(data)}"
    if data["outcome"] == "succeeded":
        console.print(f"[bold green]✔ succeeded[/] · {summary}", highlight=False)
    else:
        reason = f": {escape(data['reason'])}" if data.get("reason") else ""
        console.print(f"[bold red]✘ {data['outcome']}{reason}[/] · {summary}", highlight=False)
    if data.get("result"):
        console.print(data["result"], markup=False, highlight=False)
    if data.get("attribution"):
        console.print(f"[dim]sources: {', '.join(data['attribution'])}[/]", highlight=False)


@click.group("swarms")
def swarms_group() -> None:
    """List, show and cancel swarms."""


@swarms_group.command("list")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
def swarms_list(limit: int) -> None:
    """The tenant's most recent swarms."""
    try:
        with api_client() as api:
            swarms = api.get("/v1/swarms", params={"limit": limit})
    except ColonyError as exc:
        fail_api(exc)
    table = Table(title="swarms", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("status", "mode", "subtasks", "cost", "created", "objective"):
        table.add_column(column, overflow="fold")
    for s in swarms:
        done = sum(1 for t in s["subtasks"] if t["status"] == "succeeded")
        active = sum(1 for t in s["subtasks"] if t["status"] != "dropped")
        table.add_row(
            s["id"], s["status"], s["mode"], f"{done}/{active}", f"${s['cost_usd']:.6f}",
            s["created_at"][:19].replace("T", " "), escape(preview(s["objective"], 60)),
        )  # fmt: skip
    console.print(table)


@swarms_group.command("show")
@click.argument("swarm_id")
def swarms_show(swarm_id: str) -> None:
    """A swarm: its subtasks, their runs and the result."""
    try:
        with api_client() as api:
            s = api.get(f"/v1/swarms/{swarm_id}")
    except ColonyError as exc:
        fail_api(exc)
    outcome = f" ({s['outcome']})" if s["outcome"] and s["outcome"] != s["status"] else ""
    console.print(
        f"swarm [bold]{s['id']}[/] · {s['status']}{outcome} · {s['mode']} · queen "
        f"{escape(s['queen'])} v{s['queen_version']} · {_cost(s)}",
        highlight=False,
    )
    console.print(f"objective: {preview(s['objective'], 500)}", markup=False, highlight=False)
    if s.get("reason"):
        console.print(f"reason: {s['reason']}", markup=False, highlight=False)
    if s.get("temporal_ui"):
        console.print(f"Temporal UI: {s['temporal_ui']}", highlight=False, soft_wrap=True)
    table = Table(title=f"subtasks (plan v{s['plan_version']})", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("role", "depends on", "status", "attempts", "agent", "model", "cost", "run"):
        table.add_column(column, overflow="fold")
    for t in s["subtasks"]:
        agent = f"{t['agent']} v{t['agent_version']}" if t["agent"] else "-"
        table.add_row(
            t["id"], escape(t["role"]), ", ".join(t["depends_on"]) or "-", t["status"],
            str(t["attempts"]), escape(agent), escape(t["model"] or "-"), f"${t['cost_usd']:.6f}",
            t["run_id"] or "-",
        )  # fmt: skip
    console.print(table)
    if s.get("result"):
        console.print(s["result"], markup=False, highlight=False)
    if s.get("attribution"):
        console.print(f"[dim]sources: {', '.join(s['attribution'])}[/]", highlight=False)


@swarms_group.command("cancel")
@click.argument("swarm_id")
def swarms_cancel(swarm_id: str) -> None:
    """Cancel a swarm and its running subtasks."""
    try:
        with api_client() as api:
            api.post(f"/v1/swarms/{swarm_id}/cancel")
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"cancellation requested for {swarm_id}", highlight=False)
