"""What every HTTP request body shares."""

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    """Request bodies reject unknown fields, so typos are errors, not silent no-ops."""

    model_config = ConfigDict(extra="forbid")
