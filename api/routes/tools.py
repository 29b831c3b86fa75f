"""Tools (built-in and registered), secrets and the egress allowlist.

`GET /v1/tools/{name:path}` takes names with `/` and `:` (`mcp:github/create_issue`), so
it matches every path under `/v1/tools/`: a fixed route such as `/v1/tools/search` must
be registered before this router (or declared above `get_tool` in it).

Registering a tool that sends secrets, writing secrets and changing the egress
allowlist need an admin key: a tool that sends a secret to an allowed host is a way to
use that secret.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import AdminDep, PoolDep, PrincipalDep, SettingsDep
from api.routes import tool_search
from api.schemas.tools import (
    EgressPublic,
    EgressPut,
    HttpToolCreate,
    SecretPublic,
    SecretPut,
    ToolCreate,
    ToolPublic,
    ToolStatsPublic,
)
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.settings import Settings
from core.swarms.recipes import RecipesAsTools
from core.tools import egress as tool_egress
from core.tools import secrets as tool_secrets
from core.tools import store as tools
from core.tools.builtins import builtin_tools
from core.tools.mcp import SECRET_NAME_PATTERN
from core.tools.names import AGENT_TOOL_PREFIX, RECIPE_TOOL_PREFIX, WORKFLOW_TOOLS
from core.tools.store import StoredTool, ToolStats

router = APIRouter(prefix="/v1", tags=["tools"])
router.include_router(tool_search.router)  # /v1/tools/search, before get_tool below
SecretName = Annotated[str, Path(pattern=SECRET_NAME_PATTERN)]
# Fixed sub-paths of /v1/tools that a tool name must not shadow.
_ROUTE_NAMES = frozenset({"search"})


_BUILTINS: dict[str, ToolPublic] = {}


def _builtin_tools(settings: Settings) -> dict[str, ToolPublic]:
    """Built-in tools as the API shows them (built once: they are code)."""
    if not _BUILTINS:
        _BUILTINS.update(_describe_builtins())
    return _BUILTINS


def _describe_builtins() -> dict[str, ToolPublic]:
    # Described in core (core/tools/builtins.py); the code that runs them is in activities.
    found = {
        tool.name: ToolPublic(
            name=tool.name,
            kind="builtin",
            description=tool.description,
            input_schema=tool.parameters,
            side_effects=tool.side_effects,
        )
        for tool in builtin_tools()
    }
    for schema in WORKFLOW_TOOLS.values():
        found[schema.name] = ToolPublic(
            name=schema.name,
            kind="builtin",
            description=schema.description,
            input_schema=schema.parameters,
            side_effects=False,
        )
    return found


async def unknown_tools(
    conn: tools.Conn, tenant_id: str, names: list[str], settings: Settings, *, own_agent: str
) -> list[str]:
    """The exact tool names among `names` that name nothing (patterns are not checked)."""
    exact = [n for n in names if "*" not in n and n not in _builtin_tools(settings)]
    registered = await tools.get_latest_tools(conn, tenant_id, exact)
    unknown = []
    for name in exact:
        if name in registered:
            continue
        if name.startswith(AGENT_TOOL_PREFIX):
            agent = name.removeprefix(AGENT_TOOL_PREFIX)
            if agent == own_agent or await _agent_exists(conn, tenant_id, agent):
                continue
        if name.startswith(RECIPE_TOOL_PREFIX):
            recipe = name.removeprefix(RECIPE_TOOL_PREFIX)
            if await RecipesAsTools().recipe_description(conn, tenant_id, recipe) is not None:
                continue
        unknown.append(name)
    return unknown


async def _agent_exists(conn: tools.Conn, tenant_id: str, name: str) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM agents WHERE tenant_id = %s AND name = %s", (tenant_id, name)
    )
    return await cur.fetchone() is not None


def _stats(stats: ToolStats | None) -> ToolStatsPublic:
    if stats is None:
        return ToolStatsPublic()
    return ToolStatsPublic(**stats.model_dump(exclude={"tool"}))


def _public(tool: StoredTool, stats: ToolStats | None) -> ToolPublic:
    return ToolPublic(**tool.model_dump(), stats=_stats(stats))


@router.post(
    "/tools",
    response_model=ToolPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ToolPublic, "description": "identical to the latest version"}},
)
async def register_tool(
    body: ToolCreate, principal: PrincipalDep, pool: PoolDep, response: Response
) -> ToolPublic:
    """Register an HTTP tool, or a sandboxed code tool (`"kind": "code"`).

    A changed spec under an existing name adds a version.
    """
    if body.name in _ROUTE_NAMES:
        raise InvalidInput(f"{body.name!r} is reserved by the API; choose another name")
    secret_names = body.http.secret_names if isinstance(body, HttpToolCreate) else []
    if secret_names and not principal.allows("admin"):
        raise PermissionDenied(
            "registering a tool that sends secrets needs an API key with the 'admin' scope"
        )
    spec = body.to_spec()
    async with pool.connection() as conn:
        missing = await tool_secrets.missing_secrets(conn, principal.tenant_id, secret_names)
        if missing:
            raise InvalidInput(
                f"headers refer to secrets that do not exist: {', '.join(missing)} "
                "(create them with PUT /v1/secrets/NAME)",
                details={"missing_secrets": missing},
            )
        stored, created = await tools.register_tool(conn, principal.tenant_id, body.name, spec)
        stats = (await tools.tool_stats(conn, principal.tenant_id, [stored.name])).get(stored.name)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _public(stored, stats)


@router.get("/tools", response_model=list[ToolPublic])
async def list_tools(
    principal: PrincipalDep, pool: PoolDep, settings: SettingsDep
) -> list[ToolPublic]:
    """Built-in tools, then the tenant's registered tools (latest versions), with stats."""
    async with pool.connection() as conn:
        registered = await tools.list_tools(conn, principal.tenant_id)
        stats = await tools.tool_stats(conn, principal.tenant_id)
    builtins = [
        tool.model_copy(update={"stats": _stats(stats.get(name))})
        for name, tool in sorted(_builtin_tools(settings).items())
    ]
    return builtins + [_public(tool, stats.get(tool.name)) for tool in registered]


