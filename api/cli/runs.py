"""`colony run`, `colony agents`, `colony approve`, `colony cancel`: the CLI side of runs."""

import json
import sys
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from api.cli.output import api_client, console, errors, fail, fail_api, preview
from api.cli.rollouts import history_table
from api.client import EventStream
from core.errors import ColonyError
from core.providers import LOCAL_MODEL

SMALL_MODEL_NOTE = (
    "note: this agent uses the local SmolLM2-135M model. It is tiny and often wrong; set "
    "ANTHROPIC_API_KEY or OPENAI_API_KEY (or COLONY_DEFAULT_MODEL) before `colony up` for real work."
)


@click.command("run")
@click.argument("objective")
@click.option("--agent", default=None, help="Agent name (default: the `assistant` agent).")
@click.option(
    "--follow/--no-follow", "-f", default=True, show_default=True, help="Stream the run's events."
)
@click.option("--conversation", is_flag=True, help="Keep the run open for more messages.")
def run_command(objective: str, agent: str | None, follow: bool, conversation: bool) -> None:
    """Start an agent run on OBJECTIVE and stream its events."""
    body: dict[str, Any] = {"objective": objective, "conversation": conversation}
    if agent:
        body["agent"] = agent
    try:
        with api_client() as api:
            run = api.post("/v1/runs", json=body)
            console.print(
                f"run [bold]{run['id']}[/] · agent {run['agent']} v{run['agent_version']}",
                highlight=False,
            )
            if run.get("temporal_ui"):
                console.print(f"Temporal UI: {run['temporal_ui']}", highlight=False)
            agent_spec = api.get(f"/v1/agents/{run['agent']}")
            if agent_spec["model"] == LOCAL_MODEL:
                errors.print(f"[yellow]{SMALL_MODEL_NOTE}[/]", highlight=False)
            if not follow:
                return
            outcome = render_events(EventStream.of_run(api, run["id"]), run["id"])
    except ColonyError as exc:
        fail_api(exc)
    if outcome != "succeeded":
        sys.exit(1)


def render_events(events: EventStream, run_id: str) -> str | None:
    """Print events as they come; returns the run's outcome."""
    streaming_step: int | None = None
    for event in events:
        kind, data = event["type"], event["data"]
        if kind == "model.delta":
            if streaming_step != data["step"]:
                console.print(
                    f"[bold cyan]assistant[/] ({data['model']}): ", end="", highlight=False
                )
                streaming_step = data["step"]
            console.print(data["text"], end="", markup=False, highlight=False)
            continue
        if streaming_step is not None:
            console.print()
        if kind == "run.started":
            console.print(f"[dim]▶ started · model {data['model']}[/]", highlight=False)
        elif kind == "message.received":
            console.print(f"[bold]user[/]: {data['content']}", highlight=False)
        elif kind == "model.message":
            if data["content"] and streaming_step != data["step"]:
                console.print(f"[bold cyan]assistant[/]: {data['content']}", highlight=False)
            for call in data["tool_calls"]:
                console.print(
                    f"  [magenta]→ {call['name']}[/]({call['arguments']})", highlight=False
                )
        elif kind == "tool.result":
            style = "green" if data["ok"] else "red"
            console.print(f"  [{style}]← {data['tool']}[/]: {data['result']}", highlight=False)
        elif kind == "model.fallback":
            console.print(
                f"[yellow]! {data['model']} failed ({data['error']}); trying the next model[/]",
                highlight=False,
            )
        elif kind == "approval.requested" and data.get("question") is not None:
            console.print(
                f"[yellow]? the agent asks: {data['question']}\n  answer with "
                f"`colony approve {run_id} {data['call_id']} --answer '...'`[/]",
                highlight=False,
            )
        elif kind == "approval.requested":
            console.print(
                f"[yellow]⏸ {data['tool']} needs approval: `colony approve {run_id} {data['call_id']}` "
                f"(or --deny)[/]",
                highlight=False,
            )
        elif kind == "approval.resolved":
            verdict = "approved" if data["approved"] else f"denied ({data['reason']})"
            console.print(f"[yellow]  {data['call_id']} {verdict}[/]", highlight=False)
        elif kind == "cost":
            cost = "price unknown" if data["cost_usd"] is None else f"${data['cost_usd']:.6f}"
            console.print(
                f"[dim]  step {data['step']} · {data['prompt_tokens']}+{data['completion_tokens']} tokens · "
                f"{cost} · {data['latency_ms']:.0f} ms[/]",
                highlight=False,
            )
        elif kind == "run.finished":
            _print_finished(data)
            return str(data["outcome"])
        streaming_step = None
    return None


