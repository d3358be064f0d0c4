"""Model Stock: the soup against a hand computation (BERT, T5 with tied weights, task vectors that disagree), its
base and start head, its recipe, re-cooking, a pantry's recorded start, and each bad input."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import BiasJudge, tiny_bert_config, tiny_t5_config
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification, BertModel, T5ForConditionalGeneration

from hf_soups import SoupError, replay_recipe, stock_soup
from hf_soups.ingredients import resolve_ingredients, validate_ingredients
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.stock import StockBase, stock_soup_tensors
from hf_soups.soups import run_in_kitchen


def hand_cosine(thetas: list[torch.Tensor], theta0: torch.Tensor) -> float:
    """The mean pairwise cosine of one tensor's task vectors."""
    offsets = [(w - theta0).reshape(-1).double() for w in thetas]
    cosines = [
        (a @ b / (a.norm() * b.norm()).clamp(min=1e-6)).clamp(-1, 1)
        for i, a in enumerate(offsets)
        for b in offsets[i + 1 :]
    ]
    return float(torch.stack(cosines).mean())


def hand_stock(thetas: list[torch.Tensor], theta0: torch.Tensor) -> torch.Tensor:
    """Model Stock of one tensor as the paper (and mergekit's model_stock) writes it, the cosine clamped to [0, 1]."""
    cos, k = min(max(hand_cosine(thetas, theta0), 0.0), 1.0), len(thetas)
    t = k * cos / (1 + (k - 1) * cos)
    return t * torch.stack(thetas).mean(0) + (1 - t) * theta0


@pytest.fixture
def bert_base(tmp_path) -> Path:
    """The tiny BERT that ``make_ingredients`` perturbs (same seed), saved whole: head included."""
    torch.manual_seed(0)
    folder = tmp_path / "base"
    BertForSequenceClassification(tiny_bert_config()).save_pretrained(folder)
    return folder


def stock_of(folders, base: StockBase) -> tuple[dict[str, torch.Tensor], dict[str, float | None]]:
    tensors, ratios, _ = stock_with_clamped(folders, base)
    return tensors, ratios


def stock_with_clamped(folders, base: StockBase) -> tuple[dict[str, torch.Tensor], dict[str, float | None], list[str]]:
    ingredients = resolve_ingredients(folders)
    soup, ratios, clamped = stock_soup_tensors(ingredients, validate_ingredients(ingredients), base)
    return soup.tensors, ratios, clamped


def set_task_vectors(folders: list[Path], base: Path, name: str, vectors: list[list[float]]) -> None:
    """Give tensor ``name`` of each ingredient the task vector ``vectors[i]`` over the base's."""
    theta0 = load_file(base / "model.safetensors")[name]
    for folder, vector in zip(folders, vectors, strict=True):
        state = load_file(folder / "model.safetensors")
        state[name] = theta0 + torch.tensor(vector, dtype=theta0.dtype)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("n", [2, 3])
def test_stock_equals_the_hand_computation_on_bert(make_ingredients, bert_base, n):
    folders = make_ingredients(n)
    tensors, ratios = stock_of(folders, StockBase.resolve(bert_base))
    states = [load_file(f / "model.safetensors") for f in folders]
    theta0 = load_file(bert_base / "model.safetensors")
    for name, value in tensors.items():
        if value.is_floating_point():
            expected = hand_stock([s[name] for s in states], theta0[name])
            torch.testing.assert_close(value, expected, atol=1e-6, rtol=0)
            assert ratios[name] is not None
        else:
            assert torch.equal(value, states[0][name])


R3 = math.sqrt(3) / 2


