"""Generated requests for every operation of /openapi.json (schemathesis), against the API
served over HTTP with real Postgres, Temporal and workers (the scripted model answers).

Every answer must be no 5xx, a documented status, the documented content type, and a
body that matches its documented schema. Generation is deterministic (fixed seed,
derandomized), with a bounded number of examples per operation; `-m slow` runs more.
"""

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
import uvicorn
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from api.main import create_app
from core import db, temporal
from core.db import Pool
from core.settings import Settings
from tests.support.api import stack_settings, tenant_keys
from tests.support.model_server import ScriptedModelServer, reply
from tests.support.services import TemporalServer
from tests.support.workers import running_workers

TENANT = "t-schemathesis"
OWN_LIMITS = "t-schemathesis-limits"
"""The tenant whose limits the generated `PUT /v1/tenant/limits` sets."""
EXAMPLES = int(os.environ.get("COLONY_SCHEMATHESIS_EXAMPLES", "10"))
"""Examples per operation in the fuzzing phase (the coverage phase adds its own)."""
STATEFUL_SEQUENCES = int(os.environ.get("COLONY_SCHEMATHESIS_SEQUENCES", "50"))
"""Sequences of linked calls in the stateful test."""
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
NOT_FUZZED = r"^/(mcp|codec)(/|$)"
"""Other protocols mounted on the app (MCP, the codec server), not described by OpenAPI."""


class ServedApi(threading.Thread):
    """The API (uvicorn, HTTP on 127.0.0.1) and the workers, in a thread and loop of their own.

    Schemathesis calls are blocking, so the app cannot share the test's event loop.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="schemathesis-api", daemon=True)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._settings = settings
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        )
        self.failure: BaseException | None = None

    def run(self) -> None:
        """Serve until `stop`."""
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.failure = exc

    async def _serve(self) -> None:
        settings = self._settings
        client = await temporal.connect(settings)
        async with (
            db.open_pool(settings.effective_database_url, min_size=1, max_size=10) as pool,
            running_workers(client, settings, pool, suffix=settings.task_queue_suffix, cache=True),
        ):
            await self._server.serve(sockets=[self._socket])

    def wait_started(self, timeout: float) -> None:
        """Block until the server accepts requests (or raise why it did not)."""
        for _ in range(int(timeout * 10)):
            if self._server.started:
                return
            if not self.is_alive():
                raise RuntimeError("the API did not start") from self.failure
            threading.Event().wait(0.1)
        raise TimeoutError(f"the API did not start in {timeout} s")

    def stop(self) -> None:
        """Ask uvicorn to finish and wait for the thread."""
        self._server.should_exit = True
        self.join(30)


@pytest.fixture(scope="module")
async def keys(pool: Pool) -> dict[str, str]:
    return await tenant_keys(pool, TENANT, OWN_LIMITS)


@pytest.fixture(scope="module")
def served(
    database_url: str, temporal: TemporalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedApi]:
    with ScriptedModelServer(default=reply("done")) as model:
        settings = stack_settings(
            database_url, temporal.address, model.base_url, tmp_path_factory.mktemp("data")
        )
        api = ServedApi(settings)
        api.start()
        try:
            api.wait_started(120)
            yield api
        finally:
            api.stop()


def config(examples: int, *, coverage: bool) -> SchemathesisConfig:
    """Deterministic generation and our four checks; `coverage` adds schemathesis' phase of
    boundary values of every parameter and property (thorough, and slow)."""
    return SchemathesisConfig.from_dict({
        "seed": 15,
        "generation": {"max-examples": examples, "deterministic": True, "database": "none"},
        "phases": {"coverage": {"enabled": coverage}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        # Discovery of generated MCP servers: answer at once, do not wait for it.
        "parameters": {"query.wait": 0},
        "request-timeout": 60,
    })  # fmt: skip


def load(examples: int, *, coverage: bool) -> Any:
    """The app's own document, built without any service; the calls go to `served`."""
    document = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    return schemathesis.openapi.from_dict(
        document, config=config(examples, coverage=coverage)
    ).exclude(path_regex=NOT_FUZZED)


quick = load(EXAMPLES, coverage=False)
thorough = load(5 * EXAMPLES, coverage=True)


def call(case: Case, served: ServedApi, keys: dict[str, str]) -> None:
    """Send the case as a tenant's admin and check the answer."""
    # Generated limits (a request a day) would leave every later case a 429.
    tenant = OWN_LIMITS if case.path == "/v1/tenant/limits" else TENANT
    headers = {"Authorization": f"Bearer {keys[tenant]}"}
    case.call_and_validate(base_url=served.url, headers=headers)


# Schemathesis' own strategies use `random` (a deprecation hypothesis warns about).
RANDOM_IN_STRATEGIES = "ignore:Do not use the `random` module inside strategies"


@pytest.mark.filterwarnings(RANDOM_IN_STRATEGIES)
@quick.parametrize()
def test_every_operation_answers_as_documented(
    case: Case, served: ServedApi, keys: dict[str, str]
) -> None:
    call(case, served, keys)


@pytest.mark.filterwarnings(RANDOM_IN_STRATEGIES)
@pytest.mark.timeout(300)
def test_sequences_of_linked_operations_answer_as_documented(
    served: ServedApi, database_url: str
) -> None:
    """Stateful: schemathesis links operations by their parameters and responses (a created
    agent's name into `/v1/agents/{name}/...`) and walks sequences of them, so the routes
    of resources that exist are reached too, not only their 404s.

    Each sequence is a new tenant's, so it starts from nothing whatever ran before; a
    sequence is not shrunk (replayed against a changed API it would not mean the same).
    """
    state_machine = quick.as_state_machine()
    tenants_made = iter(range(1_000_000))

    class Sequences(state_machine):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            tenant = f"{TENANT}-{next(tenants_made)}"
            self.key = asyncio.run(new_key(database_url, tenant))

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": served.url, "headers": {"Authorization": f"Bearer {self.key}"}}

    Sequences.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SEQUENCES, stateful_step_count=10, deadline=None,
            derandomize=True, database=None, phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )  # fmt: skip


async def new_key(database_url: str, tenant: str) -> str:
    """An admin key of a new tenant (from the test's thread, outside any running loop)."""
    async with db.open_pool(database_url, min_size=1, max_size=1) as pool:
        return (await tenant_keys(pool, tenant))[tenant]


@pytest.mark.slow
@pytest.mark.filterwarnings(RANDOM_IN_STRATEGIES)
@thorough.parametrize()
def test_every_operation_answers_as_documented_thoroughly(
    case: Case, served: ServedApi, keys: dict[str, str]
) -> None:
    call(case, served, keys)