def _print_finished(data: dict[str, Any]) -> None:
    cost = f"${data['cost_usd']:.6f}" + ("" if data["cost_complete"] else " (some prices unknown)")
    summary = f"{data['steps']} steps · {data['prompt_tokens'] + data['completion_tokens']} tokens · {cost}"
    if data["outcome"] == "succeeded":
        console.print(f"[bold green]✔ succeeded[/] · {summary}", highlight=False)
        if data.get("result"):
            console.print(data["result"], markup=False, highlight=False)
    else:
        reason = f": {data['reason']}" if data.get("reason") else ""
        console.print(f"[bold red]✘ {data['outcome']}{reason}[/] · {summary}", highlight=False)


@click.command("approve")
@click.argument("run_id")
@click.argument("call_id")
@click.option("--deny", is_flag=True, help="Deny instead of approve.")
@click.option("--reason", default=None)
@click.option("--answer", default=None, help="Answer an ask_human question.")
def approve_command(
    run_id: str, call_id: str, deny: bool, reason: str | None, answer: str | None
) -> None:
    """Approve (or --deny) a tool call that waits for a human, or --answer its question."""
    try:
        with api_client() as api:
            api.post(
                f"/v1/runs/{run_id}/approvals",
                json={"call_id": call_id, "approved": not deny, "reason": reason, "answer": answer},
            )
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"{'denied' if deny else 'answered' if answer else 'approved'} {call_id}")


@click.command("feedback")
@click.argument("run_id")
@click.option("--rating", type=click.IntRange(1, 5), required=True, help="1 (bad) to 5 (great).")
@click.option("--comment", default=None)
@click.option(
    "--expected",
    default=None,
    help="The answer the run should have given; `colony eval-cases from-run` makes a check of it.",
)
def feedback_command(run_id: str, rating: int, comment: str | None, expected: str | None) -> None:
    """Rate a finished run; memory weighs its episode and lesson by it."""
    body = {"rating": rating, "comment": comment, "expected": expected}
    try:
        with api_client() as api:
            api.post(f"/v1/runs/{run_id}/feedback", json=body)
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"rated {run_id}: {rating}/5", highlight=False)


@click.command("cancel")
@click.argument("run_id")
def cancel_command(run_id: str) -> None:
    """Cancel a run."""
    try:
        with api_client() as api:
            api.post(f"/v1/runs/{run_id}/cancel")
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"cancellation requested for {run_id}")


@click.group("agents")
def agents_group() -> None:
    """List, show and create agents."""


@agents_group.command("list")
def agents_list() -> None:
    """The tenant's agents."""
    try:
        with api_client() as api:
            agents = api.get("/v1/agents")
    except ColonyError as exc:
        fail_api(exc)
    table = Table(title="agents", title_justify="left")
    for column in ("name", "version", "model", "tools"):
        table.add_column(column)
    for a in agents:
        table.add_row(a["name"], str(a["version"]), a["model"], ", ".join(a["tools"]))
    console.print(table)


@agents_group.command("show")
@click.argument("name")
@click.option("--version", type=click.IntRange(min=1), default=None, help="Metrics of one version.")
@click.option("--since", default=None, help="Metrics of runs created since this ISO time.")
def agents_show(name: str, version: int | None, since: str | None) -> None:
    """An agent's latest version as JSON, and metrics per version of its live runs."""
    params = {k: v for k, v in (("version", version), ("since", since)) if v is not None}
    try:
        with api_client() as api:
            agent = api.get(f"/v1/agents/{name}")
            found = api.get(f"/v1/agents/{name}/metrics", params=params)
    except ColonyError as exc:
        fail_api(exc)
    console.print_json(json.dumps(agent))
    print_metrics(found)


