"""Every tool a tenant's runs can call, resolved to `ToolDefinition`s.

Two sources:

    built-ins   code in this worker: calculator, get_time, http_fetch, the sandbox and
                workspace tools (plus tests' own); `ask_human` and `find_tools` are
                answered by the workflow itself and only described here
    registered  rows of the `tools` table (core/tools/store.py): HTTP tools and MCP tools
                (`mcp:<server>/<tool>`, discovered from a registered server)
    agents      `agent:<name>`: another agent of the tenant, called as a tool; the
                workflow runs it as a child run with its own budget
    recipes     `recipe:<name>`: a saved swarm plan of the tenant; the workflow runs it
                as a child swarm on the objective the model gives

Colony names tools by their Colony name everywhere (agent specs, messages, events,
policies). Models see `ToolDefinition.name`, which is the same except for MCP tools,
agents and recipes, whose names providers refuse (`mcp:time/now` -> `mcp__time__now`,
`agent:researcher` -> `agent__researcher`, `recipe:report` -> `recipe__report`); `CatalogEntry` keeps both and `model_names`
maps back.
"""

import hashlib
import inspect
import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from activities.tools.builtins import BUILTIN, CALCULATOR, GET_TIME
from activities.tools.framework import (
    StaticToolRegistry,
    ToolContext,
    ToolDefinition,
    ToolExecutionError,
    UnknownToolError,
    run_tool,
)
from activities.tools.http import (
    EgressResolver,
    HttpToolExecutor,
    SecretResolver,
    http_fetch_tool,
)
from activities.tools.mcp_client import McpSessionPool
from activities.tools.sandbox import sandbox_tools
from core.errors import NotFound
from core.payloads import FREE_TEXT, ToolCallRequest, ToolSchema
from core.settings import Settings
from core.tools import mcp as mcp_names
from core.tools import mcp_servers, policy
from core.tools import store as tool_store
from core.tools.names import AGENT_TOOL_PREFIX as AGENT_TOOL_PREFIX  # re-exported
from core.tools.names import (
    RECIPE_TOOL_PARAMETERS,
    RECIPE_TOOL_PREFIX,
    WORKFLOW_TOOL_PREFIXES,
    WORKFLOW_TOOLS,
)

EntryKind = Literal["builtin", "workflow", "http", "mcp", "code", "agent", "recipe"]

MAX_AGENT_DESCRIPTION: Final = 600


@dataclass(frozen=True)
class CatalogEntry:
    """One callable tool: its Colony name, kind, definition and stored record (if any)."""

    name: str
    kind: EntryKind
    schema: ToolSchema  # as the model sees it (provider-safe name)
    definition: ToolDefinition | None  # None for workflow tools
    stored: tool_store.StoredTool | None = None

    @property
    def side_effects(self) -> bool:
        """Whether a call changes something outside the run."""
        if self.stored is not None:
            return self.stored.side_effects
        return self.definition.side_effects if self.definition is not None else False

    @property
    def policy_defaults(self) -> policy.ToolPolicyDefaults | None:
        """The tool's own policy (None: a built-in, allowed, unlimited)."""
        return self.stored.policy if self.stored is not None else None

    @property
    def enabled(self) -> bool:
        """Whether the tool may be called at all."""
        return self.stored.enabled if self.stored is not None else True


def builtin_registry(
    settings: Settings,
    egress: EgressResolver | None = None,
    extra: Sequence[ToolDefinition] = (),
) -> StaticToolRegistry:
    """The built-in tools of a worker (`extra`: a test's own tools).

    Without `egress` (listing tools, not running them) `http_fetch` may reach nothing.
    """
    return StaticToolRegistry(
        [
            CALCULATOR,
            GET_TIME,
            http_fetch_tool(egress or _no_egress),
            *sandbox_tools(settings),
            *extra,
        ]
    )


async def _no_egress(tenant_id: str) -> list[policy.EgressRule]:
    return []


class AgentDirectory(Protocol):
    """The tenant's agents, which the catalog offers as tools (`agent:<name>`).

    The runs domain keeps agents (`core.runs.agents.AgentsAsTools`); the worker hands it
    to the catalog, so tools need not know how agents are stored.
    """

    async def agent_names(self, conn: tool_store.Conn, tenant_id: str) -> list[str]:
        """Names of the tenant's agents."""
        ...

    async def agent_instructions(
        self, conn: tool_store.Conn, tenant_id: str, name: str
    ) -> str | None:
        """The latest instructions of an agent (None: no such agent)."""
        ...


