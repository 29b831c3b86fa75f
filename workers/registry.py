"""What each lane runs: workflows and activity factories per task queue.

The worker builds each lane's activities from the shared resources it opens once per
process (settings, Postgres pool); tests build the same objects with their own.
"""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from activities.evolution.growth import GrowthActivities
from activities.evolution.models import EvolutionModelActivities
from activities.evolution.rollouts import LiveEvidenceHook, RolloutActivities
from activities.evolution.store import EvolutionStoreActivities
from activities.evolution.triggers import FailureTriggerHook
from activities.memory.maintenance import MaintenanceActivities, SkillActivities
from activities.memory.store import MemoryStore, MemoryStoreActivities
from activities.memory.vectors import LazyEmbedder, open_vector_store
from activities.providers.client import ModelClient
from activities.runs.bootstrap import BootstrapActivities
from activities.runs.llm import LlmActivities
from activities.runs.memory import RunMemoryActivities
from activities.runs.outputs import output_tools
from activities.runs.store import StoreActivities
from activities.runs.tool_calls import ToolActivities
from activities.stack_check import MemoryActivities
from activities.swarms.blackboard import blackboard_tools
from activities.swarms.queen import QueenActivities
from activities.swarms.recipes import RecipeActivities
from activities.swarms.store import SwarmActivities
from activities.tools.catalog import ToolCatalog, builtin_registry
from activities.tools.framework import ToolDefinition
from activities.tools.http import HttpToolExecutor, StoreResolvers
from activities.tools.limits import ToolLimiter
from activities.tools.mcp_client import McpSessionPool
from activities.tools.mcp_discovery import McpActivities
from activities.tools.search import ToolSearchActivities
from activities.tools.workspace_host import WorkspaceActivities
from core.db import Pool
from core.queues import TaskQueue
from core.runs.agents import AgentsAsTools
from core.runs.hooks import RunFinishedHooks
from core.settings import Settings
from core.swarms.recipes import RecipesAsTools
from core.tools.secrets import cipher_from_settings
from workflows.agent_bootstrap import AgentBootstrapWorkflow
from workflows.agent_run import AgentRunWorkflow
from workflows.evolution import EvolutionWorkflow
from workflows.mcp_discovery import McpDiscoveryWorkflow
from workflows.memory_maintenance import MemoryMaintenanceWorkflow
from workflows.memory_query import MemoryDeleteWorkflow, MemoryQueryWorkflow
from workflows.rollout import RolloutWorkflow
from workflows.stack_check import StackCheckWorkflow
from workflows.swarm import SwarmWorkflow
from workflows.tool_search import ToolSearchWorkflow


