"""`make bench-peers` in its quick mode: every framework runs every phase but the SIGKILL
one, in the bench venv (.venv-bench, built from the lock like `make bench-peers` does)."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.bench.peers.__main__ import FRAMEWORKS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quick_run_reports_every_framework(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", ".venv-bench/.installed"], cwd=ROOT, check=True, timeout=600)
    out = subprocess.run(
        [ROOT / ".venv-bench/bin/python", "-m", "tests.bench.peers", "--quick",
         "--json", str(tmp_path / "peers.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads((tmp_path / "peers.json").read_text())["results"]
    assert list(results) == list(FRAMEWORKS)
    for name, r in results.items():
        assert "errors" not in r, r["errors"]
        assert r["waiting"] == 8, name  # every held run reached the slow model call
        assert r["rps_c1"] > 0 and r["rps_c4"] > 0, name
    assert "| orchestration overhead per model turn" in out.stdout
    assert "| memory per run waiting on the model" in out.stdout
