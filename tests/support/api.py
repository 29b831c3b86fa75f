"""The API app in process, for tests that talk to it over HTTP."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx

from api.main import create_app
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
