"""MemoryMaintenanceWorkflow: retention, re-embedding and skills, per tenant, on a schedule."""

import asyncio
from collections.abc import Sequence

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, VersioningBehavior
from temporalio.exceptions import ActivityError, ChildWorkflowError

from core import search_attributes

with workflow.unsafe.imports_passed_through():
    from activities.memory.maintenance import MaintenanceActivities, SkillActivities
    from core.memory.maintenance import (
        DistilledSkill,
        DistillSkillInput,
        FindClustersInput,
        FindClustersOutput,
        ListTenantsInput,
        ListTenantsOutput,
        MaintenanceInput,
        MaintenanceOutput,
        ReembedInput,
        ReembedOutput,
        RetentionInput,
        RetentionOutput,
        RetireSkillsInput,
        RetireSkillsOutput,
        SkillCluster,
        WriteSkillInput,
        WriteSkillOutput,
    )
    from workflows._options import MEMORY_MAINTENANCE, SKILL_DISTILL

KIND = "memory-maintenance"
TENANT_PAGE = 100
"""Tenants listed per activity call in a pass over every tenant."""
PARALLEL_TENANTS = 4
"""Child workflows (one per tenant) running at once."""
PARALLEL_SKILLS = 4
"""Clusters distilled at once within a tenant."""


def child_workflow_id(tenant_id: str, parent_run_id: str) -> str:
    """The id of the child workflow that maintains one tenant's memory in a pass."""
    return f"memory-maintenance-{tenant_id}-{parent_run_id}"


