"""HTTP bodies of the safety log."""

from datetime import datetime

from pydantic import BaseModel, Field

from core.runs.guardrails import GuardrailAction, GuardrailStage


class SafetyEntryPublic(BaseModel):
    """One guardrail trigger."""

    id: int
    agent_name: str
    agent_version: int
    run_id: str
    guardrail: str = Field(description="topic:NAME, pii, moderation or output_size")
    stage: GuardrailStage
    action: GuardrailAction
    detail: str = Field(description="what matched, in words: categories, kinds, counts")
    excerpt: str = Field(description="the start of the text, matches and personal data masked")
    created_at: datetime
