"""`colony eval-cases`: the CLI side of evolution's eval cases."""

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from api.cli.output import api_client, console, fail_api, preview
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