@workflow.defn(name="MemoryMaintenanceWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class MemoryMaintenanceWorkflow:
    """Keep long-term memory tidy; started by the `colony-memory-maintenance` schedule.

    With `tenant_id` None it pages through the tenants that have memories (the
    `list_memory_tenants` activity) and runs one child workflow per tenant
    (`memory-maintenance-{tenant}-{run id}`, a few at a time), continuing as new when
    the history grows long. With a tenant it works on that tenant, in order:

    1. retention: memories older than `tenants.memory_retention_days` are deleted,
       rows and vectors (`apply_memory_retention`, repeated until done);
    2. re-embedding: memories embedded by another model than the current one move to
       the current model's collection (`reembed_memories`, repeated until done);
    3. skills: clusters of similar successful episodes (`find_skill_clusters`) are each
       distilled by a model (`distill_skill`, llm lane) and written as a skill memory
       that consumes its episodes (`write_skill`); a failed model call writes the
       cluster's fallback skill instead;
    4. retiring: skills used often that mostly fail leave recall
       (`retire_failing_skills`).

    No signals, updates or queries. Ends with a `MaintenanceOutput` of counts; a tenant
    whose child fails is listed in `failed_tenants` and the pass goes on. A rerun is
    harmless: skills are keyed by their episodes, and consumed episodes are skipped.
    Sets `ColonyStatus` to `succeeded` at the end.
    """

    @workflow.run
    async def run(self, input: MaintenanceInput) -> MaintenanceOutput:
        """Maintain one tenant's memory, or every tenant's."""
        if input.tenant_id is not None:
            report = await self._tenant(input, input.tenant_id)
        else:
            report = await self._every_tenant(input)
        workflow.upsert_search_attributes([search_attributes.STATUS.value_set("succeeded")])
        return report

    async def _every_tenant(self, input: MaintenanceInput) -> MaintenanceOutput:
        report = input.carried or MaintenanceOutput()
        after = input.after_tenant
        while True:
            page: ListTenantsOutput = await workflow.execute_activity_method(
                MaintenanceActivities.list_memory_tenants,
                ListTenantsInput(after=after, limit=TENANT_PAGE),
                **MEMORY_MAINTENANCE.kwargs(),
            )
            for start in range(0, len(page.tenant_ids), PARALLEL_TENANTS):
                chunk = page.tenant_ids[start : start + PARALLEL_TENANTS]
                for result in await asyncio.gather(*(self._child(input, t) for t in chunk)):
                    report = report.plus(result)
                after = chunk[-1]
                if workflow.info().is_continue_as_new_suggested():
                    workflow.continue_as_new(
                        input.model_copy(update={"after_tenant": after, "carried": report})
                    )
            if not page.more or not page.tenant_ids:
                return report

    async def _child(self, input: MaintenanceInput, tenant_id: str) -> MaintenanceOutput:
        try:
            return await workflow.execute_child_workflow(
                MemoryMaintenanceWorkflow.run,
                input.model_copy(
                    update={"tenant_id": tenant_id, "after_tenant": None, "carried": None}
                ),
                id=child_workflow_id(tenant_id, workflow.info().run_id),
                task_queue=workflow.info().task_queue,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(search_attributes.TENANT, tenant_id),
                        SearchAttributePair(search_attributes.KIND, KIND),
                        SearchAttributePair(search_attributes.STATUS, "running"),
                    ]
                ),
            )
        except ChildWorkflowError as exc:
            workflow.logger.warning("memory maintenance of tenant %s failed: %s", tenant_id, exc)
            return MaintenanceOutput(tenants=1, failed_tenants=[tenant_id])

    async def _tenant(self, input: MaintenanceInput, tenant_id: str) -> MaintenanceOutput:
        now = workflow.now()
        expired = 0
        while True:
            retention: RetentionOutput = await workflow.execute_activity_method(
                MaintenanceActivities.apply_memory_retention,
                RetentionInput(tenant_id=tenant_id, now=now),
                **MEMORY_MAINTENANCE.kwargs(),
            )
            expired += retention.deleted
            if retention.done:
                break
        reembedded = 0
        while True:
            reembed: ReembedOutput = await workflow.execute_activity_method(
                MaintenanceActivities.reembed_memories,
                ReembedInput(tenant_id=tenant_id),
                **MEMORY_MAINTENANCE.kwargs(),
            )
            reembedded += reembed.reembedded
            if reembed.done:
                break
        written: list[WriteSkillOutput] = []
        if input.max_skills > 0:
            found: FindClustersOutput = await workflow.execute_activity_method(
                MaintenanceActivities.find_skill_clusters,
                FindClustersInput(
                    tenant_id=tenant_id,
                    similarity=input.skill_similarity,
                    min_episodes=input.skill_min_episodes,
                    max_clusters=input.max_skills,
                ),
                **MEMORY_MAINTENANCE.kwargs(),
            )
            written = await self._skills(input, tenant_id, found.clusters)
        retired: RetireSkillsOutput = await workflow.execute_activity_method(
            MaintenanceActivities.retire_failing_skills,
            RetireSkillsInput(
                tenant_id=tenant_id, min_uses=input.retire_min_uses, below=input.retire_below
            ),
            **MEMORY_MAINTENANCE.kwargs(),
        )
        created = [w for w in written if w.created]
        return MaintenanceOutput(
            tenant_id=tenant_id,
            tenants=1,
            expired=expired,
            reembedded=reembedded,
            skills_written=len(created),
            fallback_skills=sum(1 for w in created if w.fallback),
            episodes_consumed=sum(w.consumed for w in written),
            skills_retired=len(retired.retired),
        )

    async def _skills(
        self, input: MaintenanceInput, tenant_id: str, clusters: Sequence[SkillCluster]
    ) -> list[WriteSkillOutput]:
        written: list[WriteSkillOutput] = []
        for start in range(0, len(clusters), PARALLEL_SKILLS):
            chunk = clusters[start : start + PARALLEL_SKILLS]
            written += await asyncio.gather(*(self._skill(input, tenant_id, c) for c in chunk))
        return written

    async def _skill(
        self, input: MaintenanceInput, tenant_id: str, cluster: SkillCluster
    ) -> WriteSkillOutput:
        skill: DistilledSkill | None
        try:
            skill = await workflow.execute_activity_method(
                SkillActivities.distill_skill,
                DistillSkillInput(tenant_id=tenant_id, cluster=cluster),
                **SKILL_DISTILL.kwargs(),
            )
        except ActivityError as exc:
            # The model is unreachable or refuses: the cluster still becomes a skill.
            workflow.logger.warning("distilling a skill failed, using the fallback: %s", exc)
            skill = None
        return await workflow.execute_activity_method(
            MaintenanceActivities.write_skill,
            WriteSkillInput(
                tenant_id=tenant_id, cluster=cluster, skill=skill, scope=input.skill_scope
            ),
            **MEMORY_MAINTENANCE.kwargs(),
        )
