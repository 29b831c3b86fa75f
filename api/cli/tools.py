"""`colony tools`, `colony mcp`, `colony secrets`: the CLI side of the tool system."""

import sys

import click
from rich.table import Table

from api.cli.output import api_client, console, fail_api
from core.errors import ColonyError


@click.group("tools")
def tools_group() -> None:
    """Built-in and registered tools."""


@tools_group.command("list")
def list_tools() -> None:
    """Every tool this tenant's agents can use, with live stats."""
    try:
        with api_client() as api:
            found = api.get("/v1/tools")
    except ColonyError as exc:
        fail_api(exc)
    table = Table("name", "kind", "calls", "success", "p50 / p95 ms", "description")
    for tool in found:
        stats = tool.get("stats") or {}
        calls = stats.get("calls", 0)
        rate = stats.get("success_rate")
        p50, p95 = stats.get("p50_ms"), stats.get("p95_ms")
        table.add_row(
            tool["name"],
            tool["kind"],
            str(calls),
            "-" if rate is None else f"{rate:.0%}",
            "-" if p50 is None else f"{p50:.0f} / {p95:.0f}",
            tool["description"][:70],
        )
    console.print(table)


@tools_group.command("search")
@click.argument("query")
@click.option("--limit", default=5, show_default=True)
def search_tools(query: str, limit: int) -> None:
    """Tools ranked by how well their description matches QUERY."""
    try:
        with api_client() as api:
            found = api.get("/v1/tools/search", params={"q": query, "limit": limit})
    except ColonyError as exc:
        fail_api(exc)
    for hit in found["hits"]:
        console.print(
            f"{hit['score']:.2f}  [bold]{hit['name']}[/] ({hit['kind']}): {hit['description']}",
            highlight=False,
        )


@click.group("mcp")
def mcp_group() -> None:
    """MCP servers whose tools agents can call (`mcp:<server>/<tool>`)."""


@mcp_group.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command_or_url")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--env", "env", multiple=True, help="NAME=VALUE, or NAME=secret:SECRET for a named secret."
)
@click.option(
    "--header", "headers", multiple=True, help="HTTP servers: NAME=VALUE or NAME=secret:SECRET."
)
def add_server(
    name: str,
    command_or_url: str,
    args: tuple[str, ...],
    env: tuple[str, ...],
    headers: tuple[str, ...],
) -> None:
    """Register server NAME: a command (stdio) or an http(s) URL, and discover its tools.

    Example: colony mcp add time uvx mcp-server-time
    """
    if command_or_url.startswith(("http://", "https://")):
        body = {
            "name": name,
            "transport": "http",
            "url": command_or_url,
            "headers": _pairs(headers),
        }
    else:
        body = {
            "name": name,
            "transport": "stdio",
            "command": command_or_url,
            "args": list(args),
            "env": _pairs(env),
        }
    try:
        with api_client() as api:
            server = api.post("/v1/mcp-servers", json=body, params={"wait": 60})
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"{server['name']}: {server['status']}", highlight=False)
    if server.get("last_error"):
        console.print(f"[red]{server['last_error']}[/]", highlight=False)
    for tool in server.get("tools", []):
        console.print(f"  {tool['name']}", highlight=False)
    if server["status"] != "ready":
        sys.exit(1)


@mcp_group.command("list")
def list_servers() -> None:
    """Registered MCP servers and their status."""
    try:
        with api_client() as api:
            servers = api.get("/v1/mcp-servers")
    except ColonyError as exc:
        fail_api(exc)
    table = Table("name", "transport", "status", "tools", "last error")
    for server in servers:
        table.add_row(
            server["name"],
            server["transport"],
            server["status"],
            str(len(server.get("tools", []))),
            (server.get("last_error") or "")[:60],
        )
    console.print(table)


@click.command("secret")
@click.argument("name")
@click.option("--value", prompt=True, hide_input=True, help="The secret (prompted when omitted).")
def put_secret(name: str, value: str) -> None:
    """Store a named secret (encrypted; HTTP tools and MCP servers refer to it by name)."""
    try:
        with api_client() as api:
            api.request("PUT", f"/v1/secrets/{name}", json={"value": value})
    except ColonyError as exc:
        fail_api(exc)
    console.print(f"secret {name} stored", highlight=False)


def _pairs(items: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE")
        out[key] = {"secret": value[7:]} if value.startswith("secret:") else value
    return out
