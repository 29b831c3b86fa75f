"""`colony rollout`: an agent's rollout policy, its canary and the test deciding it."""

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from api.cli.output import api_client, console, fail_api
from core.errors import ColonyError


@click.command("rollout")
@click.argument("agent")
@click.option("--canary-share", type=click.FloatRange(0, 1), default=None,
              help="Share of new runs a promoted version takes as a canary.")  # fmt: skip
@click.option("--shadow-share", type=click.FloatRange(0, 1), default=None,
              help="Share of the stable version's runs re-run on the canary (no side effects).")  # fmt: skip
@click.option("--sample-rate", type=click.FloatRange(0, 1), default=None,
              help="Share of live runs judged (eval-case checks, else the rubric judge).")  # fmt: skip
@click.option("--sticky-key", type=click.Choice(["end_user", "idempotency_key", "run"]),
              default=None, help="What keeps a caller on one version.")  # fmt: skip
@click.option("--watch/--no-watch", default=None, help="Roll the live version back when it drops.")
@click.option("--max-canary", "max_canary_s", type=click.FloatRange(min=1), default=None,
              help="Seconds after which an undecided canary is kept or rolled back by rule.")  # fmt: skip
@click.option("--off", is_flag=True, help="Remove the policy (promotions release at once again).")
def rollout(
    agent: str,
    canary_share: float | None,
    shadow_share: float | None,
    sample_rate: float | None,
    sticky_key: str | None,
    watch: bool | None,
    max_canary_s: float | None,
    off: bool,
) -> None:
    """Show an agent's rollout; with options, set its policy first (unset ones are kept)."""
    changes = {
        key: value
        for key, value in {
            "canary_share": canary_share, "shadow_share": shadow_share,
            "online_sample_rate": sample_rate, "sticky_key": sticky_key, "watch": watch,
            "max_canary_s": max_canary_s,
        }.items()
        if value is not None
    }  # fmt: skip
    try:
        with api_client() as api:
            if off:
                api.request("DELETE", f"/v1/agents/{agent}/rollout")
            elif changes:
                current = api.get(f"/v1/agents/{agent}/rollout")["settings"] or {}
                api.request("PUT", f"/v1/agents/{agent}/rollout", json={**current, **changes})
            state = api.get(f"/v1/agents/{agent}/rollout")
    except ColonyError as exc:
        fail_api(exc)
    print_state(state)


def print_state(state: dict[str, Any]) -> None:
    """The policy, the live version, the canary with its test statistic, and history."""
    settings = state["settings"]
    console.print(f"[bold]{escape(state['agent'])}[/]: live version {state['live_version']}")
    if settings is None:
        console.print("no rollout policy: promoted versions are released at once")
    else:
        console.print(
            f"policy: canary {settings['canary_share']:.0%} of new runs "
            f"(sticky by {settings['sticky_key']}), shadow {settings['shadow_share']:.0%}, "
            f"judged {settings['online_sample_rate']:.0%}, "
            f"watch {'on' if settings['watch'] else 'off'}"
        )
    canary = state["canary"]
    if canary is not None:
        console.print(
            f"canary: v{canary['canary_version']} on {canary['share']:.0%} beside "
            f"v{canary['stable_version']} since {canary['started_at'][:19].replace('T', ' ')}"
        )
    controller = state.get("controller") or {}
    statistic = controller.get("statistic") or {}
    if statistic:
        console.print("test: " + ", ".join(f"{k} {v}" for k, v in statistic.items()))
    if controller:
        console.print(f"observed runs: {controller.get('observed', 0)}, "
                      f"decisions: {controller.get('decisions', 0)}")  # fmt: skip
    if state["history"]:
        console.print(history_table(state["history"]))
    if state.get("temporal_ui"):
        console.print(f"controller: {state['temporal_ui']}")


def history_table(rollouts: list[dict[str, Any]]) -> Table:
    """Canaries and automatic rollbacks, newest first."""
    table = Table(title="canaries and rollbacks", title_justify="left")
    for column in ("started", "kind", "versions", "status", "reason"):
        table.add_column(column, overflow="fold")
    for r in rollouts:
        versions = (
            f"v{r['canary_version']} beside v{r['stable_version']}"
            if r["kind"] == "canary"
            else f"v{r['canary_version']} -> v{r['stable_version']}"
        )
        table.add_row(
            r["started_at"][:19].replace("T", " "), r["kind"], versions, r["status"],
            escape(r.get("reason") or "-"),
        )  # fmt: skip
    return table
