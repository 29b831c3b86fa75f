"""Run payloads: agent specs and one frozen model in and one out for every run activity.

New fields always get defaults, so workers of two versions can run side by side.
"""

import hashlib
import json
import re
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from core.payloads import ModelUsage, Payload, RunEvent, RunMode
from core.runs.guardrails import Guardrails
from core.specs import Spec
from core.tools.payloads import ToolPolicy
from core.tools.workspaces import WorkspaceHost

# -- agents --------------------------------------------------------------------------

AGENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_TOOL_ENTRY = re.compile(r"^[A-Za-z0-9_.:/*-]{1,200}$")  # core.tools.policy patterns


class AgentLimits(Spec):
    """Limits of one run of the agent."""

    max_steps: int = Field(default=25, ge=1, le=10_000)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=3600.0, gt=0, le=30 * 24 * 3600)
    parallel_tool_calls: bool = True
    conversation_idle_timeout_s: float = Field(default=3600.0, gt=0, le=30 * 24 * 3600)


class MemorySettings(Spec):
    """Memory of an agent: the conversation window, and long-term memory across runs."""

    enabled: bool = False  # recall before a run, write its episode (and reflexion) after
    scope: Literal["private", "shared"] = "private"  # shared: every agent of the tenant recalls
    reflexion: bool = True  # after a run, a model call critiques it into a lesson
    recall_limit: int = Field(default=5, ge=1, le=50)
    window_tokens: int | None = Field(default=None, ge=500, le=10_000_000)
    """Conversation window budget; default: 3/4 of the model's input limit (8192 if unknown)."""


class AgentSpec(Spec):
    """Everything a version fixes about an agent."""

    instructions: str = Field(min_length=1, max_length=200_000)
    model: str = Field(min_length=3, max_length=200, pattern=r"^[a-z0-9_-]+/.+$")
    fallback_models: list[str] = Field(default_factory=list, max_length=5)
    tools: list[str] = Field(default_factory=list, max_length=512)
    tool_policies: dict[str, ToolPolicy] = Field(default_factory=dict)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, gt=0, le=200_000)
    limits: AgentLimits = AgentLimits()
    memory: MemorySettings = MemorySettings()
    guardrails: Guardrails = Guardrails()

    @field_validator("fallback_models")
    @classmethod
    def _model_ids(cls, value: list[str]) -> list[str]:
        for model in value:
            if "/" not in model:
                raise ValueError(f"model id {model!r} must look like provider/model")
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("tools must not repeat")
        for name in value:
            if not _TOOL_ENTRY.fullmatch(name):
                raise ValueError(
                    f"tool {name!r}: names and patterns hold only letters, digits, '_', '.', "
                    "':', '/', '-' and the wildcard '*' (e.g. 'calculator', 'mcp:github/*')"
                )
        return value

    def policy(self, tool: str) -> ToolPolicy:
        """The policy of `tool` (default: allow)."""
        return self.tool_policies.get(tool, ToolPolicy())

    def spec_hash(self) -> str:
        """Stable hash of the spec, to detect an unchanged re-submission."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# -- agent runs ----------------------------------------------------------------------

RunOutcome = Literal["succeeded", "failed", "cancelled", "limit_reached"]


class RunProgress(Payload):
    """Counters a run carries across steps (and across continue-as-new)."""

    seq: int = 0  # highest message seq in the conversation
    step: int = 0  # model calls made
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_complete: bool = True  # False once any call had an unknown price
    started_at: datetime | None = None


class AgentRunInput(Payload):
    """Input of `AgentRunWorkflow` (references only: texts live in Postgres)."""

    tenant_id: str
    run_id: str
    agent_name: str
    agent_version: int
    mode: RunMode = "normal"
    conversation: bool = False
    inbox_ids: list[int] = []  # user messages to adopt before the first step
    progress: RunProgress | None = None  # set when continuing as new
    plan: "RunPlan | None" = None  # set when continuing as new
    end_requested: bool = False  # set when continuing as new: the user ended the conversation
    depth: int = 0  # 0 for a run started by a user; a child run is its parent's depth + 1
    skill_ids: list[str] = []  # set when continuing as new: skills recalled at the start
    workspace: WorkspaceHost | None = None  # set when continuing as new: where /workspace is


class RunPlan(Payload):
    """What the loop needs from the pinned agent version (small; loaded once per run)."""

    models: list[str]  # primary first, then fallbacks
    tools: list[str]  # every tool the run may call (the agent's patterns expanded)
    policies: dict[str, "ToolPolicy"] = {}  # effective: agent entries over tool defaults
    limits: "AgentLimits"
    agent_tools: dict[str, str] = {}  # tool name -> agent it runs as a child run
    offered: list[str] | None = None  # tools the model sees now, when not all (find_tools)
    memory: "MemorySettings" = MemorySettings()
    # Tools that work on the run's /workspace (sandbox and registered code tools); None in
    # plans from before it (the workflow then uses the built-in names).
    workspace_tools: list[str] | None = None


class AgentRunOutput(Payload):
    """How a run ended."""

    run_id: str
    outcome: RunOutcome
    reason: str | None = None
    result: str | None = None  # the final answer, truncated; the full text is in Postgres
    progress: RunProgress


class StartRunInput(Payload):
    """Input of `start_run`: load the plan, adopt the first messages, mark the run running."""

    tenant_id: str
    run_id: str
    agent_name: str
    agent_version: int
    inbox_ids: list[int]
    first_seq: int
    mode: RunMode = "normal"


class ChildRunInput(Payload):
    """Input of `create_child_run`: an agent called as a tool by the parent run's call."""

    tenant_id: str
    parent_run_id: str
    call_id: str
    agent_name: str
    arguments: str  # the call's JSON arguments: {"task": ...}
    mode: RunMode = "normal"


