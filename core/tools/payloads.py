"""Tool payloads other domains embed: an agent's policy for one tool."""

from typing import Literal

from pydantic import Field

from core.specs import Spec

PolicyMode = Literal["allow", "deny", "requires_approval"]


class ToolPolicy(Spec):
    """What happens when the agent calls a tool."""

    mode: PolicyMode = "allow"
    approval_timeout_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