class RecipeDirectory(Protocol):
    """The tenant's recipes, which the catalog offers as tools (`recipe:<name>`).

    The swarms domain keeps recipes (`core.swarms.recipes.RecipesAsTools`); the worker
    hands it to the catalog.
    """

    async def recipe_names(self, conn: tool_store.Conn, tenant_id: str) -> list[str]:
        """Names of the tenant's recipes."""
        ...

    async def recipe_description(
        self, conn: tool_store.Conn, tenant_id: str, name: str
    ) -> str | None:
        """What the recipe does (None: no such recipe)."""
        ...


class ToolCatalog:
    """Resolves tool names for one tenant: built-ins from code, the rest from Postgres.

    Without `agents` (`recipes`), agents (recipes) are not offered as tools.

    Stored definitions are rebuilt per call (a row is small and the tenant may have
    re-registered the tool); the MCP session pool and HTTP client behind them are the
    worker's.
    """

    def __init__(
        self,
        builtins: StaticToolRegistry = BUILTIN,
        *,
        http: HttpToolExecutor | None = None,
        mcp: McpSessionPool | None = None,
        secret: SecretResolver | None = None,
        agents: AgentDirectory | None = None,
        recipes: RecipeDirectory | None = None,
    ) -> None:
        self._builtins = builtins
        self._agents = agents
        self._recipes = recipes
        self._http = http
        self._mcp = mcp
        self._secret = secret

    def builtin_names(self) -> list[str]:
        """Names of the built-in tools, workflow tools included."""
        return [*self._builtins.names, *WORKFLOW_TOOLS]

    def builtin_schemas(self) -> list[ToolSchema]:
        """What models are told about every built-in tool."""
        return [*self._builtins.schemas(self._builtins.names), *WORKFLOW_TOOLS.values()]

    async def available(self, conn: tool_store.Conn, tenant_id: str) -> list[str]:
        """Every tool name the tenant has: built-ins, enabled registered tools, agents, recipes."""
        stored = await tool_store.list_tools(conn, tenant_id)
        agent_names = (
            [] if self._agents is None else await self._agents.agent_names(conn, tenant_id)
        )
        recipe_names = (
            [] if self._recipes is None else await self._recipes.recipe_names(conn, tenant_id)
        )
        return [
            *self.builtin_names(),
            *(t.name for t in stored if t.enabled),
            *(AGENT_TOOL_PREFIX + name for name in agent_names),
            *(RECIPE_TOOL_PREFIX + name for name in recipe_names),
        ]

    async def expand(
        self, conn: tool_store.Conn, tenant_id: str, patterns: Sequence[str]
    ) -> list[str]:
        """The concrete tool names an agent's `tools` entries (names or patterns) cover.

        Exact names are kept even when unknown (the call is then refused with a clear
        error); patterns expand to the tenant's tools that match them.
        """
        names = [p for p in patterns if "*" not in p]
        if len(names) < len(patterns):
            wildcards = [p for p in patterns if "*" in p]
            names += [
                n for n in await self.available(conn, tenant_id) if policy.matches_any(wildcards, n)
            ]
        return list(dict.fromkeys(names))

    async def entries(
        self,
        conn: tool_store.Conn,
        tenant_id: str,
        names: Iterable[str],
        *,
        drafts_of: tuple[str, int] | None = None,
    ) -> dict[str, CatalogEntry]:
        """The entries of the known names among `names` (unknown names are left out).

        `drafts_of` (agent name, version): a run of that agent version, which also sees
        the draft tools attached to it (an evolution candidate's generated tools).
        """
        wanted = list(dict.fromkeys(names))
        out: dict[str, CatalogEntry] = {}
        registered = []
        for name in wanted:
            if name in WORKFLOW_TOOLS:
                out[name] = CatalogEntry(name, "workflow", WORKFLOW_TOOLS[name], None)
            elif self._builtins.has(name):
                builtin = self._builtins.get(name)
                out[name] = CatalogEntry(name, "builtin", builtin.schema(), builtin)
            elif name.startswith(AGENT_TOOL_PREFIX):
                agent = await self._agent_entry(conn, tenant_id, name)
                if agent is not None:
                    out[name] = agent
            elif name.startswith(RECIPE_TOOL_PREFIX):
                recipe = await self._recipe_entry(conn, tenant_id, name)
                if recipe is not None:
                    out[name] = recipe
            else:
                registered.append(name)
        if registered:
            stored = await tool_store.get_latest_tools(
                conn, tenant_id, registered, drafts_of=drafts_of
            )
            servers: dict[str, mcp_servers.McpServer | None] = {}
            for tool in stored.values():
                definition = await self._definition(conn, tenant_id, tool, servers)
                if definition is not None:
                    out[tool.name] = CatalogEntry(
                        tool.name, tool.kind, definition.schema(), definition, tool
                    )
        return {name: out[name] for name in wanted if name in out}

    async def _agent_entry(
        self, conn: tool_store.Conn, tenant_id: str, name: str
    ) -> CatalogEntry | None:
        agent = name.removeprefix(AGENT_TOOL_PREFIX)
        found = (
            None
            if self._agents is None
            else await self._agents.agent_instructions(conn, tenant_id, agent)
        )
        if found is None:
            return None
        instructions = " ".join(found.split())
        if len(instructions) > MAX_AGENT_DESCRIPTION:
            instructions = instructions[: MAX_AGENT_DESCRIPTION - 3] + "..."
        schema = ToolSchema(
            name=agent_model_name(agent),
            description=(
                f"Delegate a task to the agent '{agent}', which works on it on its own and "
                f"returns its answer. Its instructions: {instructions}"
            ),
            parameters=AGENT_TOOL_PARAMETERS,
        )
        return CatalogEntry(name, "agent", schema, None)

    async def _recipe_entry(
        self, conn: tool_store.Conn, tenant_id: str, name: str
    ) -> CatalogEntry | None:
        recipe = name.removeprefix(RECIPE_TOOL_PREFIX)
        found = (
            None
            if self._recipes is None
            else await self._recipes.recipe_description(conn, tenant_id, recipe)
        )
        if found is None:
            return None
        if len(found) > MAX_AGENT_DESCRIPTION:
            found = found[: MAX_AGENT_DESCRIPTION - 3] + "..."
        schema = ToolSchema(
            name=recipe_model_name(recipe),
            description=(
                f"Run the recipe '{recipe}': a team of agents works on your objective with a "
                f"plan that worked before, and returns its combined answer. {found}"
            ),
            parameters=RECIPE_TOOL_PARAMETERS,
        )
        return CatalogEntry(name, "recipe", schema, None)

    async def _definition(
        self,
        conn: tool_store.Conn,
        tenant_id: str,
        tool: tool_store.StoredTool,
        servers: dict[str, mcp_servers.McpServer | None],
    ) -> ToolDefinition | None:
        if tool.kind == "http" and self._http is not None:
            return self._http.definition(tool)
        if tool.kind == "code" and self._builtins.has("run_python"):
            return code_tool_definition(self._builtins, tool)
        if tool.kind == "mcp" and self._mcp is not None:
            server = str(tool.config.get("server", ""))
            if server not in servers:
                try:
                    servers[server] = await mcp_servers.get_mcp_server(conn, tenant_id, server)
                except NotFound:  # deleted since: the tool is unknown now
                    servers[server] = None
                # Anything else (Postgres down) fails the activity, which Temporal retries.
            record = servers[server]
            if record is None:
                return None
            return _mcp_definition(self._mcp, record, tool, self._secret)
        return None

    async def run(
        self,
        conn: tool_store.Conn,
        tenant_id: str,
        call: ToolCallRequest,
        ctx: ToolContext,
    ) -> str:
        """Run one call by its Colony name (see `run_tool` for the errors)."""
        entry = (await self.entries(conn, tenant_id, [call.name])).get(call.name)
        if entry is None or entry.definition is None:
            raise UnknownToolError(
                f"Unknown tool '{call.name}': it is neither built in nor registered. "
                "Use only the tools you were given."
            )
        return await run_entry(entry, call, ctx)