def print_metrics(found: dict[str, Any]) -> None:
    """Tables of an agent's metrics per version (`GET /v1/agents/{name}/metrics`)."""
    window = f" since {found['since']}" if found.get("since") else ""
    versions = found["versions"]
    if not versions:
        console.print(f"no runs of {escape(found['agent'])}{window}", highlight=False)
        return
    table = Table(title=f"metrics of {escape(found['agent'])}{window}", title_justify="left")
    for column in ("version", "runs", "running", "succeeded", "failed", "limit", "cancelled"):
        table.add_column(column, justify="right", no_wrap=True)
    for column in ("rating", "ratings 1-5", "cost", "cost/run", "latency avg·p50·p95"):
        table.add_column(column, justify="right")
    for column in ("steps/run", "tokens/run"):
        table.add_column(column, justify="right", no_wrap=True)
    for v in versions:
        outcomes = v["outcomes"]
        rating = "-" if v["avg_rating"] is None else f"{v['avg_rating']:.2f} ({v['rated']})"
        unknown = "" if v["cost_complete"] else " +?"  # some prices were unknown
        table.add_row(
            str(v["version"]), str(v["runs"]), str(v["running"]),
            *(_share(outcomes[o]) for o in ("succeeded", "failed", "limit_reached", "cancelled")),
            rating, "/".join(str(v["rating_distribution"][str(n)]) for n in range(1, 6)),
            f"${v['cost_usd_total']:.4f}{unknown}", _number(v["cost_usd_avg"], "${:.4f}"),
            " · ".join(_number(v[f"latency_s_{k}"], "{:.1f}s") for k in ("avg", "p50", "p95")),
            _number(v["steps_avg"], "{:.1f}"), _number(v["tokens_avg"], "{:.0f}"),
        )  # fmt: skip
    if not all(v["cost_complete"] for v in versions):
        table.caption, table.caption_justify = "+?: some model calls had no known price", "left"
    console.print(table)
    tools = Table(title="tool calls", title_justify="left")
    for column in ("version", "tool", "calls", "errors", "denied", "error rate"):
        tools.add_column(column, justify="left" if column == "tool" else "right")
    for v in versions:
        for t in v["tools"]:
            tools.add_row(
                str(v["version"]), escape(t["tool"]), str(t["calls"]), str(t["errors"]),
                str(t["denied"]), _number(t["error_rate"], "{:.0%}"),
            )  # fmt: skip
    if tools.row_count:
        console.print(tools)


def _share(share: dict[str, Any]) -> str:
    return str(share["count"]) + ("" if share["share"] is None else f" ({share['share']:.0%})")


