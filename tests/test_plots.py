"""Soup-folder plots: drawn without touching the user's matplotlib backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import matplotlib
matplotlib.use("svg")
from pathlib import Path
from types import SimpleNamespace
import hf_soups.recipes, hf_soups.soup_folder
from hf_soups.plots import plot_soups, plot_trajectory
score = SimpleNamespace(main=0.5, main_metric="accuracy")
plot_soups(
    Path(r"{folder}"),
    [SimpleNamespace(select=score, report=score)],
    [SimpleNamespace(select=score, report=score, name="uniform")],
)
plot_trajectory(Path(r"{folder}"), [dict(soup_score=0.5, score=0.5, ingredient_score=0.5, kept=True)], "accuracy")
print(matplotlib.get_backend())
"""


def test_recipes_and_plots_leave_the_matplotlib_backend_alone(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(folder=tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], check=True)
    assert done.stdout.strip() == "svg"
    assert (tmp_path / "ingredients_vs_soups.png").stat().st_size > 0
    assert (tmp_path / "greedy_trajectory.png").stat().st_size > 0
