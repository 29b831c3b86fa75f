"""`colony usage`: the tenant's spend against its caps, and cost and tokens by agent, model, day."""

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from api.cli.output import api_client, console, fail_api
from core.errors import ColonyError


@click.command("usage")
@click.option(
    "--since", default=None, help="Start of the breakdown, ISO 8601 (default: 30 days ago)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
def usage_command(since: str | None, as_json: bool) -> None:
    """Spend today and this month against the tenant's caps, and what the model calls cost."""
    params = {} if since is None else {"since": since}
    try:
        with api_client() as api:
            usage = api.get("/v1/usage", params=params)
    except ColonyError as exc:
        fail_api(exc)
    if as_json:
        console.print_json(json.dumps(usage))
        return
    for label, window in (("today (UTC)", usage["today"]), ("this month", usage["month"])):
        cap = "no cap" if window["cap_usd"] is None else f"cap ${window['cap_usd']:.4f}"
        left = "" if window["remaining_usd"] is None else f", ${window['remaining_usd']:.4f} left"
        console.print(f"{label}: ${window['spent_usd']:.4f} spent ({cap}{left})", highlight=False)
    print_groups(usage, usage["since"], ("agent", "model", "day"))


def print_groups(usage: dict[str, Any], since: str, names: tuple[str, ...]) -> None:
    """One table per grouping in `names`, read from `usage["by_<name>"]`."""
    for name in names:
        console.print(_table(f"by {name} since {since[:19]}", usage[f"by_{name}"]))


def _table(title: str, groups: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("name", overflow="fold")
    for column in ("calls", "prompt tokens", "completion tokens", "cost USD"):
        table.add_column(column, justify="right")
    for g in groups:
        cost = f"{g['cost_usd']:.6f}" + ("*" if g["unpriced_calls"] else "")
        table.add_row(
            escape(g["name"]), str(g["calls"]), str(g["prompt_tokens"]),
            str(g["completion_tokens"]), cost,
        )  # fmt: skip
    if any(g["unpriced_calls"] for g in groups):
        table.caption = "* some calls had no known price (counted as $0)"
    return table
