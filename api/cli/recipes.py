"""`colony recipes`: save a succeeded swarm's plan as a recipe, list, show, delete."""

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from api.cli.output import api_client, console, fail_api, preview
from core.errors import ColonyError


@click.group("recipes")
def recipes_group() -> None:
    """Saved swarm plans that agents call as the tool recipe:<name>."""


@recipes_group.command("list")
def recipes_list() -> None:
    """The tenant's recipes."""
    try:
        with api_client() as api:
            recipes = api.get("/v1/recipes")
    except ColonyError as exc:
        fail_api(exc)
    table = Table(title="recipes", title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("mode", "subtasks", "source swarm", "created", "description"):
        table.add_column(column, overflow="fold")
    for r in recipes:
        table.add_row(
            escape(r["name"]), r["mode"], str(len(r["plan"])), r["source_swarm_id"] or "-",
            r["created_at"][:19].replace("T", " "), escape(preview(r["description"], 60)),
        )  # fmt: skip
    console.print(table)


@recipes_group.command("show")
@click.argument("name")
def recipes_show(name: str) -> None:
    """A recipe and its plan."""
    try:
        with api_client() as api:
            recipe = api.get(f"/v1/recipes/{name}")
    except ColonyError as exc:
        fail_api(exc)
    _print_recipe(recipe)


@recipes_group.command("save")
@click.argument("swarm_id")
@click.option("--name", required=True, help="The recipe's name (as agent names).")
@click.option("--description", default=None, help="What it is good for (agents read it).")
def recipes_save(swarm_id: str, name: str, description: str | None) -> None:
    """Save the plan of SWARM_ID (a succeeded swarm) as a recipe."""
    body: dict[str, Any] = {"name": name, "swarm_id": swarm_id}
    if description is not None:
        body["description"] = description
    try:
        with api_client() as api:
            recipe = api.post("/v1/recipes", json=body)
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"saved recipe [bold]{escape(recipe['name'])}[/]", highlight=False)
    _print_recipe(recipe)


@recipes_group.command("delete")
@click.argument("name")
def recipes_delete(name: str) -> None:
    """Delete a recipe (the swarms it ran stay)."""
    try:
        with api_client() as api:
            api.request("DELETE", f"/v1/recipes/{name}")
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"deleted recipe {name}", markup=False, highlight=False)


def _print_recipe(r: dict[str, Any]) -> None:
    console.print(
        f"recipe [bold]{escape(r['name'])}[/] · tool {escape(r['tool'])} · {r['mode']} · "
        f"queen {escape(r['queen'])} · from {r['source_swarm_id'] or '-'}",
        highlight=False,
    )
    if r["description"]:
        console.print(r["description"], markup=False, highlight=False)
    console.print(
        f"source objective: {preview(r['objective'], 500)}", markup=False, highlight=False
    )
    table = Table(title="plan", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("role", "depends on", "complexity", "description"):
        table.add_column(column, overflow="fold")
    for s in r["plan"]:
        table.add_row(
            s["id"], escape(s["role"]), ", ".join(s["depends_on"]) or "-", s["complexity"],
            escape(preview(s["description"])),
        )  # fmt: skip
    console.print(table)
