"""LangGraph with its Postgres checkpointer (AsyncPostgresSaver): a ReAct-style graph of
two nodes, `model` (a plain AsyncOpenAI chat completion against the scripted server:
langchain-openai is not in the lock) and `tools` (the calculator), checkpointed after
every super-step. LangGraph has no worker: the process that invokes the graph runs it,
and picking a run up after a crash means invoking the same thread again."""

import asyncio
import contextlib
import json
import operator
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from openai import AsyncOpenAI
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from tests.bench.peers._common import INSTRUCTIONS, MODEL, Config, calculate

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an addition such as 1+1.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    }
]


class State(TypedDict):
    """The graph's state: the chat so far (OpenAI message dicts)."""

    messages: Annotated[list[dict[str, Any]], operator.add]


def build(cfg: Config, saver: AsyncPostgresSaver) -> Any:
    """The compiled graph."""
    openai = AsyncOpenAI(base_url=cfg.base_url, api_key="x", max_retries=0)

    async def model(state: State) -> dict[str, Any]:
        response = await openai.chat.completions.create(
            model=MODEL,
            messages=state["messages"],
            tools=TOOLS,  # type: ignore[arg-type]
        )
        return {"messages": [response.choices[0].message.model_dump(exclude_none=True)]}

    def tools(state: State) -> dict[str, Any]:
        calls = state["messages"][-1].get("tool_calls") or []
        return {
            "messages": [
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "content": calculate(
                        json.loads(call["function"]["arguments"])["expression"], cfg.tool_log
                    ),
                }
                for call in calls
            ]
        }

    def route(state: State) -> str:
        return "tools" if state["messages"][-1].get("tool_calls") else END

    graph = StateGraph(State)
    graph.add_node("model", model)
    graph.add_node("tools", tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile(checkpointer=saver)


class LangGraphPostgres:
    """The framework protocol of tests.bench.peers._common for LangGraph."""

    def __init__(self) -> None:
        self._graph: Any = None

    @contextlib.asynccontextmanager
    async def serving(self, cfg: Config) -> AsyncIterator[None]:
        async with AsyncConnectionPool(
            cfg.database_url,
            max_size=32,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        ) as pool:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            self._graph = build(cfg, saver)
            try:
                yield
            finally:
                self._graph = None

    async def start(self, cfg: Config, run_id: str, prompt: str) -> Awaitable[None]:
        messages = [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": prompt},
        ]
        return asyncio.ensure_future(self._invoke({"messages": messages}, run_id))

    async def _invoke(self, value: Any, run_id: str) -> None:
        await self._graph.ainvoke(
            value, {"configurable": {"thread_id": run_id}, "recursion_limit": 1000}
        )

    async def crash_run(self, cfg: Config, run_id: str, prompt: str, resume: bool) -> None:
        async with self.serving(cfg):
            if resume:
                await self._invoke(None, run_id)
            else:
                await (await self.start(cfg, run_id, prompt))


FRAMEWORK = LangGraphPostgres()