def _number(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


@agents_group.command("history")
@click.argument("name")
def agents_history(name: str) -> None:
    """An agent's versions (where each came from and why), its canaries and rollbacks."""
    try:
        with api_client() as api:
            versions = api.get(f"/v1/agents/{name}/versions")
    except ColonyError as exc:
        fail_api(exc)
    table = Table(title=f"lineage of {escape(name)}", title_justify="left")
    table.add_column("version", justify="right", no_wrap=True)
    for column in ("status", "parent", "cause", "evolution", "created", "rationale"):
        table.add_column(column, overflow="fold")
    for v in versions:
        parent = v.get("parent_version")
        table.add_row(
            str(v["version"]), v.get("status", "released"), "-" if parent is None else str(parent),
            v.get("cause", "manual"), v.get("evolution_id") or "-",
            v["created_at"][:19].replace("T", " "), escape(preview(v.get("rationale"), 80)) or "-",
        )  # fmt: skip
    console.print(table)
    rollouts = {r["id"]: r for v in versions for r in v.get("rollouts", [])}
    if rollouts:
        newest = sorted(rollouts.values(), key=lambda r: r["started_at"], reverse=True)
        console.print(history_table(newest))


@agents_group.command("create")
@click.option("--name", default=None, help="Required unless --file gives it.")
@click.option("--instructions", default=None, help="Required unless --file gives them.")
@click.option(
    "--model",
    default=None,
    help="e.g. anthropic/claude-sonnet-4-5, openai/gpt-4o-mini, local/smollm2-135m",
)
@click.option("--fallback", "fallbacks", multiple=True, help="Fallback model (repeatable).")
@click.option("--tool", "tools", multiple=True, help="Tool name (repeatable).")
@click.option(
    "--file",
    "spec_file",
    type=click.File(),
    default=None,
    help="A JSON agent (e.g. the `spec` of `colony agents bootstrap --json`); '-' reads stdin."
    " Options given override its fields.",
)
def agents_create(
    name: str | None,
    instructions: str | None,
    model: str | None,
    fallbacks: tuple[str, ...],
    tools: tuple[str, ...],
    spec_file: Any,
) -> None:
    """Create an agent (or a new version of it)."""
    body: dict[str, Any] = {}
    if spec_file is not None:
        try:
            body = json.load(spec_file)
        except ValueError as exc:
            fail(f"--file is not JSON: {exc}")
        body = body.get("spec", body) if isinstance(body, dict) else body
        if not isinstance(body, dict):
            fail("--file must hold a JSON object (an agent, or a bootstrap draft)")
    given = {"name": name, "instructions": instructions, "model": model}
    body.update({key: value for key, value in given.items() if value is not None})
    if fallbacks:
        body["fallback_models"] = list(fallbacks)
    if tools:
        body["tools"] = list(tools)
    missing = [f"--{key}" for key in given if key not in body]
    if missing:
        fail(f"missing {', '.join(missing)} (or give them in --file)")
    try:
        with api_client() as api:
            agent = api.post("/v1/agents", json=body)
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"agent {agent['name']} version {agent['version']}")


@agents_group.command("bootstrap")
@click.argument("objective")
@click.option("--name", default=None, help="The agent's name (default: from the objective).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole draft as JSON.")
def agents_bootstrap(objective: str, name: str | None, as_json: bool) -> None:
    """Draft an agent for OBJECTIVE from the tenant's lessons, proven tools and agents.

    Nothing is created: review the draft, then create it with
    `colony agents bootstrap ... --json | colony agents create --file -`.
    """
    body = {"objective": objective, **({"name": name} if name else {})}
    try:
        with api_client() as api:
            draft = api.post("/v1/agents/bootstrap", json=body)
    except ColonyError as exc:
        fail_api(exc)
    if as_json:
        console.print_json(json.dumps(draft))
        return
    evidence = draft["evidence"]
    tools = Table(title="relevant tools", title_justify="left")
    for column in ("tool", "similarity", "calls", "success", "in the draft"):
        tools.add_column(column, justify="left" if column == "tool" else "right")
    for t in evidence["tools"]:
        rate = "-" if t["success_rate"] is None else f"{t['success_rate']:.0%}"
        tools.add_row(escape(t["name"]), f"{t['similarity']:.2f}", str(t["calls"]), rate,
                      "yes" if t["proven"] else "no")  # fmt: skip
    if tools.row_count:
        console.print(tools)
    for kind, title in (("lessons", "lessons"), ("skills", "skills")):
        for m in evidence[kind]:
            console.print(
                f"{title[:-1]} {m['similarity']:.2f} ({escape(m['agent_name'])}, {m['scope']}): "
                + escape(preview(m["content"])),
                highlight=False,
            )
    for a in evidence["similar_agents"]:
        console.print(
            f"similar agent {a['similarity']:.2f}: {escape(a['name'])} v{a['version']}",
            highlight=False,
        )
    console.print(escape(draft["rationale"]), highlight=False)
    console.print_json(json.dumps(draft["spec"]))
    errors.print(
        "a draft, not created: `colony agents bootstrap "
        f"{json.dumps(objective)}{f' --name {name}' if name else ''} --json"
        " | colony agents create --file -` creates it",
        highlight=False,
        markup=False,
    )