class Resources:
    """Process-wide clients handed to activity classes.

    Building one does no I/O: HTTP clients, MCP sessions and the sandbox backend start on
    first use. `aclose` releases them (MCP server processes included).
    """

    def __init__(
        self, settings: Settings, pool: Pool, *, extra_tools: Sequence[ToolDefinition] = ()
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.resolvers = StoreResolvers(pool, functools.partial(cipher_from_settings, settings))
        self.http = HttpToolExecutor(secrets=self.resolvers.secret, egress=self.resolvers.egress)
        self.mcp = McpSessionPool()
        self.limiter = ToolLimiter()
        self.builtins = builtin_registry(
            settings,
            self.resolvers.egress,
            [*blackboard_tools(pool), *output_tools(pool), *extra_tools],
        )
        self.catalog = ToolCatalog(
            self.builtins,
            http=self.http,
            mcp=self.mcp,
            secret=self.resolvers.secret,
            agents=AgentsAsTools(),
            recipes=RecipesAsTools(),
        )
        # Memory lane: Qdrant opens and the embedding model loads on first use.
        self.vectors = open_vector_store(settings)
        self.embedder = LazyEmbedder()
        self.memory = MemoryStore(settings, pool, self.vectors, self.embedder)
        # Model calls: the worker's rate limiters, circuit breakers and HTTP client.
        self.models = ModelClient(settings)

    async def aclose(self) -> None:
        """Close MCP sessions (stopping their server processes) and HTTP clients."""
        await self.mcp.close()
        await self.http.aclose()
        await self.models.aclose()
        self.vectors.close()


ActivityFactory = Callable[[Resources], Sequence[Callable[..., Any]]]


@dataclass(frozen=True)
class Lane:
    """One task queue's workflows and activities.

    The tools lane's workers also serve their host's own queue with the same activities
    (`workers.main.build_workers`): a run's workspace calls go there.
    """

    queue: TaskQueue
    workflows: Sequence[type] = ()
    activities: ActivityFactory = field(default=lambda _: ())


def _llm(res: Resources) -> Sequence[Callable[..., Any]]:
    llm = LlmActivities(res.settings, res.pool, res.models, res.catalog)
    queen = QueenActivities(res.settings, res.pool, res.models)
    return [
        llm.probe_llm_lane,
        llm.call_llm,
        llm.reflect_on_run,
        SkillActivities(res.settings, res.models).distill_skill,
        queen.plan_swarm,
        queen.synthesize_swarm,
        *_evolution_models(res),
    ]


def _evolution_models(res: Resources) -> Sequence[Callable[..., Any]]:
    acts = EvolutionModelActivities(res.settings, res.pool, res.models, res.catalog)
    return [
        acts.score_eval_run,
        acts.judge_pairs,
        acts.categorize_feedback,
        acts.diagnose_failures,
        acts.propose_candidates,
        RolloutActivities(res.settings, res.pool, res.models).observe_live_run,
    ]


def _evolution_store(res: Resources) -> Sequence[Callable[..., Any]]:
    acts = EvolutionStoreActivities(res.pool, res.settings)
    return [
        acts.start_evolution,
        acts.pending_evaluations,
        acts.create_eval_run,
        acts.decide_evolution,
        acts.await_promotion_approval,
        acts.finish_evolution,
        *_rollout_store(res),
    ]


def _rollout_store(res: Resources) -> Sequence[Callable[..., Any]]:
    acts = RolloutActivities(res.settings, res.pool)
    return [
        acts.load_rollout,
        acts.canary_evidence,
        acts.create_shadow_run,
        acts.record_shadow_pair,
        acts.decide_rollout,
        acts.roll_back_degraded,
    ]


def _orchestration(res: Resources) -> Sequence[Callable[..., Any]]:
    # Local activities of the agent-run workflow: calls of tools that need no isolation.
    return [ToolActivities(res.settings, res.pool, res.catalog, res.limiter).execute_local_tool]


def _tools(res: Resources) -> Sequence[Callable[..., Any]]:
    tools = ToolActivities(res.settings, res.pool, res.catalog, res.limiter)
    mcp = McpActivities(res.pool, res.mcp, res.resolvers.secret)
    workspaces = WorkspaceActivities(res.settings)
    return [
        tools.probe_tools_lane,
        tools.execute_tool,
        mcp.discover_mcp_server,
        workspaces.claim_workspace,
        workspaces.release_workspace,
        GrowthActivities(res.settings, res.pool, res.builtins).test_generated_tools,
    ]


def _memory(res: Resources) -> Sequence[Callable[..., Any]]:
    store = StoreActivities(
        res.pool,
        res.catalog,
        after_finish=RunFinishedHooks(
            FailureTriggerHook(res.settings, res.pool), LiveEvidenceHook(res.settings, res.pool)
        ),
    )
    swarms = SwarmActivities(res.settings, res.pool)
    recipes = RecipeActivities(res.settings, res.pool)
    search = ToolSearchActivities(
        res.settings, res.pool, res.vectors, res.embedder, res.catalog.builtin_schemas
    )
    return [
        MemoryActivities(res.pool).record_stack_check,
        store.start_run,
        store.adopt_messages,
        store.record_events,
        store.record_tool_result,
        store.finish_run,
        store.create_child_run,
        swarms.start_swarm,
        swarms.start_subtasks,
        swarms.finish_subtask,
        swarms.finish_swarm,
        recipes.start_recipe,
        recipes.recipe_answer,
        search.search_tools,
        BootstrapActivities(
            res.settings, res.pool, res.memory, search.search_tools, res.embedder
        ).draft_agent,
        *_memory_store(res),
        *_maintenance(res),
        *_evolution_store(res),
    ]


def _memory_store(res: Resources) -> Sequence[Callable[..., Any]]:
    acts = MemoryStoreActivities(res.memory)
    run = RunMemoryActivities(res.pool, res.memory)
    return [
        acts.write_memories,
        acts.recall_memories,
        acts.delete_memories,
        acts.record_skill_use,
        run.recall_for_run,
        run.record_episode,
    ]


def _maintenance(res: Resources) -> Sequence[Callable[..., Any]]:
    acts = MaintenanceActivities(res.settings, res.pool, res.memory, res.embedder)
    return [
        acts.list_memory_tenants,
        acts.apply_memory_retention,
        acts.reembed_memories,
        acts.find_skill_clusters,
        acts.write_skill,
        acts.retire_failing_skills,
    ]


LANES: dict[TaskQueue, Lane] = {
    TaskQueue.ORCHESTRATION: Lane(
        TaskQueue.ORCHESTRATION,
        workflows=[
            StackCheckWorkflow,
            AgentRunWorkflow,
            McpDiscoveryWorkflow,
            ToolSearchWorkflow,
            AgentBootstrapWorkflow,
            MemoryQueryWorkflow,
            MemoryDeleteWorkflow,
            MemoryMaintenanceWorkflow,
            SwarmWorkflow,
            EvolutionWorkflow,
            RolloutWorkflow,
        ],
        activities=_orchestration,
    ),
    TaskQueue.LLM: Lane(TaskQueue.LLM, activities=_llm),
    TaskQueue.TOOLS: Lane(TaskQueue.TOOLS, activities=_tools),
    TaskQueue.MEMORY: Lane(TaskQueue.MEMORY, activities=_memory),
}

ALL_WORKFLOWS: list[type] = [w for lane in LANES.values() for w in lane.workflows]
"""Every workflow class, for replay tests."""


def parse_lanes(names: Sequence[str]) -> list[TaskQueue]:
    """Lane names from the command line (`all` means every lane); order kept, no repeats."""
    queues: list[TaskQueue] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            chosen = list(TaskQueue) if part == "all" else [TaskQueue.from_lane(part)]
            queues += [q for q in chosen if q not in queues]
    if not queues:
        raise ValueError("no lanes given")
    return queues
