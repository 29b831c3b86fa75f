"""Bootstrapping an agent from what its tenant already knows (`POST /v1/agents/bootstrap`).

A draft, never a live agent: the evidence is gathered on the memory lane
(`activities.runs.bootstrap`) and turned into an `AgentSpec` here, by a deterministic
template, so a person reviews it and creates it with `POST /v1/agents`. What goes in:

    lessons, skills  the tenant's reflexions and skills closest to the objective, recalled
                     as the new agent would recall them: its own (when the name is an
                     existing agent's) plus the tenant's `shared` ones, or its own alone
                     when the tenant is `isolated` (`core.tenants.SharingMode`)
    tools            built-in and registered tools that tool search ranks as relevant
                     (`MIN_TOOL_SIMILARITY`) and that have a good live record: at least
                     `MIN_PROVEN_CALLS` calls of which at least `MIN_SUCCESS_RATE`
                     succeeded. Untried and failing tools are listed as evidence, not used
    similar agents   the tenant's agents whose name and instructions are closest to the
                     objective (`MIN_AGENT_SIMILARITY`); the closest lends its model and a
                     quoted excerpt of its instructions

The instructions are a template (objective, playbook, tools, the closest agent's
excerpt), not a model's prose: the embedded default model (SmolLM2-135M) is too small to
write instructions worth reviewing, and a template is reproducible and says exactly
where each line came from. Nothing of another tenant is read at any step.
"""

import re
from typing import Final, Literal

from pydantic import Field

from core.memory.payloads import MemoryHit, MemoryScope
from core.payloads import Payload
from core.runs.payloads import AGENT_NAME_PATTERN, AgentSpec, MemorySettings
from core.tenants import SharingMode
from core.tools.search import ToolHit
from core.tools.store import ToolStats

MAX_OBJECTIVE_CHARS: Final = 4000
MIN_PROVEN_CALLS: Final = 5
"""A tool needs this many live calls before its record counts (fewer: untried)."""
MIN_SUCCESS_RATE: Final = 0.8
"""...and at least this share of them succeeded to be proven."""
MIN_TOOL_SIMILARITY: Final = 0.3
"""Tool search score (cosine plus the name boost) below which a tool is not relevant."""
MIN_MEMORY_SIMILARITY: Final = 0.3
"""Cosine below which a lesson or skill is not about the objective (recall's run default)."""
MIN_AGENT_SIMILARITY: Final = 0.3
"""Cosine below which another agent is not similar."""
TOOL_CANDIDATES: Final = 10
MAX_LESSONS: Final = 5
MAX_SKILLS: Final = 3
MAX_SIMILAR_AGENTS: Final = 3
MAX_AGENTS_COMPARED: Final = 200
"""Agents embedded per request, at most (the tenant's first by name)."""
AGENT_TEXT_CHARS: Final = 1000
"""Of an agent's instructions, what is embedded to compare it with the objective."""
EXCERPT_CHARS: Final = 600
"""Of the closest agent's instructions, what the draft quotes."""
_STOPWORDS: Final = frozenset(
    "a an and the of to for in on at by with from into about is are be it its this that"
    " these those my our your their me us you i we they them please can could would should"
    " will shall do does make get help who what when where which how all any each".split()
)
_WORD = re.compile(r"[a-z0-9]+")


class BootstrapInput(Payload):
    """Input of `draft_agent`: what the new agent is for, and optionally its name."""

    tenant_id: str
    objective: str = Field(min_length=1, max_length=MAX_OBJECTIVE_CHARS)
    name: str | None = Field(default=None, pattern=AGENT_NAME_PATTERN)


class MemoryEvidence(Payload):
    """A lesson (reflexion) or skill the draft's playbook holds."""

    id: str
    kind: Literal["reflexion", "skill"]
    content: str
    similarity: float
    agent_name: str
    scope: MemoryScope
    reward: float | None = None
    uses: int = 0
    successes: int = 0


class ToolEvidence(Payload):
    """A tool relevant to the objective, with its live record; `proven` ones are in the spec."""

    name: str
    kind: str = ""
    description: str = ""
    similarity: float
    calls: int = 0
    success_rate: float | None = None
    proven: bool = False


class AgentEvidence(Payload):
    """An agent of the tenant similar to the objective, at its latest version."""

    name: str
    version: int
    model: str
    similarity: float
    instructions: str = Field(description=f"the first {EXCERPT_CHARS} characters")


class BootstrapEvidence(Payload):
    """Everything the draft was made from."""

    lessons: list[MemoryEvidence] = Field(default_factory=list)
    skills: list[MemoryEvidence] = Field(default_factory=list)
    tools: list[ToolEvidence] = Field(default_factory=list)
    similar_agents: list[AgentEvidence] = Field(default_factory=list)
    sharing: SharingMode = "shared"


class BootstrapOutput(Payload):
    """A draft agent: its name and spec (not stored), the evidence and why."""

    name: str
    spec: AgentSpec
    evidence: BootstrapEvidence = BootstrapEvidence()
    rationale: str = ""
    exists: bool = False  # the name is an existing agent: creating it adds a version


def draft_name(objective: str, taken: set[str]) -> str:
    """A name for a new agent from the objective's first content words, not in `taken`."""
    words = [w for w in _WORD.findall(objective.lower()) if w not in _STOPWORDS][:4]
    base = "-".join(words)[:60].strip("-") or "agent"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def proven(stats: ToolStats | None) -> bool:
    """Whether a tool's live record is good enough for a draft (see the module docstring)."""
    if stats is None or stats.calls < MIN_PROVEN_CALLS:
        return False
    return stats.successes / stats.calls >= MIN_SUCCESS_RATE


