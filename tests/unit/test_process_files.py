"""Files the stack's children and their logs create are private to the stack's user."""

import asyncio
import stat
import sys
from pathlib import Path

from workers.process import ManagedProcess, ProcessSpec


async def test_a_childs_files_and_its_log_are_private(tmp_path: Path) -> None:
    made = tmp_path / "made-by-child"
    child = ManagedProcess(
        ProcessSpec(
            name="writer",
            argv=[sys.executable, "-c", f"open({str(made)!r}, 'w').write('secret')"],
            log_path=tmp_path / "logs" / "writer.log",
        )
    )
    await child.start()
    for _ in range(100):
        if child.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert child.returncode == 0
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "logs" / "writer.log").stat().st_mode) == 0o600
