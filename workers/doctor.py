"""`colony doctor`: every component's status, with the fix for what is not ready.

When a stack runs on the data dir, the checks use the configuration its `colony up`
recorded in `stack.json` (what its workers run with), not the environment of the shell
running the doctor, and say where the two differ. Secrets are not recorded, only which
key variables are set: a key the workers have and this shell lacks counts as present.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio.client import Client

from activities.providers import embeddings
from activities.tools import sandbox
from core import health
from core.providers import ProviderStatus, describe_provider, endpoint_of, ping_provider
from core.settings import Settings
from workers.stack import (
    KEY_VARIABLES,
    StackState,
    WorkerConfig,
    running_stack_state,
    without_credentials,
)

ComponentStatus = health.ComponentStatus

_PROVIDER_KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class RunningStack:
    """The stack running on the data dir, as its `colony up` recorded it."""

    state: StackState
    settings: Settings  # this shell's settings overlaid with the stack's configuration
    keys_unseen: frozenset[str]  # key variables set for the workers but not in this shell
    differences: list[str]  # where this shell's environment differs, one sentence each


@dataclass(frozen=True)
class Diagnosis:
    """The components in display order, and the running stack they were checked against."""

    components: list[ComponentStatus]
    stack: RunningStack | None = None


def running_stack(settings: Settings) -> RunningStack | None:
    """The stack running on the data dir of `settings`, or None when none runs."""
    state = running_stack_state(settings.data_path)
    if state is None:
        return None
    update: dict[str, Any] = {
        "api_url": state.api_url,
        "temporal_address": state.temporal_address,
        "temporal_namespace": state.namespace,
        "temporal_ui_url": state.temporal_ui_url,
    }
    unseen: set[str] = set()
    config = state.config
    if config is not None:
        update |= {
            "default_model": config.default_model,
            # Recorded without credentials: keep this shell's URL when it is the same one.
            "openai_base_url": _same_or(config.openai_base_url, settings.openai_base_url),
            "local_model_url": config.local_model_url,
            "task_queue_suffix": config.task_queue_suffix,
            "qdrant_url": _same_or(config.qdrant_url, settings.qdrant_url),
        }
        if config.postgres_port is not None:
            update |= {"database_url": None, "postgres_port": config.postgres_port}
        for name, attr in KEY_VARIABLES.items():
            if name not in config.keys_set:
                update[attr] = None
            elif getattr(settings, attr) is None:
                update[attr] = SecretStr("")  # present for the workers; the value stays theirs
                unseen.add(name)
    return RunningStack(
        state, settings.model_copy(update=update), frozenset(unseen), _differences(settings, state)
    )


def _same_or(recorded: str | None, own: str | None) -> str | None:
    return own if own is not None and without_credentials(own) == recorded else recorded


def _differences(settings: Settings, state: StackState) -> list[str]:
    pairs = [
        ("API", state.api_url, settings.effective_api_url),
        (
            "Temporal",
            f"{state.temporal_address}, namespace {state.namespace}",
            f"{settings.effective_temporal_address}, namespace {settings.temporal_namespace}",
        ),
    ]
    theirs, ours = state.config, WorkerConfig.of(settings)
    if theirs is None:
        return [
            *_sentences(pairs),
            "model: the running stack did not record its configuration (an older `colony up`); "
            "the model provider is judged by this shell's environment",
        ]
    pairs += [
        ("model", _route(theirs), _route(ours)),
        ("key variables", ", ".join(theirs.keys_set) or "none", ", ".join(ours.keys_set) or "none"),
        ("task queue suffix", theirs.task_queue_suffix or "none", ours.task_queue_suffix or "none"),
        ("Postgres", _postgres(theirs), _postgres(ours)),
        ("Qdrant", theirs.qdrant_url or "embedded", ours.qdrant_url or "embedded"),
    ]
    return _sentences(pairs)


def _sentences(pairs: list[tuple[str, str, str]]) -> list[str]:
    return [
        f"{what}: the running stack uses {stack}; this shell's environment would use {shell}"
        for what, stack, shell in pairs
        if stack != shell
    ]


def _route(config: WorkerConfig) -> str:
    """The default model and what reaches it, e.g. `openai/x via OPENAI_BASE_URL=...`."""
    model = config.default_model
    provider = model.split("/", 1)[0]
    if provider == "local":
        return f"{model} via the local model server at {config.local_model_url}"
    key = _PROVIDER_KEYS.get(provider)
    if provider == "openai" and config.openai_base_url:
        has_key = "OPENAI_API_KEY set" if key in config.keys_set else "no OPENAI_API_KEY"
        return f"{model} via OPENAI_BASE_URL={config.openai_base_url} ({has_key})"
    if key is None:
        return model
    return f"{model} via {key}" if key in config.keys_set else f"{model} ({key} not set)"


def _postgres(config: WorkerConfig) -> str:
    if config.postgres_port is None:
        return "DATABASE_URL"
    return f"the embedded server on port {config.postgres_port}"


async def check_model_provider(settings: Settings, stack: RunningStack | None) -> ComponentStatus:
    """The provider of the default model the running stack uses (else this shell's)."""
    own = settings if stack is None else stack.settings
    described = describe_provider(own)
    key = _PROVIDER_KEYS.get(described.default_model.split("/", 1)[0])
    if stack is None or key not in stack.keys_unseen:
        status = await ping_provider(own)
    else:
        status = await _answers_without_key(own, described, key)
    fix = "" if status.configured else status.detail
    if stack is not None and not described.configured:
        fix = f"{described.detail} where `colony up` runs, then restart it"
    return ComponentStatus(
        "model provider", status.configured, f"{status.default_model}: {status.detail}", fix
    )


async def _answers_without_key(
    settings: Settings, described: ProviderStatus, key: str
) -> ProviderStatus:
    """The workers hold `key` and this shell does not: the endpoint answering is the check."""
    note = (
        f"the running stack's {key} is not in this shell's environment, "
        "so the key itself was not checked"
    )
    endpoint = endpoint_of(settings, described.default_model)
    if endpoint is None:
        return ProviderStatus(described.default_model, True, f"{described.detail}; {note}")
    base = endpoint[0]
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{base}/models")
    except httpx.HTTPError as exc:
        return ProviderStatus(described.default_model, False, f"{base} unreachable: {exc!r}")
    # Without the key, 401/403 is the expected answer of a server that is up.
    ok = response.is_success or response.status_code in (401, 403)
    detail = f"{base}/models answered HTTP {response.status_code}"
    if ok:
        detail = f"{described.detail}; {base} answers; {note}"
    return ProviderStatus(described.default_model, ok, detail)


async def _embedding_model() -> ComponentStatus:
    def embed_once() -> ComponentStatus:
        vector = embeddings.MiniLmEmbedder().embed(["colony doctor"])
        return ComponentStatus(
            "embedding model", vector.shape == (1, embeddings.DIMENSION),
            f"{embeddings.MODEL_ID}, dim {vector.shape[1]} (onnxruntime, local files)",
        )  # fmt: skip

    try:
        return await asyncio.to_thread(embed_once)
    except Exception as exc:
        return ComponentStatus("embedding model", False, str(exc), "make install")


async def _sandbox(settings: Settings) -> ComponentStatus:
    status = await asyncio.to_thread(sandbox.probe, settings)
    fix = "" if status.ok else "apt-get install bubblewrap (or set E2B_API_KEY)"
    return ComponentStatus("sandbox", status.ok, f"{status.backend}: {status.detail}", fix)


async def _api(settings: Settings) -> ComponentStatus:
    url = settings.effective_api_url + "/healthz"
    async with httpx.AsyncClient(timeout=3) as http:
        try:
            response = await http.get(url)
        except httpx.HTTPError as exc:
            return ComponentStatus(
                "api",
                False,
                f"{url}: {exc!r}",
                "start the stack (`colony up`) or set COLONY_API_URL",
            )
    ok = response.status_code == 200
    detail = f"{settings.effective_api_url} (healthz {response.json().get('status', response.status_code)})"
    return ComponentStatus(
        "api", ok, detail, "" if ok else "see `colony up` output / .colony/logs/api.log"
    )


async def _workers(settings: Settings) -> list[ComponentStatus]:
    try:
        client = await Client.connect(
            settings.effective_temporal_address, namespace=settings.temporal_namespace
        )
        return await health.check_workers(settings, client)
    except Exception as exc:
        return [
            ComponentStatus(
                "workers", False, f"cannot ask Temporal: {exc}", "start the stack (`colony up`)"
            )
        ]


async def diagnose(settings: Settings) -> Diagnosis:
    """Run every check concurrently, against the running stack's configuration if one runs."""
    stack = running_stack(settings)
    used = settings if stack is None else stack.settings
    timed = health.timed
    singles = await asyncio.gather(
        timed("temporal", lambda: health.check_temporal(used)),
        timed("temporal-ui", lambda: health.check_temporal_ui(used)),
        timed("postgres", lambda: health.check_postgres(used)),
        timed("qdrant", lambda: health.check_qdrant(used)),
        timed("model provider", lambda: check_model_provider(settings, stack)),
        timed("embedding model", _embedding_model, limit=30),
        timed("sandbox", lambda: _sandbox(used), limit=15),
        timed("api", lambda: _api(used)),
    )
    lanes = await _workers(used)
    return Diagnosis([*singles, *lanes], stack)
