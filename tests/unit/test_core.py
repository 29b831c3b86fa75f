"""Settings, task queues, errors and search attributes."""

import pytest

from core import search_attributes
from core.errors import NON_RETRYABLE_ERROR_TYPES, ErrorType
from core.providers import LOCAL_MODEL, default_model, describe_provider, endpoint_of
from core.queues import TaskQueue
from tests.conftest import make_settings
from workers.registry import LANES, parse_lanes


def test_defaults_point_at_the_embedded_stack() -> None:
    s = make_settings(COLONY_DATA_DIR="/tmp/x")
    assert s.effective_temporal_address == "127.0.0.1:7233"
    assert s.effective_database_url == "postgresql://postgres@127.0.0.1:5433/colony"
    assert s.effective_api_url == "http://127.0.0.1:8000"
    assert s.effective_temporal_ui_url == "http://localhost:8233"
    assert s.workflow_ui_link("run-1") == "http://localhost:8233/namespaces/default/workflows/run-1"


def test_external_services_replace_the_embedded_ones() -> None:
    s = make_settings(
        TEMPORAL_ADDRESS="temporal:7233",
        TEMPORAL_NAMESPACE="prod",
        DATABASE_URL="postgresql://u:p@db/colony",
        COLONY_API_HOST="0.0.0.0",
        COLONY_API_PORT=9000,
    )
    assert s.effective_temporal_address == "temporal:7233"
    assert s.effective_database_url == "postgresql://u:p@db/colony"
    # Binding to all interfaces still means clients talk to loopback.
    assert s.effective_api_url == "http://127.0.0.1:9000"
    # External Temporal: no UI link unless one is configured.
    assert s.workflow_ui_link("w") is None
    s2 = make_settings(TEMPORAL_ADDRESS="t:7233", COLONY_TEMPORAL_UI_URL="https://ui.example/")
    assert s2.workflow_ui_link("w") == "https://ui.example/namespaces/default/workflows/w"


def test_secrets_do_not_leak_into_repr() -> None:
    s = make_settings(OPENAI_API_KEY="sk-very-secret", DATABASE_URL="postgresql://u:hunter2@db/x")
    assert "sk-very-secret" not in repr(s)
    assert "hunter2" not in repr(s)


def test_task_queues_and_lanes() -> None:
    assert TaskQueue.from_lane("llm") is TaskQueue.LLM
    assert [q.lane for q in TaskQueue] == ["orchestration", "llm", "tools", "memory"]
    with pytest.raises(ValueError, match="known lanes: orchestration, llm, tools, memory"):
        TaskQueue.from_lane("gpu")
    assert parse_lanes(["all"]) == list(TaskQueue)
    assert parse_lanes(["llm,tools", "llm"]) == [TaskQueue.LLM, TaskQueue.TOOLS]
    with pytest.raises(ValueError):
        parse_lanes([""])
    assert set(LANES) == set(TaskQueue)


def test_error_types_split_into_retryable_and_not() -> None:
    assert ErrorType.RATE_LIMITED.retryable
    assert not ErrorType.AUTH_FAILED.retryable
    assert "AuthFailed" in NON_RETRYABLE_ERROR_TYPES
    assert "RateLimited" not in NON_RETRYABLE_ERROR_TYPES


def test_search_attribute_definitions_for_the_dev_server() -> None:
    assert search_attributes.cli_definitions() == [
        "ColonyTenant=Keyword",
        "ColonyAgent=Keyword",
        "ColonyAgentVersion=Int",
        "ColonyKind=Keyword",
        "ColonyStatus=Keyword",
    ]


def test_default_model_resolution() -> None:
    assert default_model(make_settings()) == LOCAL_MODEL
    assert default_model(make_settings(OPENAI_API_KEY="k")).startswith("openai/")
    assert default_model(make_settings(ANTHROPIC_API_KEY="k", OPENAI_API_KEY="k")).startswith(
        "anthropic/"
    )
    assert default_model(make_settings(COLONY_DEFAULT_MODEL="ollama/llama3")) == "ollama/llama3"
    status = describe_provider(make_settings(COLONY_DEFAULT_MODEL="anthropic/claude"))
    assert not status.configured and "ANTHROPIC_API_KEY" in status.detail
    scripted = make_settings(OPENAI_BASE_URL="http://h/v1/", COLONY_DEFAULT_MODEL="openai/x")
    assert endpoint_of(scripted, "openai/x") == ("http://h/v1", None)


def test_embedded_temporal_polls_its_queues_on_demand() -> None:
    from workers.temporal_server import EMBEDDED_DYNAMIC_CONFIG, server_argv

    def values(argv: list[str]) -> dict[str, str]:
        pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--dynamic-config-value"]
        return dict(p.split("=", 1) for p in pairs)

    argv = server_argv(port=1, ui_port=None, namespace="default", db_file=None)
    assert values(argv)["history.transferProcessorMaxPollRPS"] == "1000"
    assert set(EMBEDDED_DYNAMIC_CONFIG) <= set(values(argv))
    custom = server_argv(
        port=1,
        ui_port=None,
        namespace="default",
        db_file=None,
        dynamic_config={"history.transferProcessorMaxPollRPS": "50", "limit.x": "1"},
    )
    assert values(custom)["history.transferProcessorMaxPollRPS"] == "50"
    assert values(custom)["limit.x"] == "1"
