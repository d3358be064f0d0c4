"""Soup diagnostics on constructed ingredients with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GLUE_DIR, needs_glue, perturbed, tiny_bert_config
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, BertModel

from hf_soups import diagnostics
from hf_soups.cli import main
from hf_soups.diagnostics import (
    Curve,
    Diagnosis,
    Landscape,
    Verdict,
    diagnose,
    format_report,
    loss_landscape,
    task_vectors,
    weight_space,
)
from hf_soups.diagnostics.verdicts import _judge_landscape
from hf_soups.errors import SoupError
from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import resolve_ingredients, validate_ingredients


@pytest.fixture
def runs(tmp_path, tiny_tokenizer):
    """``runs(n, name, ...)`` saves ``n`` small "fine-tunes" (noise 0.002) of a seeded tiny BERT classifier.

    Args (of the returned function):
        base_seed: seed of the base model (another seed is another base).
        head_seeds: one seed per run to re-initialise its classifier head with (``None``: the base's head).
        noise: the fine-tuning noise scale (0: exact copies of the base).
    """

    def make(n: int, name: str, base_seed: int = 0, head_seeds=None, noise: float = 0.002, **config) -> list[Path]:
        torch.manual_seed(base_seed)
        model = BertForSequenceClassification(tiny_bert_config(**config))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        folders = []
        for i in range(n):
            model.load_state_dict(state)
            if head_seeds is not None:
                generator = torch.Generator().manual_seed(head_seeds[i])
                torch.nn.init.normal_(model.classifier.weight, std=0.02, generator=generator)
            if noise:
                perturbed(model, seed=100 * base_seed + i + 1, scale=noise)
            folders.append(tmp_path / f"{name}{i}")
            model.save_pretrained(folders[-1])
            tiny_tokenizer.save_pretrained(folders[-1])
        return folders

    return make


def space(folders, base=None):
    ingredients = resolve_ingredients(folders)
    base_ingredient = resolve_ingredients([base])[0] if base is not None else None
    return weight_space(ingredients, validate_ingredients(ingredients), base_ingredient)


def test_copies_of_one_model_have_cosine_one(runs):
    (base,) = runs(1, "base", noise=0)
    copies = runs(3, "copy", noise=0.002)[:1] * 3  # one fine-tune, three times
    weights = space(copies, base=base)
    for sums in [weights.overall, *weights.groups.values()]:
        np.testing.assert_allclose(sums.cosines, 1.0, atol=1e-6)
        np.testing.assert_allclose(sums.distances, 0.0, atol=1e-6)
    assert weights.overall.norms[0] > 0
    mean_centred = space(copies).overall  # no base: every task vector is 0, identical models count as cosine 1
    np.testing.assert_array_equal(mean_centred.norms, 0.0)
    np.testing.assert_array_equal(mean_centred.cosines, 1.0)


@pytest.mark.parametrize("with_base", [True, False])
def test_sums_match_a_direct_computation(runs, with_base):
    (base,) = runs(1, "base", noise=0)
    folders = runs(3, "ft", noise=0.01)
    weights = space(folders, base=base if with_base else None)
    states = [load_file(f / "model.safetensors") for f in folders]
    names = weights.groups["encoder.layer.1"].tensors
    flat = np.stack([np.concatenate([s[n].double().numpy().ravel() for n in names]) for s in states])
    centre = (
        np.concatenate([load_file(base / "model.safetensors")[n].double().numpy().ravel() for n in names])
        if with_base
        else flat.mean(0)
    )
    tau = flat - centre
    group = weights.groups["encoder.layer.1"]
    np.testing.assert_allclose(group.gram, tau @ tau.T, rtol=1e-10)
    np.testing.assert_allclose(group.relative_norms, np.linalg.norm(tau, axis=1) / np.linalg.norm(centre), rtol=1e-10)
    raw = flat @ flat.T / np.outer(np.linalg.norm(flat, axis=1), np.linalg.norm(flat, axis=1))
    np.testing.assert_allclose(group.weight_cosines, raw, rtol=1e-10)
    np.testing.assert_allclose(group.distances[0, 1], np.linalg.norm(flat[0] - flat[1]), rtol=1e-8)
    assert list(weights.groups) == ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "head"]
    assert group.size == tau.shape[1]


def test_files_in_another_tensor_order_give_the_same_sums(runs, tmp_path):
    whole = runs(2, "whole")
    legacy = tmp_path / "legacy"  # pytorch_model.bin streams in the order it was saved: here reversed
    legacy.mkdir()
    (legacy / "config.json").write_bytes((whole[1] / "config.json").read_bytes())
    torch.save(dict(reversed(load_file(whole[1] / "model.safetensors").items())), legacy / "pytorch_model.bin")
    assert [n for n, _ in resolve_ingredients([legacy])[0].tensors()] != [
        n for n, _ in resolve_ingredients([whole[1]])[0].tensors()
    ]
    reference, mixed = space(whole), space([whole[0], legacy])
    for name, sums in reference.groups.items():
        np.testing.assert_allclose(mixed.groups[name].gram, sums.gram, rtol=1e-12)  # summed in another order


def test_chunked_reads_of_sharded_and_bf16_files_match_a_direct_computation(runs, tmp_path, monkeypatch):
    (base,) = runs(1, "base", noise=0)
    folders = runs(3, "ft", noise=0.01)
    model = BertForSequenceClassification.from_pretrained(folders[1])
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    folders = [folders[0], tmp_path / "sharded", tmp_path / "bf16"]
    shards = [sorted(f.glob("*.safetensors")) for f in [*folders, base]]
    assert len(shards[1]) > 1
    opened = []
    monkeypatch.setattr(task_vectors, "CHUNK", 7)  # many blocks per tensor, and a remainder

    def spying(path, mode):
        opened.append(path)
        return open(path, mode)

    monkeypatch.setattr(task_vectors, "open", spying, raising=False)
    monkeypatch.setattr(Ingredient, "tensors", lambda self, hash_cache=None: pytest.fail("loaded whole"))
    weights = space(folders, base=base)
    assert sorted(opened) == sorted(p for files in shards for p in files)  # each file opened once for the whole pass
    states = [{n: t for path in files for n, t in load_file(path).items()} for files in shards]
    for name, group in weights.groups.items():
        flat = np.stack([np.concatenate([s[n].double().numpy().ravel() for n in group.tensors]) for s in states])
        tau = flat[:3] - flat[3]
        np.testing.assert_allclose(group.gram, tau @ tau.T, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(group.centre_dot, tau @ flat[3], rtol=1e-10, err_msg=name)


def test_adapter_is_its_merged_model_in_weight_space(runs, tmp_path):
    (base,) = runs(1, "base", noise=0)
    torch.manual_seed(1)
    model = get_peft_model(
        BertForSequenceClassification.from_pretrained(base),
        LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, target_modules=["query", "value"]),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.add_(torch.randn(param.shape) * 0.3)
    model.save_pretrained(tmp_path / "adapter")
    model.merge_and_unload().save_pretrained(tmp_path / "merged")
    weights = space([tmp_path / "adapter", tmp_path / "merged"], base=base)
    assert weights.overall.norms[0] > 0.1
    np.testing.assert_allclose(weights.overall.norms[0], weights.overall.norms[1], rtol=1e-6)
    np.testing.assert_allclose(weights.overall.cosines, 1.0, atol=1e-6)


def test_base_without_model_prefix_or_head(runs, tmp_path):
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(tmp_path / "bare")  # "embeddings.…", no "bert." prefix, no head
    folders = runs(2, "ft")
    bare = space(folders, base=tmp_path / "bare")
    full = space(folders, base=runs(1, "base", noise=0)[0])
    np.testing.assert_allclose(bare.groups["encoder.layer.0"].gram, full.groups["encoder.layer.0"].gram, rtol=1e-10)
    assert bare.groups["head"].centre_sq != full.groups["head"].centre_sq  # the head is centred on the mean


def test_base_of_another_shape_is_bad_input(runs):
    (other,) = runs(1, "wide", noise=0, intermediate_size=48)
    with pytest.raises(
        SoupError,
        match=r"base '.*wide0': tensor 'bert.encoder.layer.0.intermediate.dense.(weight|bias)' has shape \[48",
    ):
        space(runs(2, "ft"), base=other)


def test_different_head_inits_are_flagged_by_layer_group(runs):
    folders = runs(3, "ft", head_seeds=[1, 2, 3])
    diagnosis = diagnose(folders)
    assert [v.verdict for v in diagnosis.verdicts] == ["different head"] * 3
    assert any(
        "classifier heads start from different random inits" in f and "classifier.weight" in f
        for f in diagnosis.findings
    )
    head = diagnosis.weights.groups["head"].weight_cosines
    body = diagnosis.weights.body.weight_cosines
    assert np.abs(head[~np.eye(3, dtype=bool)]).max() < 0.5 < body.min()


def test_one_head_from_another_init_is_named(runs):
    folders = runs(3, "ft", head_seeds=[1, 1, 2])
    verdicts = {v.spec: v.verdict for v in diagnose(folders).verdicts}
    assert verdicts == {
        str(folders[0]): "soup-compatible",
        str(folders[1]): "soup-compatible",
        str(folders[2]): "different head",
    }


@pytest.mark.parametrize("with_base", [True, False])
def test_model_from_another_base_is_off_base(runs, with_base):
    (base,) = runs(1, "base", noise=0)
    folders = runs(3, "ft") + runs(1, "stranger", base_seed=1)
    diagnosis = diagnose(folders, base=base if with_base else None)
    assert [v.verdict for v in diagnosis.verdicts] == ["soup-compatible"] * 3 + ["off-base"]
    assert "another base model" in diagnosis.verdicts[3].reasons[0]
    assert diagnosis.weights.centre.startswith("base model" if with_base else "mean of the ingredients")


@pytest.mark.parametrize("n", [2, 3])
def test_unrelated_bodies_are_said_plainly(runs, n):
    """Runs fine-tuned from different bases (seeds) share no body: with no majority to measure from, each is
    off-base for that reason, never "a different head while the body is shared"."""
    folders = [runs(1, f"base{seed}-", base_seed=seed)[0] for seed in range(n)]
    diagnosis = diagnose(folders)
    assert [v.verdict for v in diagnosis.verdicts] == ["off-base"] * n
    assert all("body is unrelated to every other ingredient's" in v.reasons[0] for v in diagnosis.verdicts)
    assert all("one pretrained base model" in v.suggestion for v in diagnosis.verdicts)
    assert not any("head" in f for f in diagnosis.findings)
    assert any("bodies are unrelated: no two share a base model" in f for f in diagnosis.findings)


def test_base_that_is_an_ingredient_is_named(runs):
    folders = runs(3, "ft")
    diagnosis = diagnose(folders, base=folders[1])
    assert [v.verdict for v in diagnosis.verdicts] == ["soup-compatible"] * 3
    assert diagnosis.verdicts[1].reasons == [
        f"it is the base given ({folders[1]}): identical weights, so its task "
        "vector is zero and its cosines with the others (0) say nothing"
    ]
    assert any(
        f.startswith(f"the base ({folders[1]}) is one of the ingredients ({folders[1]})") for f in diagnosis.findings
    )
    assert not diagnosis.verdicts[0].reasons and not diagnosis.verdicts[2].reasons


def test_report_columns_stay_apart_for_short_names():
    diagnosis = Diagnosis(["a", "b"], None, None, [Verdict("a", "soup-compatible"), Verdict("b", "off-base")], [])
    assert format_report(diagnosis).splitlines()[:3] == ["", "ingredient  verdict", "a           soup-compatible"]


def test_ingredient_that_does_not_validate_is_off_base(runs):
    folders = runs(2, "ft") + runs(1, "three", num_labels=3)
    diagnosis = diagnose(folders)
    assert [v.verdict for v in diagnosis.verdicts] == ["soup-compatible", "soup-compatible", "off-base"]
    assert "num_labels is 3" in diagnosis.verdicts[2].reasons[0]
    assert diagnosis.weights.specs == [str(f) for f in folders[:2]]


def test_barrier_marks_a_different_basin():
    curves = [
        Curve("flat", [0, 0.25, 0.5, 0.75, 1], [0.8, 0.8, 0.79, 0.78, 0.78]),
        Curve("valley", [0, 0.25, 0.5, 0.75, 1], [0.8, 0.7, 0.6, 0.7, 0.78]),
    ]
    landscape = Landscape("rte", "validation:select", "accuracy", {}, "best", curves)
    verdicts = {spec: Verdict(spec, "soup-compatible") for spec in ["best", "flat", "valley"]}
    findings = _judge_landscape(landscape, verdicts)
    assert curves[0].barrier == pytest.approx(0.0) and curves[1].barrier == pytest.approx(0.19)
    assert [verdicts[s].verdict for s in ["best", "flat", "valley"]] == [
        "soup-compatible",
        "soup-compatible",
        "different basin",
    ]
    assert findings == [
        ("1 of 2 ingredients lie behind a loss barrier from the best one (best): averaging them with it will hurt")
    ]


@needs_glue
def test_copies_give_a_flat_curve(runs):
    folders = runs(1, "ft")[:1] * 2
    ingredients = resolve_ingredients(folders)
    landscape = loss_landscape(ingredients, validate_ingredients(ingredients), "rte", glue_dir=GLUE_DIR, batch_size=64)
    (curve,) = landscape.curves
    assert curve.scores == [curve.scores[0]] * 5 and curve.barrier == 0.0
    assert landscape.split == "validation:select" and landscape.metric == "accuracy"


@needs_glue
def test_cli_on_tiny_models(make_ingredients, tmp_path, capsys):
    folders = [str(f) for f in make_ingredients(3)]
    output, plots = tmp_path / "diagnosis.json", tmp_path / "plots"
    code = main(
        [
            "diagnose",
            *folders,
            "--task",
            "rte",
            "--glue-dir",
            str(GLUE_DIR),
            "--output",
            str(output),
            "--plots",
            str(plots),
            "--batch-size",
            "64",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "centre: mean of the ingredients" in printed and "barrier" in printed
    report = json.loads(output.read_text())
    assert report["ingredients"] == folders
    assert {v["verdict"] for v in report["verdicts"]} <= set(diagnostics.VERDICTS)
    assert len(report["loss_landscape"]["curves"]) == 2
    assert report["weight_space"]["groups"]["head"]["tensors"] == ["classifier.bias", "classifier.weight"]
    assert (plots / "cosine_heatmap.png").stat().st_size > 0 and (plots / "interpolation.png").stat().st_size > 0


def test_cli_needs_two_ingredients(make_ingredients, capsys):
    (folder,) = make_ingredients(1)
    capsys.readouterr()
    assert main(["diagnose", str(folder)]) == 2
    assert (
        capsys.readouterr().err.strip() == "hf-soups diagnose: error: diagnose needs at least two ingredients, got 1"
    )
