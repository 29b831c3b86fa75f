"""`colony eval-cases`, `colony evolve` and `colony evolutions`: the CLI side of evolution."""

import json
import sys
from collections.abc import Iterable
from typing import Any

import click
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from api.cli.output import api_client, console, fail_api, preview
from api.client import ApiError, ColonyClient, EventStream
from core.errors import ColonyError


def _read_checks(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Each `--check` as a JSON object, e.g. '{"kind": "numeric", "value": 391}'."""
    checks = []
    for value in values:
        try:
            check = json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r} is not valid JSON: {exc}") from None
        if not isinstance(check, dict):
            raise click.BadParameter(
                f'{value!r} must be a JSON object such as {{"kind": "exact", "value": "Paris"}}'
            )
        checks.append(check)
    return checks


_CHECK_HELP = (
    'A check as JSON (repeatable): {"kind": "exact"|"contains"|"regex", "value": "..."}, '
    '{"kind": "numeric", "value": 391, "tolerance": 0.5}, '
    '{"kind": "json_path", "path": "$.city", "value": "Rome"} or '
    '{"kind": "tool_called", "tool": "calculator", "arguments": {...}}.'
)


@click.group("eval-cases")
def eval_cases_group() -> None:
    """Add, list and delete the eval cases evolution measures an agent on."""


@eval_cases_group.command("add")
@click.argument("agent")
@click.option("--objective", required=True, help="What the agent is asked.")
@click.option("--check", "checks", multiple=True, callback=_read_checks, help=_CHECK_HELP)
@click.option("--rubric", default=None, help="How a judge model grades the answer.")
@click.option("--expected", default=None, help="A reference answer (not shown to the agent).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--guard", is_flag=True, help="The case must never regress.")
def add_case(
    agent: str,
    objective: str,
    checks: list[dict[str, Any]],
    rubric: str | None,
    expected: str | None,
    tags: tuple[str, ...],
    guard: bool,
) -> None:
    """Add an eval case to AGENT: an objective with checks, a rubric, or both."""
    body = {
        "objective": objective, "checks": checks, "rubric": rubric, "expected": expected,
        "tags": list(tags), "guard": guard,
    }  # fmt: skip
    try:
        with api_client() as api:
            case = api.post(f"/v1/agents/{agent}/eval-cases", json=body)
    except ColonyError as exc:
        fail_api(exc)
    _print_added(case)


@eval_cases_group.command("from-run")
@click.argument("run_id")
@click.option("--check", "checks", multiple=True, callback=_read_checks, help=_CHECK_HELP)
@click.option("--rubric", default=None, help="How a judge model grades the answer.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--guard", is_flag=True, help="The case must never regress.")
def from_run(
    run_id: str, checks: list[dict[str, Any]], rubric: str | None, tags: tuple[str, ...],
    guard: bool,
) -> None:  # fmt: skip
    """Make RUN_ID an eval case of its agent, with the run's objective.

    Without --check or --rubric, the expected answer of the run's feedback
    (`colony feedback RUN_ID --rating N --expected ANSWER`) becomes the check.
    """
    body = {"checks": checks, "rubric": rubric, "tags": list(tags), "guard": guard}
    try:
        with api_client() as api:
            case = api.post(f"/v1/runs/{run_id}/eval-case", json=body)
    except ColonyError as exc:
        fail_api(exc)
    _print_added(case)


def _print_added(case: dict[str, Any]) -> None:
    guard = " · guard" if case["guard"] else ""
    console.print(
        f"eval case [bold]{case['id']}[/] of {escape(case['agent'])} · {case['split']}{guard} · "
        f"{escape(judged_by(case))}",
        highlight=False,
    )


@eval_cases_group.command("list")
@click.argument("agent")
@click.option("--split", type=click.Choice(["train", "validation", "holdout"]), default=None)
@click.option("--tag", default=None, help="Only cases with this tag.")
def list_cases(agent: str, split: str | None, tag: str | None) -> None:
    """AGENT's eval cases, oldest first."""
    params = {k: v for k, v in (("split", split), ("tag", tag)) if v is not None}
    try:
        with api_client() as api:
            cases = api.get(f"/v1/agents/{agent}/eval-cases", params=params)
    except ColonyError as exc:
        fail_api(exc)
    table = Table(title=f"eval cases of {escape(agent)} ({len(cases)})", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("split", "guard", "tags", "judged by", "run", "objective"):
        table.add_column(column, overflow="fold")
    for c in cases:
        table.add_row(
            c["id"], c["split"], "yes" if c["guard"] else "", escape(", ".join(c["tags"])),
            escape(preview(judged_by(c), 60)), c["source_run_id"] or "",
            escape(preview(c["objective"], 60)),
        )  # fmt: skip
    console.print(table)


@eval_cases_group.command("show")
@click.argument("agent")
@click.argument("case_id")
def show_case(agent: str, case_id: str) -> None:
    """One eval case of AGENT as JSON."""
    try:
        with api_client() as api:
            console.print_json(json.dumps(api.get(f"/v1/agents/{agent}/eval-cases/{case_id}")))
    except ColonyError as exc:
        fail_api(exc)


@eval_cases_group.command("delete")
@click.argument("agent")
@click.argument("case_id")
def delete_case(agent: str, case_id: str) -> None:
    """Delete one eval case of AGENT."""
    try:
        with api_client() as api:
            api.request("DELETE", f"/v1/agents/{agent}/eval-cases/{case_id}")
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"deleted eval case {case_id}", highlight=False)


def judged_by(case: dict[str, Any]) -> str:
    """How a case is judged, in short: its checks, then `rubric` if it has one."""
    parts = [_check_summary(check) for check in case["checks"]]
    if case.get("rubric"):
        parts.append("rubric")
    return "; ".join(parts)


def _check_summary(check: dict[str, Any]) -> str:
    kind = check["kind"]
    if kind == "numeric":
        tolerance = f" ± {check['tolerance']:g}" if check.get("tolerance") else ""
        return f"numeric {check['value']}{tolerance}"
    if kind == "json_path":
        return f"json_path {check['path']} = {json.dumps(check.get('value'))}"
    if kind == "tool_called":
        arguments = f" with {json.dumps(check['arguments'])}" if check.get("arguments") else ""
        return f"tool_called {check['tool']}{arguments}"
    return f"{kind} {json.dumps(check['value'])}"


# -- evolution cycles -----------------------------------------------------------------


@click.command("evolve")
@click.argument("agent")
@click.option("--candidates", type=click.IntRange(1, 8), default=None, help="default 3")
@click.option("--approval", type=click.Choice(["auto", "human"]), default=None,
              help="Promote by itself (default) or wait for `colony evolutions approve`.")  # fmt: skip
@click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Budget of the cycle in USD.")  # fmt: skip
@click.option("--max-eval-runs", type=click.IntRange(1, 20_000), default=None, help="default 400")
@click.option(
    "--follow/--no-follow", "-f", default=True, show_default=True, help="Stream the cycle's events."
)
@click.option("--every", default=None, help="Schedule cycles instead: every 24h, 90m, 1d...")
@click.option("--cron", default=None, help="Schedule cycles at cron times: '0 3 * * *' (UTC).")
@click.option("--pause/--resume", "pause", default=None, help="Pause or resume the schedule.")
@click.option("--unschedule", is_flag=True, help="Remove the schedule and triggers of AGENT.")
def evolve_command(
    agent: str,
    candidates: int | None,
    approval: str | None,
    max_cost: float | None,
    max_eval_runs: int | None,
    follow: bool,
    every: str | None,
    cron: str | None,
    pause: bool | None,
    unschedule: bool,
) -> None:
    """Start an evolution cycle of AGENT: propose candidates, evaluate, promote the best.

    With --every or --cron it sets AGENT's evolution schedule instead (the other options
    become the settings of its cycles); --pause/--resume pause or resume it, --unschedule
    removes it.
    """
    chosen = {
        "candidates": candidates, "approval": approval, "max_cost_usd": max_cost,
        "max_eval_runs": max_eval_runs,
    }  # fmt: skip
    settings = {k: v for k, v in chosen.items() if v is not None}
    if unschedule or every is not None or cron is not None or pause is not None:
        _schedule(agent, settings, every=every, cron=cron, pause=pause, unschedule=unschedule)
        return
    body = {"settings": settings}
    try:
        with api_client() as api:
            _print_estimate(api.post(f"/v1/agents/{agent}/evolutions/preflight", json=body))
            evolution = api.post(f"/v1/agents/{agent}/evolutions", json=body)
            console.print(
                f"evolution [bold]{evolution['id']}[/] of {escape(agent)} · incumbent "
                f"v{evolution['incumbent_version']} · {evolution['settings']['candidates']} "
                f"candidates · approval {evolution['settings']['approval']}",
                highlight=False,
            )
            if evolution.get("temporal_ui"):
                console.print(
                    f"Temporal UI: {evolution['temporal_ui']}", highlight=False, soft_wrap=True
                )
            if not follow:
                return
            stream = EventStream.of_evolution(api, agent, evolution["id"])
            finished = render_evolution_events(stream, agent, evolution["id"])
    except ColonyError as exc:
        fail_api(exc)
    if finished is None or finished.get("status") in ("failed", "cancelled"):
        sys.exit(1)


def _schedule(
    agent: str,
    settings: dict[str, Any],
    *,
    every: str | None,
    cron: str | None,
    pause: bool | None,
    unschedule: bool,
) -> None:
    """Set, pause, resume or remove AGENT's schedule; triggers and settings are kept."""
    if unschedule and (every is not None or cron is not None or pause is not None):
        raise click.UsageError("--unschedule goes alone")
    if every is not None and cron is not None:
        raise click.UsageError("give --every or --cron, not both")
    path = f"/v1/agents/{agent}/evolution-schedule"
    try:
        with api_client() as api:
            if unschedule:
                api.request("DELETE", path)
                console.print(f"removed the evolution schedule of {escape(agent)}")
                return
            current = _current_policy(api, path)
            if current is None and every is None and cron is None:
                raise click.UsageError(f"{agent} has no evolution schedule; set one with --every")
            body = {
                "every": every, "cron": cron, "paused": bool(pause),
                "settings": {**(current or {}).get("settings", {}), **settings},
                "triggers": (current or {}).get("triggers", {}),
            }  # fmt: skip
            if every is None and cron is None and current is not None:
                body |= {"every": current["every"], "cron": current["cron"]}
                if pause is None:
                    body["paused"] = current["paused"]
            print_schedule(api.request("PUT", path, json=body))
    except ColonyError as exc:
        fail_api(exc)


def _current_policy(api: ColonyClient, path: str) -> dict[str, Any] | None:
    try:
        return dict(api.get(path))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def print_schedule(policy: dict[str, Any]) -> None:
    """An agent's evolution policy: its schedule's state, triggers and cycle settings."""
    when = (
        f"every {policy['every']}" if policy["every"]
        else f"cron '{policy['cron']}'" if policy["cron"] else "no schedule"
    )  # fmt: skip
    schedule = policy.get("schedule")
    state = ""
    if policy["every"] or policy["cron"]:
        state = " · [yellow]paused[/]" if policy["paused"] else " · active"
    console.print(
        f"evolution schedule of [bold]{escape(policy['agent'])}[/] · {escape(when)}{state}",
        highlight=False,
    )
    if schedule:
        upcoming = ", ".join(_time(t) for t in schedule["next_runs"][:3]) or "-"
        console.print(f"  next runs: {upcoming}", highlight=False)
        for action in schedule["recent"][-5:]:
            console.print(
                f"  started {_time(action['started_at'])}: {action['workflow_id']}",
                highlight=False,
            )
    t = policy["triggers"]
    fired = [
        *([f"{t['failures']} failed or low-rated runs within {t['window_hours']:g}h"]
          if t.get("failures") else []),
        *([f"{t['feedback']} new feedback items"] if t.get("feedback") else []),
    ]  # fmt: skip
    if fired:
        console.print(
            f"  triggers: {' or '.join(fired)} · cooldown {t['cooldown_hours']:g}h", highlight=False
        )
    s = policy["settings"]
    console.print(
        f"  cycles: {s['candidates']} candidates · approval {s['approval']} · "
        f"cap {s['max_eval_runs']} runs",
        highlight=False,
    )


def _time(value: str) -> str:
    return value[:19].replace("T", " ")


def _print_estimate(estimate: dict[str, Any]) -> None:
    by_split = " · ".join(f"{n} {split}" for split, n in estimate["cases"].items())
    cap = f"cap {estimate['max_eval_runs']} runs"
    if estimate.get("max_cost_usd") is not None:
        cap += f", ${estimate['max_cost_usd']:g}"
    console.print(
        f"estimate: {estimate['eval_runs']} evaluation runs for {estimate['candidates']} "
        f"candidates ({by_split} cases) · {cap}",
        highlight=False,
    )
    if not estimate["within_budget"]:
        console.print(
            "[yellow]! more runs than the cap: the cycle will end with the budget exhausted "
            "and keep the incumbent[/]",
            highlight=False,
        )


def render_evolution_events(
    events: Iterable[dict[str, Any]], agent: str, evolution_id: str
) -> dict[str, Any] | None:
    """Print a cycle's events as they come; returns the `evolution.finished` event's data."""
    for event in events:
        kind, data = event["type"], event["data"]
        if kind == "evolution.finished":
            _print_decision(data)
            return dict(data)
        console.print(f"[cyan]▶ {escape(kind)}[/] {escape(_summary(data))}", highlight=False)
        if "waiting" in kind or "approval" in kind:
            console.print(
                f"  approve with `colony evolutions approve {escape(agent)} {evolution_id}` "
                "(or --reject)",
                highlight=False,
            )
    return None


def _summary(data: dict[str, Any]) -> str:
    """An event's plain fields as `key=value`, on one line."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            value = ", ".join(str(v) for v in value)
        if isinstance(value, (str, int, float, bool)) or value is None:
            parts.append(f"{key}={preview(str(value), 80)}")
    return " · ".join(parts)


def _print_decision(data: dict[str, Any]) -> None:
    cost = f"${float(data.get('cost_usd') or 0):.6f}"
    outcome = data.get("status")
    if outcome in ("failed", "cancelled"):
        console.print(f"[bold red]✘ {outcome}[/] · {cost}", highlight=False)
    elif data.get("decision") == "promote":
        console.print(f"[bold green]✔ promoted v{data.get('version')}[/] · {cost}", highlight=False)
    else:
        console.print(f"[bold]= kept the incumbent[/] · {cost}", highlight=False)
    for reason in data.get("reasons") or []:
        console.print(f"  - {reason}", markup=False, highlight=False)


@click.group("evolutions")
def evolutions_group() -> None:
    """List, show, approve and cancel an agent's evolution cycles; show its schedule."""


@evolutions_group.command("list")
@click.argument("agent")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
def evolutions_list(agent: str, limit: int) -> None:
    """AGENT's evolution cycles, newest first."""
    try:
        with api_client() as api:
            found = api.get(f"/v1/agents/{agent}/evolutions", params={"limit": limit})
    except ColonyError as exc:
        fail_api(exc)
    table = Table(title=f"evolutions of {escape(agent)}", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("status", "phase", "trigger", "incumbent", "candidates", "decision", "cost",
                   "created"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for e in found:
        table.add_row(
            e["id"], e["status"], e["phase"] or "-", e["trigger"], f"v{e['incumbent_version']}",
            str(sum(1 for c in e["candidates"] if not c["rejected"])), _decision(e),
            f"${e['cost_usd']:.6f}", e["created_at"][:19].replace("T", " "),
        )  # fmt: skip
    console.print(table)


def _decision(evolution: dict[str, Any]) -> str:
    if evolution["decision"] == "promote":
        return f"promote v{evolution['promoted_version']}"
    return evolution["decision"] or "-"


@evolutions_group.command("schedule")
@click.argument("agent")
def evolutions_schedule(agent: str) -> None:
    """AGENT's evolution schedule: next runs, recent cycles, triggers.

    Set it with `colony evolve AGENT --every 24h` (or --cron).
    """
    try:
        with api_client() as api:
            print_schedule(api.get(f"/v1/agents/{agent}/evolution-schedule"))
    except ColonyError as exc:
        fail_api(exc)


@evolutions_group.command("show")
@click.argument("agent")
@click.argument("evolution_id")
def evolutions_show(agent: str, evolution_id: str) -> None:
    """A cycle: its decision, each candidate's diff and the per-case table."""
    try:
        with api_client() as api:
            e = api.get(f"/v1/agents/{agent}/evolutions/{evolution_id}")
    except ColonyError as exc:
        fail_api(exc)
    console.print(
        f"evolution [bold]{e['id']}[/] of {escape(e['agent'])} · {e['status']} · phase "
        f"{e['phase'] or '-'} · incumbent v{e['incumbent_version']} · decision {_decision(e)} · "
        f"${e['cost_usd']:.6f}",
        highlight=False,
    )
    for reason in e["reasons"]:
        console.print(f"  - {reason}", markup=False, highlight=False)
    if e.get("temporal_ui"):
        console.print(f"Temporal UI: {e['temporal_ui']}", highlight=False, soft_wrap=True)
    for c in e["candidates"]:
        rejected = f" · [red]rejected: {escape(c['rejected'])}[/]" if c["rejected"] else ""
        console.print(
            f"\n[bold]candidate v{c['version']}[/] · {c['kind']} · {c['wins']} wins, "
            f"{c['losses']} losses, {c['ties']} ties · ${c['cost_usd']:.6f}{rejected}",
            highlight=False,
        )
        if c["rationale"]:
            console.print(c["rationale"], markup=False, highlight=False)
        if c["diff"]:
            console.print(Syntax(c["diff"], "diff", word_wrap=True))
    if e["cases"]:
        console.print(_case_table(e))


def _case_table(evolution: dict[str, Any]) -> Table:
    versions = sorted({s["version"] for row in evolution["cases"] for s in row["candidates"]})
    table = Table(title="per case (score, ✔ passed; against the incumbent)", title_justify="left")
    table.add_column("case", no_wrap=True)
    for column in ("split", "guard", f"v{evolution['incumbent_version']} (incumbent)"):
        table.add_column(column)
    for version in versions:
        table.add_column(f"v{version}")
    for row in evolution["cases"]:
        scores = {s["version"]: s for s in row["candidates"]}
        table.add_row(
            row["case_id"], row["split"], "yes" if row["guard"] else "",
            _cell(row["incumbent"]), *(_cell(scores.get(v)) for v in versions),
        )  # fmt: skip
    return table


_VERSUS = {"win": "[green]win[/]", "loss": "[red]loss[/]", "tie": "[dim]tie[/]"}


def _cell(score: dict[str, Any] | None) -> str:
    if score is None:
        return "-"
    value = "failed" if score["score"] is None else f"{score['score']:.2f}"
    passed = " ✔" if score["passed"] else ""
    versus = f" {_VERSUS[score['versus_incumbent']]}" if score.get("versus_incumbent") else ""
    return value + passed + versus


@evolutions_group.command("approve")
@click.argument("agent")
@click.argument("evolution_id")
@click.option("--reject", is_flag=True, help="Keep the incumbent instead.")
@click.option("--reason", default=None, help="Why (recorded with the decision).")
def evolutions_approve(agent: str, evolution_id: str, reject: bool, reason: str | None) -> None:
    """Approve (or --reject) the promotion a cycle waits on."""
    body = {"approved": not reject, "reason": reason}
    try:
        with api_client() as api:
            api.post(f"/v1/agents/{agent}/evolutions/{evolution_id}/approve", json=body)
    except ColonyError as exc:
        fail_api(exc)
    verb = "rejected" if reject else "approved"
    console.print(f"{verb} the promotion of {evolution_id}", highlight=False)


@evolutions_group.command("cancel")
@click.argument("agent")
@click.argument("evolution_id")
def evolutions_cancel(agent: str, evolution_id: str) -> None:
    """Cancel a cycle; the incumbent stays."""
    try:
        with api_client() as api:
            api.post(f"/v1/agents/{agent}/evolutions/{evolution_id}/cancel")
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"cancellation requested for {evolution_id}", highlight=False)
