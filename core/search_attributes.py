"""Custom search attributes Colony registers in Temporal and sets on every workflow.

They make runs filterable in the Temporal UI (`ColonyTenant = "local" AND ColonyKind = "run"`).
"""

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

TENANT = SearchAttributeKey.for_keyword("ColonyTenant")
AGENT = SearchAttributeKey.for_keyword("ColonyAgent")
AGENT_VERSION = SearchAttributeKey.for_int("ColonyAgentVersion")
KIND = SearchAttributeKey.for_keyword("ColonyKind")
STATUS = SearchAttributeKey.for_keyword("ColonyStatus")

ALL = (TENANT, AGENT, AGENT_VERSION, KIND, STATUS)

_CLI_TYPE_NAMES = {"KEYWORD": "Keyword", "INT": "Int", "TEXT": "Text", "BOOL": "Bool"}


def cli_definitions() -> list[str]:
    """`NAME=Type` pairs for `temporal server start-dev --search-attribute`."""
    return [f"{key.name}={_CLI_TYPE_NAMES[key.indexed_value_type.name]}" for key in ALL]


def for_run(
    tenant_id: str, agent: str, version: int | None, kind: str = "run"
) -> TypedSearchAttributes:
    """The attributes a run starts with (its status is `running` until it ends).

    `version` is None when it is not known at start: a scheduled evolution cycle takes
    the agent's live version when it fires.
    """
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(TENANT, tenant_id),
        SearchAttributePair(AGENT, agent),
        SearchAttributePair(KIND, kind),
        SearchAttributePair(STATUS, "running"),
    ]
    if version is not None:
        pairs.insert(2, SearchAttributePair(AGENT_VERSION, version))
    return TypedSearchAttributes(pairs)
