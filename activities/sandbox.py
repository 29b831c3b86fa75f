"""Sandbox backends. Issue #4 builds code execution on this; here: availability probes.

The default backend is bubblewrap. When it cannot run, tools that need a sandbox refuse
to run; nothing ever falls back to running unsandboxed.
"""

import shutil
import subprocess
from dataclasses import dataclass

from core.settings import Settings


@dataclass(frozen=True)
class SandboxStatus:
    """Whether a sandbox backend can run code here."""

    backend: str
    ok: bool
    detail: str


def bwrap_base_argv() -> list[str]:
    """Bwrap arguments for an isolated process: read-only root, no network, own namespaces."""
    return [
        "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--unshare-all", "--die-with-parent", "--new-session",
    ]  # fmt: skip


def probe(settings: Settings) -> SandboxStatus:
    """Run a trivial command in the configured backend and report the outcome."""
    if settings.e2b_api_key is not None:
        # A remote call would cost money and time on every probe; key presence is the check.
        return SandboxStatus("e2b", True, "E2B_API_KEY is set")
    if shutil.which("bwrap") is None:
        return SandboxStatus("bubblewrap", False, "bwrap not found: apt-get install bubblewrap")
    try:
        result = subprocess.run(
            [*bwrap_base_argv(), "--", "/bin/sh", "-c", "echo sandboxed"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return SandboxStatus("bubblewrap", False, "bwrap did not finish within 10s")
    if result.returncode != 0 or result.stdout.strip() != "sandboxed":
        return SandboxStatus(
            "bubblewrap",
            False,
            f"bwrap failed (exit {result.returncode}): {result.stderr.strip()[:200]}",
        )
    return SandboxStatus("bubblewrap", True, "bubblewrap runs isolated processes")
