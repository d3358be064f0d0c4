"""The Fisher-weighted soup: the exact Fisher against a hand computation on a two-layer model, the weighted average
against a hand computation, the cache, re-cooking bit for bit, and the kitchens it refuses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import BiasJudge, TwoLayers, write_rte
from safetensors.torch import load_file, save_file

import hf_soups.recipes.fisher
from hf_soups import SoupError, replay_recipe
from hf_soups.cli import main
from hf_soups.ingredients import resolve_ingredients, validate_ingredients
from hf_soups.recipes import make_kitchen
from hf_soups.recipes.ensemble import GREEDY_ENSEMBLE
from hf_soups.recipes.fisher import FISHER_FLOOR, fisher_diagonal, fisher_merge
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.soups import run_in_kitchen, run_recipe


def hand_fisher(model: TwoLayers, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Σ_y p(y|x) (∂ log p(y|x) / ∂θ)² averaged over the rows (for one output: (∂z/∂θ)²), by the chain rule."""
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in model.parameters())
    total = {name: 0.0 for name in ("first.weight", "first.bias", "second.weight", "second.bias")}
    for x in rows:
        h = np.tanh(w1 @ x + b1)
        z = w2 @ h + b2
        if len(z) == 1:
            terms = [(1.0, np.ones(1))]  # ∂z/∂z
        else:
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            terms = [(p[y], np.eye(len(z))[y] - p) for y in range(len(z))]  # ∂ log p_y / ∂z = e_y − p
        for weight, dz in terms:
            da = (w2.T @ dz) * (1 - h**2)
            grads = {
                "first.weight": np.outer(da, x),
                "first.bias": da,
                "second.weight": np.outer(dz, h),
                "second.bias": dz,
            }
            for name, grad in grads.items():
                total[name] = total[name] + weight * grad**2
    return {name: value / len(rows) for name, value in total.items()}


@pytest.mark.parametrize("outputs", [3, 1])  # a classifier, and a regressor (a Gaussian around its output)
def test_fisher_is_the_exact_fisher_computed_by_hand(outputs):
    model = TwoLayers(outputs)
    rows = np.random.default_rng(0).normal(size=(5, 3))
    batches = [{"x": torch.tensor(rows[:2], dtype=torch.float32)}, {"x": torch.tensor(rows[2:], dtype=torch.float32)}]
    fisher = fisher_diagonal(model, batches, [name for name, _ in model.named_parameters()])
    for name, expected in hand_fisher(model, rows).items():
        np.testing.assert_allclose(fisher[name].numpy(), expected, rtol=1e-5, atol=1e-9, err_msg=name)