class ChildRunOutput(Payload):
    """The child run (created once per call), or why there is none."""

    run_id: str = ""
    workflow_id: str = ""
    agent_version: int = 0
    inbox_id: int = 0
    error: str | None = None  # for the model: bad arguments, unknown agent


class AdoptMessagesInput(Payload):
    """Input of `adopt_messages`: move inbox rows into the conversation at given seqs."""

    tenant_id: str
    run_id: str
    inbox_ids: list[int]
    first_seq: int


class RecordEventsInput(Payload):
    """Input of `record_events` (events the workflow itself originates)."""

    tenant_id: str
    run_id: str
    events: list[RunEvent]
    status: Literal["running", "waiting"] | None = None


class FinishRunInput(Payload):
    """Input of `finish_run`."""

    tenant_id: str
    run_id: str
    outcome: RunOutcome
    reason: str | None = None
    result_seq: int | None = None  # the message holding the final answer
    progress: RunProgress


class ToolCallRef(Payload):
    """A tool call the model asked for, by reference (its arguments stay in Postgres)."""

    id: str
    name: str
    index: int
    arguments: str | None = None  # only for the tools the workflow answers itself


class LlmCallInput(Payload):
    """Input of `call_llm`: the conversation is messages 1..upto_seq of the run."""

    tenant_id: str
    run_id: str
    agent_name: str
    agent_version: int
    step: int
    upto_seq: int
    write_seq: int  # where the assistant message goes
    models: list[str]
    tools: list[str]
    budget_remaining_usd: float | None = None


class LlmCallOutput(Payload):
    """What `call_llm` stored and what the loop needs to go on."""

    message_seq: int
    tool_calls: list[ToolCallRef] = []
    text: str | None = None  # truncated preview of the answer
    finish_reason: str | None = None
    model: str
    usage: ModelUsage = ModelUsage()
    cost_usd: float | None = None


class ToolCallInput(Payload):
    """Input of `execute_tool`: run call `call_index` of message `message_seq`."""

    tenant_id: str
    run_id: str
    step: int
    message_seq: int
    call_index: int
    result_seq: int
    mode: RunMode = "normal"
    agent_name: str = ""  # the run's agent version: the activity checks policy itself
    agent_version: int = 0
    approved: bool = False  # a human approved this call (tools that require approval)
    # Results the workflow holds: since `record_tool_result` they go to the store lane,
    # and these are set only by workflows from before it (replayed or in flight).
    denied_reason: str | None = None  # policy/approval said no: record that, do not run
    result_text: str | None = None  # the workflow has the result (ask_human's answer)
    child_run_id: str | None = None  # an agent tool ran as this child run: its answer is the result
    failure: str | None = None  # the call failed for good (retries spent): record this error
    # Set for a call routed to the tools host holding the run's workspace: that host must
    # hold it (else WorkspaceLost); `workspace_reset` notes in the result it is a new one.
    workspace_host: str | None = None
    workspace_reset: bool = False


class ToolResultInput(Payload):
    """Input of `record_tool_result`: store the result the workflow holds for a call.

    Exactly one of the optional fields is set: the call was refused, the workflow has
    its answer, a child run answered it, or it failed for good (retries spent).
    """

    tenant_id: str
    run_id: str
    message_seq: int
    call_index: int
    result_seq: int
    denied_reason: str | None = None
    result_text: str | None = None
    child_run_id: str | None = None
    failure: str | None = None


class ToolCallOutput(Payload):
    """Outcome of one tool call (the full result is message `result_seq`)."""

    result_seq: int
    ok: bool
    error_type: str | None = None
    preview: str = ""


class SubmitMessage(Payload):
    """Signal `submit_message`: a user message stored in the run's inbox."""

    inbox_id: int
    end_conversation: bool = False


class ApprovalDecision(Payload):
    """Update `approve_tool_call`."""

    call_id: str
    approved: bool
    reason: str | None = None
    answer: str | None = None  # the human's answer to an `ask_human` question


class PendingApproval(Payload):
    """A tool call waiting for a human."""

    call_id: str
    tool: str
    deadline: datetime
    question: str | None = None  # set for `ask_human`: answer it with `answer`


RunPhase = Literal[
    "starting",
    "calling_model",
    "running_tools",
    "waiting_for_approval",
    "waiting_for_message",
    "finished",
]


class RunStatus(Payload):
    """Query `status`: live state without reading Postgres."""

    phase: RunPhase
    progress: RunProgress
    pending_approvals: list[PendingApproval] = []
    outcome: RunOutcome | None = None


AgentRunInput.model_rebuild()
RunPlan.model_rebuild()
