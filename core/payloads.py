"""What every domain's payloads share: the base model, messages, tool schemas, model calls.

New fields always get defaults, and unknown ones are ignored, so workers of two versions
can run side by side (docs/architecture.md, "State").
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


def strip_query(value: str) -> str:
    """A search query without surrounding blanks (a field validator; blank is invalid)."""
    value = value.strip()
    if not value:
        raise ValueError("the query is blank")
    return value


class Payload(BaseModel):
    """Base of every payload: immutable, unknown fields ignored (rolling deploys)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


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
    examples: list[str] = []  # requests this tool serves; rank it for small models


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
    json_schema: dict[str, Any] | None = None  # the answer is one JSON object of this shape


class ModelResult(Payload):
    """What a model call returned."""

    message: ChatMessage  # role "assistant"
    finish_reason: str | None = None
    usage: ModelUsage = ModelUsage()
    model: str  # the model id that answered (as requested, e.g. "openai/gpt-4o-mini")
    cost_usd: float | None = None  # None when the price is unknown (never a made-up zero)
    latency_ms: float = 0.0


# -- events --------------------------------------------------------------------------


class RunEvent(Payload):
    """One event for the run's event log; `key` makes the append idempotent."""

    key: str
    type: str
    data: dict[str, Any] = {}
