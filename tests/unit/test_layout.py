"""Guards on the repository's shape."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["core", "workflows", "activities", "workers", "api"]
# Import direction (STYLE.md): who may import whom, at module level or lazily.
ALLOWED = {
    "core": {"core"},
    "activities": {"core", "activities"},
    "workflows": {"core", "workflows", "activities"},
    "api": {"core", "workflows", "api"},
    "workers": set(PACKAGES),
}


@pytest.mark.parametrize("name", PACKAGES)
def test_top_level_packages_resolve_inside_the_repo(name: str) -> None:
    # Other PyPI distributions ship a top-level `workflows` (and others); ours must win.
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / name


@pytest.mark.parametrize("name", PACKAGES)
def test_init_files_are_empty(name: str) -> None:
    for init in (ROOT / name).rglob("__init__.py"):
        assert init.read_text().strip() == "", f"{init} should be empty"


@pytest.mark.parametrize("name", PACKAGES)
def test_import_direction(name: str) -> None:
    """Every import counts, lazy ones inside functions too; no file is exempt."""
    for path in (ROOT / name).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            for target in targets:
                top = target.split(".")[0]
                if top in PACKAGES:
                    assert top in ALLOWED[name], f"{path.relative_to(ROOT)} imports {target}"


DOMAINS = {"swarms": 0, "evolution": 0, "runs": 1, "tools": 2, "memory": 3, "providers": 4}
"""Domain subpackages of core and activities by level: each may import only its own and
those of higher levels (swarms and evolution are peers; neither imports the other)."""


@pytest.mark.parametrize("layer", ["core", "activities"])
def test_domains_depend_one_way(layer: str) -> None:
    """swarms, evolution -> runs -> tools -> memory -> providers, in core and activities."""
    for path in (ROOT / layer).rglob("*.py"):
        relative = path.relative_to(ROOT)
        if len(relative.parts) < 3 or relative.parts[1] not in DOMAINS:
            continue
        own = relative.parts[1]
        for node in ast.walk(ast.parse(path.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from core import runs` imports the domain as surely as `import core.runs`.
                modules = [f"{node.module}.{alias.name}" for alias in node.names]
            for module in modules:
                top, _, rest = module.partition(".")
                domain = rest.split(".")[0]
                if top not in ("core", "activities") or domain not in DOMAINS:
                    continue
                if domain == own or DOMAINS[domain] > DOMAINS[own]:
                    continue
                raise AssertionError(f"{relative} imports {module}, against the direction")
