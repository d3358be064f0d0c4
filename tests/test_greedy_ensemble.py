"""The greedy ensemble: members chosen by the greedy rule on the ensemble's selection score, beside the all-runs
ensemble, in the results table, soup.json and the card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_soups import greedy_soup, uniform_soup
from hf_soups.evaluation import EvalResult
from hf_soups.recipes.judge import mean_probabilities

ROWS = 10


def right(rows, sure=0.9, unsure=0.4):
    """Probability of the right class (1) on each row: ``sure`` on ``rows``, ``unsure`` (a wrong prediction) else."""
    return np.array([sure if r in rows else unsure for r in range(ROWS)])


class TableJudge:
    """Each ingredient (told apart by its classifier bias) has fixed class probabilities, the same on both splits;
    every label is 1. Soups (biases no ingredient has) predict class 0 everywhere (p = 0.1)."""

    task, metric = "toy", "accuracy"
    split_names = {"select": "toy:select", "report": "toy:report"}
    split_rule = {"rows": {"select": ROWS, "report": ROWS}}

    def __init__(self, table: dict[float, np.ndarray]) -> None:
        self.table = table

    def score(self, model, split, return_predictions=False):
        p = self.table.get(round(float(model.classifier.bias.detach()[0]), 3), np.full(ROWS, 0.1))
        logits = np.log(np.stack([1 - p, p], axis=1))
        return self._result(split, logits)

    def _result(self, split, logits):
        predictions, labels = logits.argmax(-1), np.ones(ROWS, dtype=int)
        return EvalResult(
            "toy",
            split,
            {"accuracy": self.main_metric(predictions, labels)},
            "accuracy",
            ROWS,
            {},
            predictions,
            logits,
            labels,
        )

    def main_metric(self, predictions, labels):
        return float(np.mean(predictions == labels))

    def ensemble(self, results):
        return self._result(results[0].split, np.log(mean_probabilities([r.logits for r in results])))


def ingredients(make_ingredients, probabilities):
    """Ingredients told apart by classifier bias i/10, and the judge that gives ingredient i ``probabilities[i]``."""
    folders = make_ingredients(len(probabilities))
    for i, folder in enumerate(folders):
        state = load_file(folder / "model.safetensors")
        state["classifier.bias"] = torch.tensor([i / 10, 0.0])
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folders, TableJudge({round(i / 10, 3): p for i, p in enumerate(probabilities)})


def row(report, name="ensemble (greedy)"):
    return next(r for r in report.record.results if r.name == name)


def names(members):
    return [Path(m).name for m in members]


def test_greedy_ensemble_keeps_members_that_raise_the_ensembles_score(make_ingredients, tmp_path):
    # ing1 (0.8) first; with ing0 (0.7, wrong only where ing1 is unsure) the mean probabilities are right
    # everywhere: 1.0; ing2 is confidently wrong on most rows and lowers it; ing3 is a copy of ing1 (no change)
    folders, judge = ingredients(
        make_ingredients,
        [
            right(range(3, 10)),
            right(range(8)),
            right(range(3), unsure=0.05),
            right(range(8)),
        ],
    )
    report = greedy_soup(folders, judge=judge, output_dir=tmp_path / "soup", progress=False)
    greedy = row(report)
    assert names(greedy.members) == ["ing1", "ing0"]
    assert greedy.scores["select"]["accuracy"] == greedy.scores["report"]["accuracy"] == 1.0
    assert greedy.gain["delta"] == pytest.approx(0.2)
    assert row(report, "ensemble").scores["select"]["accuracy"] == 0.8  # ing2 holds the all-runs ensemble back
    assert "ensemble (greedy) members: " in report.table and report.table.endswith(f"{folders[1]}, {folders[0]}")
    saved = json.loads((tmp_path / "soup" / "soup.json").read_text())
    assert names(next(r for r in saved["results"] if r["name"] == "ensemble (greedy)")["members"]) == ["ing1", "ing0"]
    assert "| ensemble (greedy): `ing1`, `ing0` |" in (tmp_path / "soup" / "README.md").read_text()


def test_greedy_ensemble_follows_the_greedy_rule(make_ingredients):
    # a copy of the best leaves the ensemble's score as it is: strict drops it, ties keeps it
    best = right(range(8), sure=0.6)
    folders, judge = ingredients(make_ingredients, [best, right(range(5), unsure=0.01), best])
    strict = greedy_soup(folders, judge=judge, progress=False)
    ties = greedy_soup(folders, judge=judge, greedy_rule="ties", progress=False)
    assert names(row(strict).members) == ["ing0"] and names(row(ties).members) == ["ing0", "ing2"]
    assert names(row(uniform_soup(folders, judge=judge, progress=False)).members) == ["ing0"]  # strict by default


def test_no_ensemble_rows_without_the_ensemble(make_ingredients):
    folders, judge = ingredients(make_ingredients, [right(range(8)), right(range(5))])
    report = greedy_soup(folders, judge=judge, ensemble=False, progress=False)
    assert [r.name for r in report.record.results] == ["best individual", "greedy", "uniform"]
    assert "members" not in report.table
