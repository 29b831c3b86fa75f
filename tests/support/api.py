"""The API app in process, for tests that talk to it over HTTP."""

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx

from api.main import create_app
from core import tenants
from core.db import Pool
from core.settings import Settings

ClientFor = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]
"""`async with client_for(key) as http:` an HTTP client of the app that sends that key."""


@asynccontextmanager
async def in_process_api(settings: Settings) -> AsyncIterator[ClientFor]:
    """Run the app's lifespan; yield a factory of HTTP clients of it, one per API key."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):

        @asynccontextmanager
        async def client_for(key: str) -> AsyncIterator[httpx.AsyncClient]:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://colony",
                headers={"Authorization": f"Bearer {key}"},
            ) as http:
                yield http

        yield client_for


def stack_settings(
    database_url: str, temporal_address: str, model_url: str, data_dir: Path, **env: str
) -> Settings:
    """Settings of an API and workers on the test stack, on task queues of their own."""
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "OPENAI_BASE_URL": model_url,
        "COLONY_DEFAULT_MODEL": "openai/scripted-model",
        "COLONY_DATA_DIR": str(data_dir),
        "COLONY_TASK_QUEUE_SUFFIX": "-" + uuid.uuid4().hex[:8],
    }
    return Settings(_env_file=None, **{**values, **env})  # type: ignore[call-arg]


async def tenant_keys(pool: Pool, *tenant_ids: str, role: str = "admin") -> dict[str, str]:
    """Each tenant (created if new) and an API key of it, by tenant id."""
    keys = {}
    async with pool.connection() as conn:
        for tenant in tenant_ids:
            await tenants.ensure_tenant(conn, tenant, tenant)
            _, keys[tenant] = await tenants.create_api_key(conn, tenant, "k", role=role)
    return keys