@pytest.mark.parametrize(
    ("vectors", "cosine"),
    [
        ([[1.0, 0.0], [-1.0, 0.0]], -1.0),  # k = 2, opposite: 1 + (k − 1)·cos θ = 0
        ([[1.0, 0.0], [-0.5, R3], [-0.5, -R3]], -0.5),  # k = 3 at 120°: 1 + (k − 1)·cos θ = 0 again
        ([[1.0, 0.0], [-0.6, 0.8], [-0.6, -0.8]], (-0.6 - 0.6 - 0.28) / 3),  # t would be −7.4: past the base
        ([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], (0.6 + 0.0 + 0.8) / 3),  # agreeing: not clamped
    ],
)
def test_negative_mean_cosines_are_clamped_to_the_base(make_ingredients, bert_base, vectors, cosine):
    folders = make_ingredients(len(vectors))
    set_task_vectors(folders, bert_base, "classifier.bias", vectors)
    tensors, ratios, clamped = stock_with_clamped(folders, StockBase.resolve(bert_base))
    states = [load_file(f / "model.safetensors") for f in folders]
    theta0 = load_file(bert_base / "model.safetensors")
    bias = [s["classifier.bias"] for s in states]
    assert hand_cosine(bias, theta0["classifier.bias"]) == pytest.approx(cosine, abs=1e-6)
    if cosine < 0:
        assert ratios["classifier.bias"] == 0.0
        torch.testing.assert_close(tensors["classifier.bias"], theta0["classifier.bias"], atol=0, rtol=0)
    else:
        k, c = len(vectors), cosine
        assert ratios["classifier.bias"] == pytest.approx(k * c / (1 + (k - 1) * c), abs=1e-6)
    names = [n for n in tensors if tensors[n].is_floating_point()]
    for name in names:
        expected = hand_stock([s[name] for s in states], theta0[name])
        torch.testing.assert_close(tensors[name], expected, atol=1e-6, rtol=0)
    assert clamped == [n for n in names if hand_cosine([s[n] for s in states], theta0[n]) < 0]
    assert ("classifier.bias" in clamped) == (cosine < 0)


def test_stock_on_t5_keeps_the_tie(make_ingredients, tmp_path):
    folders = make_ingredients(3, arch="t5")
    torch.manual_seed(0)
    T5ForConditionalGeneration(tiny_t5_config()).save_pretrained(tmp_path / "t5-base")
    tensors, _ = stock_of(folders, StockBase.resolve(tmp_path / "t5-base"))
    assert "shared.weight" in tensors and "lm_head.weight" not in tensors  # one tensor for the tied three
    states = [load_file(f / "model.safetensors") for f in folders]
    theta0 = load_file(tmp_path / "t5-base" / "model.safetensors")
    expected = hand_stock([s["shared.weight"] for s in states], theta0["shared.weight"])
    torch.testing.assert_close(tensors["shared.weight"], expected, atol=1e-6, rtol=0)


def test_a_base_without_head_averages_the_head_unless_a_start_head_is_given(make_ingredients, bert_base, tmp_path):
    folders = make_ingredients(3)
    body = tmp_path / "body"
    BertForSequenceClassification.from_pretrained(bert_base).bert.save_pretrained(body)  # names lack "bert."
    assert "embeddings.word_embeddings.weight" in load_file(body / "model.safetensors")
    states = [load_file(f / "model.safetensors") for f in folders]

    tensors, ratios = stock_of(folders, StockBase.resolve(body))
    assert (
        ratios["classifier.weight"] is None
        and ratios["classifier.bias"] is None
        and ratios["bert.pooler.dense.weight"] is not None
    )
    torch.testing.assert_close(
        tensors["classifier.weight"], torch.stack([s["classifier.weight"] for s in states]).mean(0)
    )
    whole, _ = stock_of(folders, StockBase.resolve(bert_base))
    torch.testing.assert_close(
        tensors["bert.pooler.dense.weight"], whole["bert.pooler.dense.weight"], atol=1e-7, rtol=0
    )

    head = tmp_path / "start-head.safetensors"
    theta0 = load_file(bert_base / "model.safetensors")
    save_file({n: theta0[n] for n in ("classifier.weight", "classifier.bias")}, head)
    tensors, ratios = stock_of(folders, StockBase.resolve(body, head))
    assert ratios["classifier.weight"] is not None
    torch.testing.assert_close(tensors["classifier.weight"], whole["classifier.weight"], atol=1e-7, rtol=0)