def test_fisher_of_a_padded_row_is_the_fisher_of_the_row_alone(make_ingredients, tiny_tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(make_ingredients(1)[0])
    names = [name for name, _ in model.named_parameters()]
    padded = tiny_tokenizer(["the cat sat", "w1 w2 w3 w4 w5 w6"], padding=True, return_tensors="pt")
    alone = tiny_tokenizer(["the cat sat"], return_tensors="pt")
    both = fisher_diagonal(model, [dict(padded)], names)
    second = fisher_diagonal(model, [{k: v[1:] for k, v in padded.items()}], names)
    first = fisher_diagonal(model, [dict(alone)], names)
    for name in names:  # the mean over two rows: the first row's Fisher is the same without its padding
        torch.testing.assert_close(both[name], (first[name] + second[name]) / 2, rtol=1e-4, atol=1e-10)


def test_the_weighted_average_is_the_one_computed_by_hand(make_ingredients, tmp_path):
    ingredients = resolve_ingredients(make_ingredients(2))
    plan = validate_ingredients(ingredients)
    weights = [load_file(i.path / "model.safetensors") for i in ingredients]
    generator = torch.Generator().manual_seed(0)
    fishers = [
        {name: torch.rand(plan.shapes[name], generator=generator) for name in ("classifier.weight", "classifier.bias")}
        for _ in ingredients
    ]
    fishers[0]["classifier.bias"][0] = fishers[1]["classifier.bias"][0] = 0.0  # no information on one element
    pooler = "bert.pooler.dense.bias"
    fishers[0][pooler] = fishers[1][pooler] = torch.zeros(plan.shapes[pooler])  # none on a whole tensor
    paths = []
    for i, fisher in enumerate(fishers):
        save_file(fisher, tmp_path / f"fisher{i}.safetensors")
        paths.append(tmp_path / f"fisher{i}.safetensors")
    soup = fisher_merge(ingredients, paths, plan).tensors
    for name in ("classifier.weight", "classifier.bias"):
        f = [fisher[name].double() for fisher in fishers]
        theta = [w[name].double() for w in weights]
        epsilon = FISHER_FLOOR * float((f[0] + f[1]).mean()) / 2  # Fᵢ + ε, ε = 1e-8 · mean(Σ Fᵢ) / N
        expected = ((f[0] + epsilon) * theta[0] + (f[1] + epsilon) * theta[1]) / (f[0] + f[1] + 2 * epsilon)
        torch.testing.assert_close(soup[name].double(), expected, rtol=1e-6, atol=1e-7)
    uniform = (weights[0]["classifier.bias"][0] + weights[1]["classifier.bias"][0]) / 2
    torch.testing.assert_close(soup["classifier.bias"][0], uniform)  # Σ Fᵢ = 0: the uniform average
    for name in (pooler, "bert.embeddings.word_embeddings.weight"):  # a Fisher of zeros, or no Fisher
        torch.testing.assert_close(soup[name], (weights[0][name] + weights[1][name]) / 2)


def small_glue(tmp_path: Path) -> Path:
    """RTE with 40 validation rows and 100 train rows, 10 of them the held-out selection rows."""
    write_rte(tmp_path / "glue", 40)
    write_rte(tmp_path / "glue", 100, seed=1, file="train.tsv")
    return tmp_path / "glue"


def sha(folder):
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_fisher_soup_records_its_fishers_and_cooks_again_bit_for_bit(make_ingredients, tmp_path, monkeypatch):
    folders, glue = make_ingredients(3), small_glue(tmp_path)
    kitchen = make_kitchen(folders, "rte", glue_dir=glue, progress=False)
    report = run_in_kitchen(kitchen, "fisher", tmp_path / "soup", options={"statistics_rows": 6, "fisher_over": "all"})
    options = report.record.recipe.options
    assert (options["statistics_rows"], options["fisher_over"], options["fisher"]) == (6, "all", "exact")
    assert [r.name for r in report.record.results] == [
        "best individual",
        "fisher",
        "uniform",
        "ensemble",
        "ensemble (greedy)",
    ]
    recipe = yaml.safe_load((tmp_path / "soup" / "recipe.yaml").read_text())
    assert recipe["recipe"] == "fisher" and recipe["options"] == {"statistics_rows": 6, "fisher_over": "all"}
    files = [entry["statistics"]["file"] for entry in recipe["mix"]]
    assert all(file.startswith("../soup.fisher-state/fisher-") for file in files) and len(set(files)) == 3
    assert sha(replay_recipe(tmp_path / "soup", tmp_path / "again")) == sha(tmp_path / "soup")
    # the re-cook's recipe too
    assert sha(replay_recipe(tmp_path / "again", tmp_path / "third")) == sha(tmp_path / "soup")

    def never(*args):
        raise AssertionError("estimated again")

    monkeypatch.setattr(hf_soups.recipes.fisher, "fisher_diagonal", never)
    again = run_in_kitchen(
        kitchen,
        "fisher",
        tmp_path / "other",
        ensemble=False,
        options={"statistics_rows": 6, "fisher_over": "all", "state_dir": tmp_path / "soup.fisher-state"},
    )  # the same Fishers, from the cache
    assert sha(tmp_path / "other") == sha(tmp_path / "soup")
    assert again.record.recipe.options["statistics"] == options["statistics"]


@pytest.mark.slow
@pytest.mark.parametrize("fisher_over", ["greedy", "ensemble"])
def test_fisher_over_greedy_or_ensemble_merges_their_members(make_ingredients, tmp_path, fisher_over):
    folders, glue = make_ingredients(4), small_glue(tmp_path)
    kitchen = make_kitchen(folders, "rte", glue_dir=glue, progress=False)
    fisher = run_in_kitchen(
        kitchen, "fisher", ensemble=False, options={"fisher_over": fisher_over, "greedy_rule": "ties"}
    )
    ties = run_in_kitchen(kitchen, "greedy", options={"greedy_rule": "ties"})
    greedy = [i.spec for i in ties.record.ingredients if i.kept]
    ensemble = next(r for r in ties.record.results if r.name == GREEDY_ENSEMBLE).members
    assert sorted(greedy) != sorted(ensemble)  # the case tells the two apart
    kept = [i.spec for i in fisher.record.ingredients if i.kept]
    assert sorted(kept) == sorted(greedy if fisher_over == "greedy" else ensemble)
    assert fisher.record.recipe.options["greedy_rule"] == "ties" and "statistics" not in fisher.record.recipe.options


@pytest.mark.slow
def test_cooking_refuses_a_changed_or_missing_fisher(make_ingredients, tmp_path, monkeypatch, capsys):
    folders, glue = make_ingredients(2), small_glue(tmp_path)
    run_recipe(
        "fisher",
        folders,
        "rte",
        tmp_path / "soup",
        glue_dir=glue,
        options={"statistics_rows": 4},
        ensemble=False,
        progress=False,
    )
    state = tmp_path / "soup.fisher-state"
    first = sorted(state.iterdir())[0]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    first.write_bytes(first.read_bytes()[:-4] + b"\0\0\0\0")
    assert main(["cook", "soup", "-o", "again"]) == 2
    assert f"{first.name} has changed since the recipe was written" in capsys.readouterr().err
    first.unlink()
    assert main(["cook", "soup", "-o", "again"]) == 2
    assert "are missing (the soup's state folder keeps them" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_fisher_refuses_what_gives_no_gradients_in_one_message(make_ingredients):
    message = "fisher soup: needs the inputs, logits and gradients of an encoder classifier or regressor"
    with pytest.raises(SoupError, match=f"{message} .* which a text-to-text model .*; cook greedy, uniform"):
        run_in_kitchen(Kitchen(make_ingredients(2, arch="t5"), BiasJudge(), progress=False), "fisher")
    with pytest.raises(SoupError, match=f"{message} .* which the judge BiasJudge, which gives no batches"):
        run_in_kitchen(Kitchen(make_ingredients(2, name="b"), BiasJudge(), progress=False), "fisher")


def test_fisher_does_not_apply_where_the_judge_gives_no_logits_of_one_label_a_row(make_ingredients):
    judge = BiasJudge()
    judge.provides = {"logits"}  # as a Trainer judge of token classification (many labels a row)
    with pytest.raises(SoupError, match="recipe 'fisher' does not apply here: it needs logits of one label a row"):
        run_in_kitchen(Kitchen(make_ingredients(2), judge, progress=False), "fisher")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"statistics_rows": 11}, "statistics_rows: 11 is more than the 10 rows of the selection split train:heldout"),
        ({"statistics_rows": 0}, "statistics_rows: must be a whole number ≥ 1"),
        ({"fisher_over": "some"}, "fisher_over: 'some' is not one of all, greedy, ensemble"),
    ],
)
def test_fisher_refuses_bad_options_before_any_scoring(make_ingredients, tmp_path, options, message):
    kitchen = make_kitchen(make_ingredients(2), "rte", glue_dir=small_glue(tmp_path), progress=False)
    with pytest.raises(SoupError, match=message):
        run_in_kitchen(kitchen, "fisher", options=options)
    assert kitchen._tasted is None
