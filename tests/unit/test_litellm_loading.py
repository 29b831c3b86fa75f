"""LiteLLM is imported on first use, not by importing Colony, and leaves the environment alone.

Each check runs in a fresh interpreter: this one may have loaded LiteLLM already.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.providers.litellm_loader import COST_MAP_ENV

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _environ_without_cost_map() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != COST_MAP_ENV}


@pytest.mark.parametrize(
    "module",
    [
        *(f"activities.providers.{m}" for m in ("client", "errors", "pricing", "routing")),
        "workers.registry",
        "workers.main",
    ],
)
def test_importing_colony_does_not_import_litellm(module: str) -> None:
    _run(
        f"import sys, {module}; "
        "assert 'litellm' not in sys.modules, 'litellm imported by ' + repr('{module}')",
        _environ_without_cost_map(),
    )


LOAD = """
import json, os, sys
from activities.providers.client import ModelClient
from activities.providers.litellm_loader import load_litellm
from core.settings import Settings

def changes(before, after):
    return {k: after.get(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}

before = dict(os.environ)
ModelClient(Settings(_env_file=None))
assert "litellm" not in sys.modules, "building the client imported litellm"
built = dict(os.environ)
load_litellm()
assert "litellm" in sys.modules
print(json.dumps({"built": changes(before, built), "loaded": changes(before, dict(os.environ))}))
"""


def test_the_client_leaves_the_environment_alone_but_for_the_cost_map_default() -> None:
    changed = json.loads(_run(LOAD, _environ_without_cost_map()))
    assert changed == {"built": {}, "loaded": {COST_MAP_ENV: "True"}}


def test_loading_litellm_keeps_an_operators_cost_map_setting() -> None:
    changed = json.loads(_run(LOAD, {**_environ_without_cost_map(), COST_MAP_ENV: "True"}))
    assert changed == {"built": {}, "loaded": {}}