def test_stock_recipe_scores_records_and_recooks_bit_for_bit(make_ingredients, bert_base, tmp_path):
    folders = make_ingredients(3)
    report = run_in_kitchen(
        Kitchen(folders, BiasJudge(), progress=False), "stock", tmp_path / "soup", options={"base": bert_base}
    )
    assert [r.name for r in report.record.results] == [
        "best individual",
        "stock",
        "uniform",
        "ensemble",
        "ensemble (greedy)",
    ]
    options = report.record.recipe.options
    assert options["base"]["ingredient"] == str(bert_base) and options["uniform_tensors"] == []
    assert options["clamped"] == len(stock_with_clamped(folders, StockBase.resolve(bert_base))[2]) > 0
    assert set(options["ratios"]) == {
        n for n in validate_ingredients(resolve_ingredients(folders)).shapes if "position_ids" not in n
    }
    card = (tmp_path / "soup" / "README.md").read_text()
    assert "Model Stock" in card and "towards the base `base`" in card and "uniform average" not in card
    assert str(tmp_path) not in card  # the base by name, not its machine path (issue 23)
    digest = hashlib.sha256((tmp_path / "soup" / "model.safetensors").read_bytes()).hexdigest()
    again = replay_recipe(tmp_path / "soup" / "recipe.yaml", tmp_path / "again")
    assert hashlib.sha256((again / "model.safetensors").read_bytes()).hexdigest() == digest
    assert json.loads((again / "soup.json").read_text())["recipe"]["options"]["clamped"] == options["clamped"]


def test_recooking_refuses_a_changed_base(make_ingredients, bert_base, tmp_path):
    folders = make_ingredients(2)
    kitchen = Kitchen(folders, BiasJudge(), progress=False)
    run_in_kitchen(kitchen, "stock", tmp_path / "soup", options={"base": bert_base})
    state = load_file(bert_base / "model.safetensors")
    state["classifier.bias"] += 1
    save_file(state, bert_base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SoupError, match="model.safetensors has changed since the recipe was written"):
        replay_recipe(tmp_path / "soup" / "recipe.yaml", tmp_path / "again")
    assert not (tmp_path / "again").exists()


def bad_bases(tmp_path: Path) -> dict[str, Path | None]:
    torch.manual_seed(0)
    T5ForConditionalGeneration(tiny_t5_config()).save_pretrained(tmp_path / "t5")
    BertModel(tiny_bert_config(hidden_size=8, intermediate_size=16)).save_pretrained(tmp_path / "narrow")
    return {"none": None, "t5": tmp_path / "t5", "narrow": tmp_path / "narrow"}


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("none", r"model stock: needs the base model θ₀"),
        ("t5", r"base '.*t5': is a 't5' model, the ingredients are 'bert'"),
        ("narrow", r"base '.*narrow': tensor '.*' has shape \[.*\], the ingredients have"),
    ],
)
def test_a_bad_base_is_refused_before_anything_is_written(make_ingredients, tmp_path, base, message):
    folders = make_ingredients(3)
    judge = BiasJudge()
    with pytest.raises(SoupError, match=message):
        stock_soup(folders, output_dir=tmp_path / "soup", base=bad_bases(tmp_path)[base], judge=judge)
    assert not (tmp_path / "soup").exists() and judge.calls == 0


