"""The tree passes ruff's lint and format configuration in pyproject.toml (skipped where ruff is not installed)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -e '.[test]')"
)
@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_passes(command):
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=Path(__file__).parents[1], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_what_the_readme_commands_write_is_ignored_by_git():
    root = Path(__file__).parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    folders = {
        folder
        for readme in ("README.md", "examples/glue/README.md")
        for folder in re.findall(r"--output-dir ([\w./-]+)", (root / readme).read_text())
    }
    assert "sweep-sst2" in folders
    for folder in sorted(folders):
        done = subprocess.run(["git", "check-ignore", "-q", f"{folder}/soup.json"], cwd=root)
        assert done.returncode == 0, f"{folder}/ is not in .gitignore"