@router.get("/tools/{name:path}", response_model=ToolPublic)
async def get_tool(
    name: str,
    principal: PrincipalDep,
    pool: PoolDep,
    settings: SettingsDep,
    version: Annotated[int | None, Query(gt=0)] = None,
) -> ToolPublic:
    """One tool: a built-in, or a registered tool at its latest (or the given) version."""
    builtin = _builtin_tools(settings).get(name)
    async with pool.connection() as conn:
        if builtin is not None:
            if version is not None:
                raise NotFound(f"built-in tool {name!r} has no versions")
            stats = await tools.tool_stats(conn, principal.tenant_id, [name])
            return builtin.model_copy(update={"stats": _stats(stats.get(name))})
        stored = await tools.get_tool(conn, principal.tenant_id, name, version)
        stats = await tools.tool_stats(conn, principal.tenant_id, [name])
    return _public(stored, stats.get(name))


# -- secrets -------------------------------------------------------------------------


@router.put(
    "/secrets/{name}",
    response_model=SecretPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": SecretPublic, "description": "the value was replaced"}},
)
async def put_secret(
    name: SecretName,
    body: SecretPut,
    principal: AdminDep,
    pool: PoolDep,
    settings: SettingsDep,
    response: Response,
) -> SecretPublic:
    """Create or replace a secret (admin only). The value is never returned."""
    cipher = tool_secrets.cipher_from_settings(settings)
    async with pool.connection() as conn:
        info, created = await tool_secrets.put_secret(
            conn, cipher, principal.tenant_id, name, body.value
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return SecretPublic(**info.model_dump())


@router.get("/secrets", response_model=list[SecretPublic])
async def list_secrets(principal: PrincipalDep, pool: PoolDep) -> list[SecretPublic]:
    """The tenant's secrets by name (never their values)."""
    async with pool.connection() as conn:
        infos = await tool_secrets.list_secret_names(conn, principal.tenant_id)
    return [SecretPublic(**info.model_dump()) for info in infos]


@router.delete("/secrets/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_secret(name: SecretName, principal: AdminDep, pool: PoolDep) -> Response:
    """Delete a secret (admin only); tools that use it fail until it is set again."""
    async with pool.connection() as conn:
        await tool_secrets.delete_secret(conn, principal.tenant_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- egress --------------------------------------------------------------------------


@router.get("/egress", response_model=EgressPublic)
async def get_egress(principal: PrincipalDep, pool: PoolDep) -> EgressPublic:
    """The tenant's egress allowlist for HTTP tools and http_fetch."""
    async with pool.connection() as conn:
        return EgressPublic(rules=await tool_egress.get_egress_rules(conn, principal.tenant_id))


@router.put("/egress", response_model=EgressPublic)
async def put_egress(body: EgressPut, principal: AdminDep, pool: PoolDep) -> EgressPublic:
    """Replace the tenant's egress allowlist (admin only). Workers see it within seconds."""
    async with pool.connection() as conn:
        rules = await tool_egress.replace_egress_rules(conn, principal.tenant_id, body.rules)
    return EgressPublic(rules=rules)
