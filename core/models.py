"""Payload models: one frozen pydantic model in and one out for every workflow and activity.

New fields always get defaults, so workers of two versions can run side by side.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Payload(BaseModel):
    """Base of every payload: immutable, unknown fields ignored (rolling deploys)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class StackCheckInput(Payload):
    """Input of `StackCheckWorkflow`."""

    tenant_id: str


class LaneReport(Payload):
    """What one lane's probe found."""

    lane: str
    ok: bool
    detail: str
    worker: str = ""
    duration_ms: float = 0.0


class StackCheckOutput(Payload):
    """Result of `StackCheckWorkflow`: one report per lane."""

    workflow_id: str
    lanes: list[LaneReport]
    finished_at: datetime

    @property
    def ok(self) -> bool:
        """True when every lane reported ok."""
        return all(lane.ok for lane in self.lanes)


class ProbeInput(Payload):
    """Input of the lane probe activities."""

    tenant_id: str
    workflow_id: str


class StackCheckRecord(Payload):
    """Input of `record_stack_check`: the lane reports to persist."""

    tenant_id: str
    workflow_id: str
    lanes: list[LaneReport]


# -- conversation ------------------------------------------------------------------


class ToolCallRequest(Payload):
    """A tool call as the model asked for it; `arguments` is the raw JSON text it produced."""

    id: str
    name: str
    arguments: str = "{}"


class ChatMessage(Payload):
    """One message of a conversation, in the OpenAI chat shape every provider maps to."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCallRequest] = []
    tool_call_id: str | None = None  # for role "tool": the call this answers
    name: str | None = None  # for role "tool": the tool's name


class ToolSchema(Payload):
    """What a model is told about a tool: its name, description and JSON Schema input."""

    name: str
    description: str
    parameters: dict[str, Any] = {"type": "object", "properties": {}}


class ModelUsage(Payload):
    """Token counts of one model call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class ModelRequest(Payload):
    """One model call (inside the llm lane; never a workflow payload: it can be large)."""

    model: str  # LiteLLM-style id: anthropic/..., openai/..., ollama/..., local/smollm2-135m
    messages: list[ChatMessage]
    tools: list[ToolSchema] = []
    max_tokens: int | None = None
    temperature: float | None = None
    timeout_s: float = 120.0


class ModelResult(Payload):
    """What a model call returned."""

    message: ChatMessage  # role "assistant"
    finish_reason: str | None = None
    usage: ModelUsage = ModelUsage()
    model: str  # the model id that answered (as requested, e.g. "openai/gpt-4o-mini")
    cost_usd: float | None = None  # None when the price is unknown (never a made-up zero)
    latency_ms: float = 0.0