def tool_evidence(hits: list[ToolHit], stats: dict[str, ToolStats]) -> list[ToolEvidence]:
    """Relevant hits with their records: proven first, each group by similarity."""
    out = [
        ToolEvidence(
            name=hit.name,
            kind=hit.kind,
            description=hit.description,
            similarity=round(hit.score, 4),
            calls=stats[hit.name].calls if hit.name in stats else 0,
            success_rate=(
                round(stats[hit.name].successes / stats[hit.name].calls, 4)
                if hit.name in stats and stats[hit.name].calls
                else None
            ),
            proven=proven(stats.get(hit.name)),
        )
        for hit in hits
        if hit.score >= MIN_TOOL_SIMILARITY
    ]
    return sorted(out, key=lambda t: (not t.proven, -t.similarity, t.name))


def memory_evidence(hits: list[MemoryHit]) -> tuple[list[MemoryEvidence], list[MemoryEvidence]]:
    """Recalled lessons and skills, each cut to its maximum."""
    found = [
        MemoryEvidence(
            id=h.id,
            kind=h.kind,
            content=" ".join(h.content.split()),
            similarity=round(h.score, 4),
            agent_name=h.agent_name,
            scope=h.scope,
            reward=h.reward,
            uses=h.uses,
            successes=h.successes,
        )
        for h in hits
        if h.kind in ("reflexion", "skill") and h.score >= MIN_MEMORY_SIMILARITY
    ]
    lessons = [m for m in found if m.kind == "reflexion"][:MAX_LESSONS]
    skills = [m for m in found if m.kind == "skill"][:MAX_SKILLS]
    return lessons, skills


def draft(
    name: str,
    objective: str,
    evidence: BootstrapEvidence,
    *,
    default_model: str,
    exists: bool = False,
) -> BootstrapOutput:
    """The draft spec from the evidence, by template, and the rationale for it."""
    tools = [t for t in evidence.tools if t.proven]
    closest = evidence.similar_agents[0] if evidence.similar_agents else None
    spec = AgentSpec(
        instructions=instructions(name, objective, evidence),
        model=closest.model if closest else default_model,
        tools=[t.name for t in tools],
        memory=MemorySettings(
            enabled=True, scope="shared" if evidence.sharing == "shared" else "private"
        ),
    )
    return BootstrapOutput(
        name=name,
        spec=spec,
        evidence=evidence,
        rationale=rationale(evidence, closest, default_model, exists, name),
        exists=exists,
    )


def instructions(name: str, objective: str, evidence: BootstrapEvidence) -> str:
    """The draft's instructions: objective, playbook, tools, the closest agent's excerpt."""
    parts = [f"You are {name}. Your job: {' '.join(objective.split())}"]
    playbook = [f"- {m.content}" for m in evidence.lessons]
    playbook += [f"- Skill: {m.content}" for m in evidence.skills]
    if playbook:
        parts.append(
            "Playbook (lessons and skills from earlier runs in this workspace; apply those "
            "that fit the request):\n" + "\n".join(playbook)
        )
    tools = [t for t in evidence.tools if t.proven]
    if tools:
        parts.append(
            "Tools that worked well for this kind of task:\n"
            + "\n".join(f"- {t.name}: {t.description}" for t in tools)
        )
    if evidence.similar_agents:
        closest = evidence.similar_agents[0]
        parts.append(
            f"The agent {closest.name} does similar work; its instructions begin "
            f'(adapt what applies):\n"""\n{closest.instructions}\n"""'
        )
    parts.append(
        "Use a tool when it gives a better answer than guessing. If you cannot finish, "
        "say what is missing."
    )
    return "\n\n".join(parts)


def rationale(
    evidence: BootstrapEvidence,
    closest: AgentEvidence | None,
    default_model: str,
    exists: bool,
    name: str,
) -> str:
    """Why the draft looks as it does, including what was left out."""
    used = [t for t in evidence.tools if t.proven]
    left = [t for t in evidence.tools if not t.proven]
    lines = [
        f"A draft, not created: review it, then POST it to /v1/agents (`colony agents "
        f"create`). Sharing mode {evidence.sharing}: "
        + (
            "lessons and skills come from this agent's own memories and the tenant's shared ones."
            if evidence.sharing == "shared"
            else "lessons and skills come only from this agent's own memories."
        ),
        f"Playbook: {len(evidence.lessons)} lesson(s), {len(evidence.skills)} skill(s) with "
        f"similarity >= {MIN_MEMORY_SIMILARITY}.",
        f"Tools: {', '.join(t.name for t in used) or 'none'} (relevant, similarity >= "
        f"{MIN_TOOL_SIMILARITY}, and proven: >= {MIN_PROVEN_CALLS} calls, >= "
        f"{MIN_SUCCESS_RATE:.0%} succeeded).",
    ]
    if left:
        lines.append(
            "Left out: "
            + "; ".join(
                f"{t.name} (untried: {t.calls} call(s))"
                if t.calls < MIN_PROVEN_CALLS
                else f"{t.name} ({t.success_rate or 0:.0%} of {t.calls} calls succeeded)"
                for t in left
            )
            + "."
        )
    lines.append(
        f"Model: {closest.model}, as the most similar agent {closest.name} "
        f"(similarity {closest.similarity:.2f})."
        if closest
        else f"Model: the default {default_model} (no similar agent)."
    )
    if exists:
        lines.append(f"An agent named {name} exists: creating this adds a version of it.")
    return "\n".join(lines)
