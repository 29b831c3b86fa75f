"""`colony doctor`: every component's status, with the fix for what is not ready."""

import asyncio

import httpx
from temporalio.client import Client

from activities import embeddings, sandbox
from core import health
from core.providers import ping_provider
from core.settings import Settings

ComponentStatus = health.ComponentStatus


async def _model_provider(settings: Settings) -> ComponentStatus:
    status = await ping_provider(settings)
    fix = "" if status.configured else status.detail
    return ComponentStatus(
        "model provider", status.configured, f"{status.default_model}: {status.detail}", fix
    )


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


async def diagnose(settings: Settings) -> list[ComponentStatus]:
    """Run every check concurrently; order of the result is the display order."""
    timed = health.timed
    singles = await asyncio.gather(
        timed("temporal", lambda: health.check_temporal(settings)),
        timed("temporal-ui", lambda: health.check_temporal_ui(settings)),
        timed("postgres", lambda: health.check_postgres(settings)),
        timed("qdrant", lambda: health.check_qdrant(settings)),
        timed("model provider", lambda: _model_provider(settings)),
        timed("embedding model", _embedding_model, limit=30),
        timed("sandbox", lambda: _sandbox(settings), limit=15),
        timed("api", lambda: _api(settings)),
    )
    lanes = await _workers(settings)
    return [*singles, *lanes]
