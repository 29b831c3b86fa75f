"""The image builds from deploy/Dockerfile and really starts (deploy/build-image.sh):
`colony --help`, `colony migrate` against a real Postgres, `colony api` answering
/healthz, and a worker serving every lane that exits 0 on SIGTERM. Without a Docker engine:
buildah (chroot isolation) as root, on a base image bootstrapped from Debian packages; the
image runs with a read-only root filesystem, as deploy/k8s runs it."""

import asyncio
import os
import shutil
import socket
import subprocess

import pytest

from core import db
from tests.deploy.colony_config import ROOT
from tests.support.services import PostgresServer, TemporalServer, fresh_database

SCRIPT = ROOT / "deploy" / "build-image.sh"
IMAGE = "localhost/colony:test"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _missing_tools() -> str | None:
    if shutil.which("buildah") is None:
        return "buildah is not installed (apt-get install buildah mmdebstrap)"
    if not os.environ.get("PYTHON_IMAGE") and shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed and PYTHON_IMAGE is unset (no base image)"
    if os.geteuid() != 0:
        return "building with buildah and checking in a chroot need root"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _script(command: str, env: dict[str, str], timeout: float) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), command,
        env={**os.environ, "COLONY_IMAGE": IMAGE, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.terminate()  # the script then stops what it started in containers
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"build-image.sh {command} failed:\n{text[-6000:]}"
    return text


@pytest.mark.skipif(_missing_tools() is not None, reason=str(_missing_tools()))
async def test_the_image_builds_and_starts(pg: PostgresServer, temporal: TemporalServer) -> None:
    await _script("build", {}, timeout=3000)
    async with fresh_database(pg, "image", migrate=False) as url:
        log = await _script(
            "check",
            {
                "DATABASE_URL": url,
                "TEMPORAL_ADDRESS": temporal.address,
                "COLONY_CHECK_PORT": str(_free_port()),
            },
            timeout=600,
        )
        for step in (
            "api /healthz answered 200",
            "worker serving lanes: orchestration, llm, tools, memory",
            "the worker stopped on SIGTERM (exit 0)",
        ):
            assert step in log, log[-6000:]
        # `colony migrate` in the image created Colony's schema.
        async with await db.connect(url) as conn:
            cursor = await conn.execute("SELECT to_regclass('public.runs') IS NOT NULL AS made")
            assert await cursor.fetchone() == {"made": True}
