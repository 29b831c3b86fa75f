"""`colony memory query` and `colony memory delete`: the CLI side of long-term memory."""

import click

from api.cli.output import api_client, console, fail_api
from core.errors import ColonyError
from core.memory.payloads import MEMORY_KINDS


@click.group("memory")
def memory_group() -> None:
    """The tenant's long-term memory: episodes, lessons, skills and facts."""


@memory_group.command("query")
@click.argument("text")
@click.option("--agent", default=None, help="Only this agent's memories and shared ones.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(MEMORY_KINDS), help="Repeatable.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100))
def query_memory(text: str, agent: str | None, kinds: tuple[str, ...], limit: int) -> None:
    """Memories closest in meaning to TEXT, best first."""
    body: dict[str, object] = {"query": text, "limit": limit}
    if agent:
        body["agent"] = agent
    if kinds:
        body["kinds"] = list(kinds)
    try:
        with api_client() as api:
            found = api.post("/v1/memory/query", json=body)
    except ColonyError as exc:
        fail_api(exc)
    if not found["hits"]:
        console.print("no memories found", highlight=False)
    for hit in found["hits"]:
        run = f" run {hit['run_id']}" if hit.get("run_id") else ""
        console.print(
            f"{hit['score']:.2f}  [bold]{hit['kind']}[/] ({hit['agent']}, {hit['scope']},"
            f" {hit['created_at'][:19]}{run}) {hit['id']}",
            highlight=False,
        )
        console.print(f"      {' '.join(hit['content'].split())[:300]}", highlight=False)


@memory_group.command("delete")
@click.option("--agent", default=None, help="Every memory of this agent.")
@click.option("--run", "run_id", default=None, help="Every memory from this run.")
@click.option("--id", "memory_id", default=None, help="One memory.")
def delete_memory(agent: str | None, run_id: str | None, memory_id: str | None) -> None:
    """Delete memories (rows and vectors): by --agent, --run (both: all must match) or --id."""
    if memory_id and (agent or run_id):
        raise click.UsageError("--id deletes one memory: give it alone")
    if not (memory_id or agent or run_id):
        raise click.UsageError("give --agent, --run or --id")
    try:
        with api_client() as api:
            if memory_id:
                result = api.request("DELETE", f"/v1/memory/{memory_id}")
            else:
                params = {k: v for k, v in (("agent", agent), ("run", run_id)) if v}
                result = api.request("DELETE", "/v1/memory", params=params)
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"deleted {result['deleted']} memories", highlight=False)
