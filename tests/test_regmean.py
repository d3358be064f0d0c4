"""The RegMean soup: Gram matrices against a hand computation on a two-layer model (padding left out), the closed
form W* = (Σ Wᵢ Gᵢ)(Σ Gᵢ)⁻¹ in transformers' [out, in] layout against hand and least-squares computations, α, the
merge, and re-cooking bit for bit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import BiasJudge, TwoLayers, write_rte
from safetensors.torch import load_file, save_file

from hf_soups import SoupError, replay_recipe
from hf_soups.ingredients import resolve_ingredients, validate_ingredients
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.regmean import gram_matrices, reduced, regmean_merge, regmean_weight
from hf_soups.soups import run_in_kitchen, run_recipe


def test_gram_matrices_are_the_inputs_gram_computed_by_hand():
    model = TwoLayers(2)
    rows = np.random.default_rng(0).normal(size=(5, 3))
    batches = [{"x": torch.tensor(rows[:3], dtype=torch.float32)}, {"x": torch.tensor(rows[3:], dtype=torch.float32)}]
    grams = gram_matrices(model, batches, ["first.weight", "second.weight"])
    w1, b1 = (p.detach().double().numpy() for p in model.first.parameters())
    hidden = np.tanh(rows @ w1.T + b1)  # what the second layer sees
    np.testing.assert_allclose(grams["first.weight"].numpy(), rows.T @ rows / 5, rtol=1e-5)
    np.testing.assert_allclose(grams["second.weight"].numpy(), hidden.T @ hidden / 5, rtol=1e-5)
    assert set(gram_matrices(model, batches, ["second.weight"])) == {"second.weight"}  # only the layers named


def test_padding_tokens_are_left_out_of_the_gram_matrices(make_ingredients, tiny_tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(make_ingredients(1)[0])
    names = [name for name, _ in model.named_parameters()]
    texts = ["the cat sat", "w1 w2 w3 w4 w5 w6"]
    padded = gram_matrices(model, [dict(tiny_tokenizer(texts, padding=True, return_tensors="pt"))], names)
    alone = gram_matrices(model, [dict(tiny_tokenizer([text], return_tensors="pt")) for text in texts], names)
    assert padded.keys() == alone.keys() and "bert.encoder.layer.0.attention.self.query.weight" in padded
    assert "classifier.weight" in padded and "bert.pooler.dense.weight" in padded  # one input per row
    for name in padded:
        torch.testing.assert_close(padded[name], alone[name], rtol=1e-4, atol=1e-6)


def test_the_closed_form_by_hand_in_the_out_in_layout():
    # W₁ = [1 2], G₁ = [[2 1] [1 2]]; W₂ = [3 0], G₂ = I: Σ WᵢGᵢ = [7 5], (Σ Gᵢ)⁻¹ = [[3 −1] [−1 3]] / 8, W* = [2 1]
    g1, g2 = torch.tensor([[2.0, 1.0], [1.0, 2.0]]), torch.eye(2)
    w1, w2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])
    merged = regmean_weight(g1 + g2, g1 @ w1.T + g2 @ w2.T, (w1 + w2) / 2, "layer.weight")
    torch.testing.assert_close(merged, torch.tensor([[2.0, 1.0]]))


def test_the_closed_form_is_the_least_squares_fit_to_every_ingredients_outputs():
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(20, 3)) for _ in range(3)]
    weights = [rng.normal(size=(2, 3)) for _ in range(3)]  # [out, in], as nn.Linear keeps them
    grams = [torch.tensor(x.T @ x) for x in inputs]
    products = sum(g @ torch.tensor(w).T for g, w in zip(grams, weights, strict=True))
    merged = regmean_weight(sum(grams), products, torch.zeros(2, 3), "layer.weight")
    fit = np.linalg.lstsq(
        np.vstack(inputs), np.vstack([x @ w.T for x, w in zip(inputs, weights, strict=True)]), rcond=None
    )[0].T  # min Σᵢ ‖Xᵢ W*ᵀ − Xᵢ Wᵢᵀ‖²
    np.testing.assert_allclose(merged.numpy(), fit, rtol=1e-8)


def test_alpha_scales_the_off_diagonal_and_zero_alpha_weighs_each_input_alone():
    gram = torch.tensor([[4.0, 2.0], [2.0, 1.0]])
    torch.testing.assert_close(reduced(gram, 0.9), torch.tensor([[4.0, 1.8], [1.8, 1.0]]))
    torch.testing.assert_close(reduced(gram, 1.0), gram)
    g1, g2 = reduced(gram, 0.0), reduced(torch.tensor([[1.0, 5.0], [5.0, 3.0]]), 0.0)  # diag(4, 1), diag(1, 3)
    w1, w2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[6.0, 5.0]])
    merged = regmean_weight(g1 + g2, g1 @ w1.T + g2 @ w2.T, (w1 + w2) / 2, "layer.weight")
    torch.testing.assert_close(merged, torch.tensor([[(4 * 1 + 6) / 5, (1 + 3 * 5) / 4]]))  # per column


def test_an_input_no_row_reaches_keeps_the_average_and_a_singular_gram_is_refused():
    gram = torch.diag(torch.tensor([2.0, 0.0]))  # the second input is always 0
    w1, w2 = torch.tensor([[1.0, 7.0]]), torch.tensor([[3.0, 1.0]])
    merged = regmean_weight(2 * gram, gram @ w1.T + gram @ w2.T, (w1 + w2) / 2, "layer.weight")
    torch.testing.assert_close(merged, torch.tensor([[2.0, 4.0]]))
    ones = torch.ones(2, 2)  # rank 1, nothing on the diagonal is 0: α = 1 cannot solve it
    with pytest.raises(SoupError, match="Gram matrix of the inputs of 'layer' is singular .* regmean_alpha below 1"):
        regmean_weight(2 * ones, ones @ w1.T + ones @ w2.T, (w1 + w2) / 2, "layer.weight")


def test_the_merge_is_regmean_on_linear_weights_and_the_average_elsewhere(make_ingredients, tmp_path):
    ingredients = resolve_ingredients(make_ingredients(2))
    plan = validate_ingredients(ingredients)
    weights = [load_file(i.path / "model.safetensors") for i in ingredients]
    rng = np.random.default_rng(0)
    grams = []
    for i in range(2):
        x = rng.normal(size=(30, 16))
        save_file({"classifier.weight": torch.tensor(x.T @ x / 30, dtype=torch.float32)}, tmp_path / f"g{i}.st")
        grams.append(load_file(tmp_path / f"g{i}.st")["classifier.weight"].double())
    soup = regmean_merge(ingredients, [tmp_path / "g0.st", tmp_path / "g1.st"], plan, 0.5).tensors
    reduced_grams = [0.5 * g + 0.5 * torch.diag(g.diagonal()) for g in grams]
    w = [weights[i]["classifier.weight"].double() for i in range(2)]
    expected = (w[0] @ reduced_grams[0] + w[1] @ reduced_grams[1]) @ torch.linalg.inv(sum(reduced_grams))
    torch.testing.assert_close(soup["classifier.weight"].double(), expected, rtol=1e-5, atol=1e-6)
    for name in ("classifier.bias", "bert.pooler.dense.weight"):  # a bias; a layer with no Gram matrix given
        torch.testing.assert_close(soup[name], (weights[0][name] + weights[1][name]) / 2)


def sha(folder):
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_regmean_soup_records_its_gram_matrices_and_cooks_again_bit_for_bit(make_ingredients, tmp_path):
    write_rte(tmp_path / "glue", 40)
    write_rte(tmp_path / "glue", 100, seed=1, file="train.tsv")
    report = run_recipe(
        "regmean",
        make_ingredients(3),
        "rte",
        tmp_path / "soup",
        glue_dir=tmp_path / "glue",
        options={"regmean_alpha": 0.5},
        ensemble=False,
        progress=False,
    )
    options = report.record.recipe.options
    assert (options["statistics_rows"], options["regmean_alpha"]) == (10, 0.5)  # all 10 held-out rows
    assert "bert.encoder.layer.1.output.dense.weight" in options["regmean_layers"]
    recipe = yaml.safe_load((tmp_path / "soup" / "recipe.yaml").read_text())
    assert recipe["options"] == {"statistics_rows": 10, "regmean_alpha": 0.5}
    assert all(entry["statistics"]["file"].startswith("../soup.regmean-state/gram-") for entry in recipe["mix"])
    assert sha(replay_recipe(tmp_path / "soup", tmp_path / "again")) == sha(tmp_path / "soup")


@pytest.mark.slow
def test_regmean_without_a_soup_folder_keeps_its_gram_matrices_in_a_temporary_folder(make_ingredients, tmp_path):
    write_rte(tmp_path / "glue", 40)
    write_rte(tmp_path / "glue", 100, seed=1, file="train.tsv")
    report = run_recipe(
        "regmean", make_ingredients(2), "rte", None, glue_dir=tmp_path / "glue", ensemble=False, progress=False
    )
    options = report.record.recipe.options
    assert "classifier.weight" in options["regmean_layers"] and "statistics" not in options  # no files to name


def test_regmean_refuses_a_bad_alpha_and_what_gives_no_inputs(make_ingredients):
    with pytest.raises(SoupError, match=r"regmean_alpha: must be in \[0, 1\], got 1.5"):
        run_in_kitchen(
            Kitchen(make_ingredients(2), BiasJudge(), progress=False), "regmean", options={"regmean_alpha": 1.5}
        )
    with pytest.raises(SoupError, match="regmean soup: needs the inputs, logits and gradients .* text-to-text model"):
        run_in_kitchen(Kitchen(make_ingredients(2, arch="t5", name="t"), BiasJudge(), progress=False), "regmean")