async def run_entry(entry: CatalogEntry, call: ToolCallRequest, ctx: ToolContext) -> str:
    """Run a resolved entry: arguments are checked against its schema first."""
    assert entry.definition is not None
    definition = entry.definition
    single = _SingleTool(definition)
    renamed = call.model_copy(update={"name": definition.name})
    return await run_tool(single, renamed, ctx)


def answered_by_workflow(name: str) -> bool:
    """Whether the workflow handles calls of `name` itself (they never reach the tools lane)."""
    return name in WORKFLOW_TOOLS or name.startswith(WORKFLOW_TOOL_PREFIXES)


def model_names(entries: Iterable[CatalogEntry]) -> dict[str, str]:
    """{name the model sees: Colony name} for the entries."""
    return {entry.schema.name: entry.name for entry in entries}


class _SingleTool:
    """A `ToolRegistry` of one definition (how `run_entry` reuses `run_tool`)."""

    def __init__(self, definition: ToolDefinition) -> None:
        self._definition = definition

    def get(self, name: str) -> ToolDefinition:
        if name != self._definition.name:
            raise UnknownToolError(f"Unknown tool '{name}'.")
        return self._definition

    def has(self, name: str) -> bool:
        return name == self._definition.name

    def schemas(self, names: Sequence[str]) -> list[ToolSchema]:
        return [self.get(n).schema() for n in dict.fromkeys(names)]


