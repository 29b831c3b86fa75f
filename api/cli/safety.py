"""`colony safety-log`: the tenant's guardrail triggers (GET /v1/safety-log)."""

import click

from api.cli.output import api_client, console, fail_api
from core.errors import ColonyError


@click.command("safety-log")
@click.option("--agent", default=None, help="Only this agent's triggers.")
@click.option("--run", "run_id", default=None, help="Only this run's triggers.")
@click.option("--since", default=None, help="Only triggers at or after this ISO time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def safety_log(agent: str | None, run_id: str | None, since: str | None, limit: int) -> None:
    """Guardrail triggers, newest first: when, agent, run, guardrail, stage, action."""
    params: dict[str, str | int] = {"limit": limit}
    for name, value in (("agent", agent), ("run", run_id), ("since", since)):
        if value:
            params[name] = value
    try:
        with api_client() as api:
            entries = api.get("/v1/safety-log", params=params)
    except ColonyError as exc:
        fail_api(exc)
    if not entries:
        console.print("no guardrail triggers", highlight=False)
    for e in entries:
        console.print(
            f"{e['created_at'][:19]}  {e['agent_name']} v{e['agent_version']}  {e['run_id']}  "
            f"[bold]{e['guardrail']}[/] {e['stage']} {e['action']} ({e['detail']})",
            highlight=False,
        )
        console.print(f"      {' '.join(e['excerpt'].split())}", highlight=False, markup=False)