def _base_like_an_ingredient(folders: list[Path], tmp_path: Path, how: str) -> Path:
    if how == "the same folder":
        return folders[1]
    if how == "a copy":
        return Path(shutil.copytree(folders[1], tmp_path / "copy"))
    body = tmp_path / "body-of-ing1"  # another file, the same weights: the body without the head
    BertForSequenceClassification.from_pretrained(folders[1]).bert.save_pretrained(body)
    return body


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("the same folder", r"base '.*ing1': is ingredient '.*ing1' \(give the model they were fine-tuned from\)"),
        ("a copy", r"base '.*copy': has the weights of ingredient '.*ing1' \(its task vector is zero"),
        ("the same body", r"base '.*body-of-ing1': has the weights of ingredient '.*ing1'"),
    ],
)
def test_a_base_equal_to_an_ingredient_is_refused(make_ingredients, tmp_path, how, message):
    folders = make_ingredients(3)
    base = _base_like_an_ingredient(folders, tmp_path, how)
    with pytest.raises(SoupError, match=message):
        stock_soup(folders, output_dir=tmp_path / "soup", base=base, judge=BiasJudge(), progress=False)
    assert not (tmp_path / "soup").exists()


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("base", math.nan, r"base '.*base': tensor 'bert.pooler.dense.bias' has NaN values"),
        ("base", math.inf, r"base '.*base': tensor 'bert.pooler.dense.bias' has Inf values"),
        ("head", math.nan, r"start head .*start-head.safetensors: tensor 'classifier.bias' has NaN values"),
    ],
)
def test_a_base_with_nan_or_inf_is_refused_by_name(make_ingredients, bert_base, tmp_path, where, value, message):
    folders = make_ingredients(2)
    state = load_file(bert_base / "model.safetensors")
    head = tmp_path / "start-head.safetensors"
    save_file({"classifier.bias": state["classifier.bias"]}, head)
    if where == "base":
        state["bert.pooler.dense.bias"][3] = value
        save_file(state, bert_base / "model.safetensors", metadata={"format": "pt"})
    else:
        save_file({"classifier.bias": torch.tensor([0.0, value])}, head)
    with pytest.raises(SoupError, match=message):
        stock_soup(
            folders, output_dir=tmp_path / "soup", base=bert_base, start_head=head, judge=BiasJudge(), progress=False
        )
    assert not (tmp_path / "soup").exists()


def test_one_ingredient_is_refused(make_ingredients, bert_base):
    ingredients = resolve_ingredients(make_ingredients(1))
    with pytest.raises(SoupError, match=r"model stock: needs at least two ingredients, got 1"):
        plan = validate_ingredients(ingredients, allow_single=True)
        stock_soup_tensors(ingredients, plan, StockBase.resolve(bert_base))


def test_the_card_names_the_tensors_the_base_lacks(make_ingredients, bert_base, tmp_path):
    body = tmp_path / "body"
    BertForSequenceClassification.from_pretrained(bert_base).bert.save_pretrained(body)
    run_in_kitchen(
        Kitchen(make_ingredients(2), BiasJudge(), progress=False), "stock", tmp_path / "soup", options={"base": body}
    )
    card = (tmp_path / "soup" / "README.md").read_text()
    assert (
        "The base lacks 2 tensor(s)\n(classifier.bias, classifier.weight): they are the ingredients' uniform average."
        in card
    )


def test_recipe_paths_are_relative_to_the_recipe_file_whatever_the_working_directory(
    make_ingredients, bert_base, tmp_path, monkeypatch
):
    folders = make_ingredients(2)
    head = tmp_path / "pantry" / "start-head.safetensors"
    head.parent.mkdir()
    theta0 = load_file(bert_base / "model.safetensors")
    save_file({n: theta0[n] for n in ("classifier.weight", "classifier.bias")}, head)
    monkeypatch.chdir(tmp_path)  # base, start head and soup given relative to the working directory
    options = {"base": "base", "start_head": "pantry/start-head.safetensors"}
    run_in_kitchen(Kitchen(folders, BiasJudge(), progress=False), "stock", "out/soup", options=options)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = tmp_path / "out" / "soup" / "recipe.yaml"
    assert "../../pantry/start-head.safetensors" in recipe.read_text()
    again = replay_recipe(recipe, "again")
    digest = hashlib.sha256((tmp_path / "out" / "soup" / "model.safetensors").read_bytes()).hexdigest()
    assert hashlib.sha256((again / "model.safetensors").read_bytes()).hexdigest() == digest