AGENT_TOOL_PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "task": {
            "type": "string",
            "minLength": 1,
            "maxLength": 20_000,
            "description": "What the agent should do, with everything it needs to know.",
            FREE_TEXT: True,
        }
    },
    "required": ["task"],
    "additionalProperties": False,
}


def agent_model_name(agent: str) -> str:
    """The provider-safe name of the tool that calls `agent`."""
    return _safe_name("agent__", agent)


def recipe_model_name(recipe: str) -> str:
    """The provider-safe name of the tool that runs `recipe`."""
    return _safe_name("recipe__", recipe)


def _safe_name(prefix: str, name: str) -> str:
    plain = prefix + name
    if _SAFE.fullmatch(plain):
        return plain
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', plain)[:53]}_{digest}"


_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def code_tool_definition(
    builtins: StaticToolRegistry, tool: tool_store.StoredTool
) -> ToolDefinition:
    """A registered code tool: its source runs in the sandbox with the arguments bound."""
    language = str(tool.config["language"])
    source = str(tool.config["source"])
    runner = builtins.get("run_python" if language == "python" else "run_shell")

    async def handler(arguments: dict[str, Any], ctx: ToolContext) -> str:
        data = json.dumps(arguments)
        if language == "python":
            code = f"import json as _json\nargs = _json.loads({data!r})\n{source}"
            result = runner.handler({"code": code}, ctx)
        else:
            code = f"export ARGS_JSON={shlex.quote(data)}\n{source}"
            result = runner.handler({"command": code}, ctx)
        text = str(await result if inspect.isawaitable(result) else result)
        if not text.startswith("exit code: 0\n") and text != "exit code: 0":
            raise ToolExecutionError(f"Tool '{tool.name}' failed:\n{text}")
        return text

    return ToolDefinition(
        name=tool.name,
        description=tool.description,
        parameters=tool.input_schema,
        side_effects=False,
        handler=handler,
    )


def _mcp_definition(
    pool: McpSessionPool,
    server: mcp_servers.McpServer,
    tool: tool_store.StoredTool,
    secret: SecretResolver | None,
) -> ToolDefinition:
    config = mcp_names.parse_server_config(
        {**server.config, "name": server.name, "transport": server.transport}
    )
    remote = str(tool.config.get("tool", tool.name.rpartition("/")[2]))
    timeout_s = tool.timeout_s

    async def handler(arguments: dict[str, Any], ctx: ToolContext) -> str:
        async def resolve(name: str) -> str:
            assert secret is not None
            return await secret(ctx.tenant_id, name)

        return await pool.call_tool(
            config,
            remote,
            arguments,
            timeout_s,
            scope=ctx.tenant_id,
            resolve_secret=resolve if secret is not None else None,
        )

    return ToolDefinition(
        name=mcp_names.provider_safe_name(tool.name),
        description=tool.description,
        parameters=tool.input_schema,
        side_effects=tool.side_effects,
        handler=handler,
    )
