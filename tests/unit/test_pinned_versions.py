"""The agent-version cache every lane shares is bounded and asks Postgres once per version."""

from typing import Any

import pytest

from activities import _common
from activities._common import PinnedVersions


async def test_versions_are_cached_and_the_least_recent_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, str, int]] = []

    async def get_version(conn: Any, tenant: str, agent: str, version: int) -> str:
        asked.append((tenant, agent, version))
        return f"{agent}@{version}"

    monkeypatch.setattr(_common.agents, "get_version", get_version)
    cache = PinnedVersions(size=2)
    conn: Any = None
    assert await cache.get(conn, "t", "a", 1) == "a@1"
    assert await cache.get(conn, "t", "a", 2) == "a@2"
    assert await cache.get(conn, "t", "a", 1) == "a@1"  # cached, and now the most recent
    await cache.get(conn, "t", "a", 3)  # drops version 2, the least recently used
    await cache.get(conn, "t", "a", 1)
    await cache.get(conn, "t", "a", 2)
    assert asked == [("t", "a", 1), ("t", "a", 2), ("t", "a", 3), ("t", "a", 2)]
