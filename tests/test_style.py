"""The tree passes the ruff configuration in pyproject.toml (skipped where ruff is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_passes():
    done = subprocess.run(["ruff", "check", "."], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_what_the_readme_commands_write_is_ignored_by_git():
    root = Path(__file__).parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    folders = {folder for readme in ("README.md", "examples/glue/README.md")
               for folder in re.findall(r"--output-dir ([\w./-]+)", (root / readme).read_text())}
    assert "sweep-sst2" in folders
    for folder in sorted(folders):
        done = subprocess.run(["git", "check-ignore", "-q", f"{folder}/soup.json"], cwd=root)
        assert done.returncode == 0, f"{folder}/ is not in .gitignore"
