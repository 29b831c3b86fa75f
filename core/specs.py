"""Models that are both checked input and part of workflow payloads.

An agent's limits, a swarm's settings, a tool's policy: the API validates them from a
request, where an unknown field is a typo and an error. The same models travel inside
workflow and activity payloads, where an unknown field is one that a newer Colony
added: an older worker (during a rolling deploy), a continue-as-new input or a replay
must accept it. So a `Spec` forbids unknown fields, except when it is decoded from a
Temporal payload (`core.temporal`'s converter validates with `PAYLOAD_CONTEXT`): then
they are dropped.
"""

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

FROM_PAYLOAD: Final = "colony.from_payload"
PAYLOAD_CONTEXT: Final[dict[str, Any]] = {FROM_PAYLOAD: True}
"""The validation context of a value decoded from a Temporal payload."""


class Spec(BaseModel):
    """Immutable; unknown fields are errors, but dropped when decoded from a payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _newer_fields_in_payloads(cls, data: Any, info: ValidationInfo) -> Any:
        if not (isinstance(data, dict) and info.context and info.context.get(FROM_PAYLOAD)):
            return data
        known = set(cls.model_fields) | {
            field.alias for field in cls.model_fields.values() if field.alias
        }
        return {key: value for key, value in data.items() if key in known}
