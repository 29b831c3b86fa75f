"""The blackboard tools: a swarm's agents post findings for each other and for the queen.

`post_to_blackboard` and `read_blackboard` are built-in tools that every subtask run of
a swarm gets (start_run adds them); any other run that calls them is told they work
only inside a swarm. Posts live in Postgres (`swarm_blackboard`) and are announced as
`blackboard.posted` swarm events.
"""

import hashlib
from typing import Any

from activities.tools.framework import ToolContext, ToolDefinition, ToolExecutionError
from core.db import Pool
from core.payloads import RunEvent
from core.runs import store as runs
from core.swarms import store as swarm_store
from core.tools.builtins import BLACKBOARD_TOOLS
from core.tools.names import POST_TO_BLACKBOARD, READ_BLACKBOARD

_NOT_IN_SWARM = "{tool} works only in a swarm's subtasks; this run is not part of one."


def blackboard_tools(pool: Pool) -> list[ToolDefinition]:
    """The two blackboard tools, reading and writing through `pool`."""

    async def post(arguments: dict[str, Any], ctx: ToolContext) -> str:
        content: str = arguments["content"].strip()
        topic = (arguments.get("topic") or "").strip() or None
        async with pool.connection() as conn:
            found = await swarm_store.swarm_of_run(conn, ctx.tenant_id, ctx.run_id)
            if found is None:
                raise ToolExecutionError(_NOT_IN_SWARM.format(tool=POST_TO_BLACKBOARD))
            swarm_id, subtask_id = found
            digest = hashlib.sha256(f"{topic}\x00{content}".encode()).hexdigest()[:16]
            async with conn.transaction():
                post_id = await swarm_store.post(
                    conn, ctx.tenant_id, swarm_id, key=f"{ctx.run_id}:{ctx.step}:{digest}",
                    content=content, topic=topic, subtask_id=subtask_id, run_id=ctx.run_id,
                )  # fmt: skip
                await swarm_store.append_events(
                    conn, ctx.tenant_id, swarm_id,
                    [RunEvent(key=f"post-{post_id}", type="blackboard.posted", data={
                        "post_id": post_id, "subtask_id": subtask_id, "run_id": ctx.run_id,
                        "topic": topic, "content": runs.preview(content, 500),
                    })],
                )  # fmt: skip
        return f"Posted to the blackboard (post #{post_id})."

    async def read(arguments: dict[str, Any], ctx: ToolContext) -> str:
        topic = (arguments.get("topic") or "").strip() or None
        async with pool.connection() as conn:
            found = await swarm_store.swarm_of_run(conn, ctx.tenant_id, ctx.run_id)
            if found is None:
                raise ToolExecutionError(_NOT_IN_SWARM.format(tool=READ_BLACKBOARD))
            posts = await swarm_store.read_posts(
                conn, ctx.tenant_id, found[0], topic=topic, limit=int(arguments.get("limit", 20))
            )
        if not posts:
            return "The blackboard is empty" + (f" for topic {topic!r}." if topic else ".")
        return "\n".join(format_post(p) for p in posts)

    handlers = {POST_TO_BLACKBOARD: post, READ_BLACKBOARD: read}
    return [ToolDefinition.serving(tool, handlers[tool.name]) for tool in BLACKBOARD_TOOLS]


def format_post(post: swarm_store.BlackboardPost) -> str:
    """One post as agents read it."""
    where = f"subtask {post.subtask_id}" if post.subtask_id else "the swarm"
    topic = f", topic {post.topic}" if post.topic else ""
    return f"#{post.id} ({where}{topic}): {post.content}"
