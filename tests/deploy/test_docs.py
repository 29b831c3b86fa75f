"""The deployment guide's relative links resolve, and nothing links to the old guide."""

import re
import subprocess

from tests.deploy.colony_config import ROOT

GUIDES = [ROOT / "docs" / "deploy.md", ROOT / "deploy" / "README.md"]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_in_the_guide_resolve() -> None:
    broken = [
        f"{guide.name}: {target}"
        for guide in GUIDES
        for target in _LINK.findall(guide.read_text())
        if "://" not in target and not (guide.parent / target).exists()
    ]
    assert broken == []


def test_nothing_points_at_the_old_guide() -> None:
    found = subprocess.run(
        ["git", "grep", "-l", "deploy/" + "README.md", "--", ":!*.lock"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert found == []
