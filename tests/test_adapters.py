"""Soups of PEFT LoRA adapters: averaged by ΔW = s·BA, written as a full model, an exact adapter or a truncated one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import tiny_bert_config
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification, BertModel

from hf_soups import SoupError, merge_models
from hf_soups.adapter_soup import apply_adapters, base_snapshot
from hf_soups.adapters import AdapterIngredient
from hf_soups.cli import main
from hf_soups.ingredients import resolve_ingredients, validate_ingredients

# (r, lora_alpha, target modules, use_rslora): different ranks, alphas and targets.
ADAPTERS = [
    (2, 4, ["query", "value"], False),
    (4, 16, ["query", "value"], False),
    (3, 3, ["query", "key", "value"], True),
]
INPUTS = {
    "input_ids": torch.tensor([[2, 10, 20, 30, 3], [2, 44, 45, 3, 0]]),
    "attention_mask": torch.tensor([[1] * 5, [1, 1, 1, 1, 0]]),
}


def make_adapter(base_dir, folder, seed, r, alpha, targets, rslora=False):
    """A LoRA adapter over the base in ``base_dir`` whose B ≠ 0 (and whose classifier head is trained too)."""
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(base_dir)
    config = LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=alpha, target_modules=targets, use_rslora=rslora)
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.add_(torch.randn(param.shape) * 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A tiny base saved locally and three adapters over it (named by path in base_model_name_or_path)."""
    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config()).save_pretrained(root / "base")
    adapters = [make_adapter(root / "base", root / f"adapter{i}", i + 1, *spec) for i, spec in enumerate(ADAPTERS)]
    return root / "base", adapters


def base_model(base_dir):
    return BertForSequenceClassification.from_pretrained(base_dir).eval()


def merged(base_dir, adapter):
    """What PEFT itself makes of one adapter: the base with the adapter merged in."""
    return PeftModel.from_pretrained(base_model(base_dir), adapter).merge_and_unload().eval()


def mean_state(models, weights=None):
    weights = torch.tensor(weights or [1.0] * len(models))
    weights = weights / weights.sum()
    states = [m.state_dict() for m in models]
    return {
        k: sum(w * s[k] for w, s in zip(weights, states, strict=True))
        for k in states[0]
        if states[0][k].is_floating_point()
    }


def logits(model):
    with torch.no_grad():
        return model.eval()(**INPUTS).logits


def test_adapter_config_names_the_local_base(lora):
    base_dir, adapters = lora
    assert json.loads((adapters[0] / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    ingredients = resolve_ingredients(adapters)
    assert all(isinstance(i, AdapterIngredient) for i in ingredients)
    assert ingredients[0].base is ingredients[1].base  # one base, resolved once


def test_full_soup_is_the_mean_of_the_merged_models(lora, tmp_path):
    base_dir, adapters = lora
    soup = merge_models(adapters, tmp_path / "soup", progress=False)
    expected = mean_state([merged(base_dir, a) for a in adapters])
    state = BertForSequenceClassification.from_pretrained(soup).state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=0, msg=name)
    record = json.loads((soup / "soup.json").read_text())
    assert [i["adapter"] for i in record["ingredients"]] == [
        {"type": "lora", "r": r, "lora_alpha": alpha, "base": str(base_dir), "revision": None}
        for r, alpha, _, _ in ADAPTERS
    ]
    assert record["base_model"] == str(base_dir)
    assert all(len(sha) == 64 for i in record["ingredients"] for sha in i["files"].values())


def test_exact_adapter_loads_in_peft_and_gives_the_full_soups_logits(lora, tmp_path):
    base_dir, adapters = lora
    full = merge_models(adapters, tmp_path / "full", weights=[1, 2, 3], progress=False)
    exact = merge_models(adapters, tmp_path / "exact", weights=[1, 2, 3], adapter_output="exact", progress=False)
    config = json.loads((exact / "adapter_config.json").read_text())
    assert config["r"] == sum(r for r, *_ in ADAPTERS) == config["lora_alpha"]
    assert config["base_model_name_or_path"] == str(base_dir)
    loaded = PeftModel.from_pretrained(base_model(base_dir), exact)
    torch.testing.assert_close(
        logits(loaded), logits(BertForSequenceClassification.from_pretrained(full)), atol=1e-5, rtol=0
    )
    assert json.loads((exact / "soup.json").read_text())["adapter"]["relative_error"] == 0.0


def test_svd_adapter_error_is_reported_and_shrinks_with_rank(lora, tmp_path, capsys):
    base_dir, adapters = lora
    errors = []
    for rank in (1, 3, 6):
        soup = merge_models(adapters, tmp_path / f"svd{rank}", adapter_output="svd", adapter_rank=rank, progress=False)
        assert json.loads((soup / "adapter_config.json").read_text())["r"] == rank
        errors.append(json.loads((soup / "soup.json").read_text())["adapter"]["relative_error"])
    assert 1 > errors[0] > errors[1] > errors[2] > 0
    # at rank Σrᵢ the truncation drops nothing: the adapter is the exact soup
    argv = [
        "merge",
        *map(str, adapters),
        "-o",
        str(tmp_path / "svd9"),
        "--adapter-output",
        "svd",
        "--adapter-rank",
        "9",
    ]
    assert main(argv) == 0
    assert "svd LoRA adapter of rank 9: relative error" in capsys.readouterr().out
    assert json.loads((tmp_path / "svd9" / "soup.json").read_text())["adapter"]["relative_error"] < 1e-6
    exact = merge_models(adapters, tmp_path / "exact", adapter_output="exact", progress=False)
    torch.testing.assert_close(
        logits(PeftModel.from_pretrained(base_model(base_dir), tmp_path / "svd9")),
        logits(PeftModel.from_pretrained(base_model(base_dir), exact)),
        atol=1e-5,
        rtol=0,
    )


def test_averaging_a_and_b_apart_is_not_the_soup(lora, tmp_path):
    """mean(B)·mean(A) ≠ mean(B·A): the soup must average the products (two adapters of one rank and alpha)."""
    base_dir, adapters = lora
    twin = make_adapter(base_dir, tmp_path / "twin", 7, *ADAPTERS[0])
    pair = [adapters[0], twin]
    naive = tmp_path / "naive"
    shutil.copytree(adapters[0], naive)
    factors = [load_file(a / "adapter_model.safetensors") for a in pair]
    save_file({k: (factors[0][k] + factors[1][k]) / 2 for k in factors[0]}, naive / "adapter_model.safetensors")
    soup = BertForSequenceClassification.from_pretrained(merge_models(pair, tmp_path / "soup", progress=False))
    expected = BertForSequenceClassification.from_pretrained(base_dir)
    expected.load_state_dict(mean_state([merged(base_dir, a) for a in pair]), strict=False)
    torch.testing.assert_close(logits(soup), logits(expected), atol=1e-5, rtol=0)
    assert (logits(merged(base_dir, naive)) - logits(soup)).abs().max() > 1e-3


def test_adapters_mix_with_full_models(lora, tmp_path):
    base_dir, adapters = lora
    merged(base_dir, adapters[1]).save_pretrained(tmp_path / "full1")
    soup = merge_models([adapters[0], tmp_path / "full1"], tmp_path / "soup", progress=False)
    expected = mean_state([merged(base_dir, adapters[0]), merged(base_dir, adapters[1])])
    state = BertForSequenceClassification.from_pretrained(soup).state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=0, msg=name)
    with pytest.raises(SoupError, match="full1'?: is a full model; an adapter soup needs every ingredient"):
        merge_models([adapters[0], tmp_path / "full1"], tmp_path / "exact", adapter_output="exact", progress=False)


def test_adapters_over_a_bare_base_are_named_as_transformers_loads_it(tmp_path):
    """A base stored without its ``bert.`` prefix (a sentence-transformers ``BertModel``: ``encoder.*``) is loaded
    into the adapters' BertForSequenceClassification as ``bert.*``, the new head coming from the adapters."""
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(tmp_path / "bare")
    adapters = [make_adapter(tmp_path / "bare", tmp_path / f"adapter{i}", i + 1, *ADAPTERS[i]) for i in range(2)]
    soup = merge_models(adapters, tmp_path / "soup", progress=False)
    assert json.loads((soup / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    expected = mean_state([merged(tmp_path / "bare", a) for a in adapters])
    state = BertForSequenceClassification.from_pretrained(soup).state_dict()
    assert set(expected) <= set(state)
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=0, msg=name)


@pytest.fixture(scope="module")
def minilm_like(tmp_path_factory):
    """A bare base that stores ``embeddings.position_ids`` as all-MiniLM-L6-v2's model.safetensors does (int64,
    [1, max_position_embeddings]: a buffer transformers ignores on load), a tokenizer, and two adapters over it."""
    from helpers import VOCAB

    root = tmp_path_factory.mktemp("minilm-like")
    torch.manual_seed(0)
    config = tiny_bert_config()
    BertModel(config).save_pretrained(root / "base")
    (root / "base" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    state = load_file(root / "base" / "model.safetensors")
    state["embeddings.position_ids"] = torch.arange(config.max_position_embeddings).unsqueeze(0)
    save_file(state, root / "base" / "model.safetensors", metadata={"format": "pt"})
    adapters = [make_adapter(root / "base", root / f"adapter{i}", i + 1, *ADAPTERS[i]) for i in range(2)]
    return root / "base", adapters


@pytest.mark.slow
def test_buffers_transformers_ignores_on_load_are_left_out_of_adapter_soups(minilm_like, tmp_path):
    """The base's stored position_ids is neither averaged nor written nor refused as "not a parameter": merge,
    the Python API's recipes and `hf-soups soup` all cook the LoRA sweep."""
    from helpers import BiasJudge, write_rte

    from hf_soups import greedy_soup

    base_dir, adapters = minilm_like
    soup = merge_models(adapters, tmp_path / "merged", progress=False)
    assert not any(name.endswith("position_ids") for name in load_file(soup / "model.safetensors"))
    expected = mean_state([merged(base_dir, a) for a in adapters])
    state = BertForSequenceClassification.from_pretrained(soup).state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=0, msg=name)
    greedy = greedy_soup(adapters, judge=BiasJudge(), output_dir=tmp_path / "greedy", progress=False)
    assert any(i.kept for i in greedy.record.ingredients)
    write_rte(tmp_path / "glue", 20)
    write_rte(tmp_path / "glue", 40, seed=1, file="train.tsv")
    assert (
        main(
            [
                "soup",
                *map(str, adapters),
                "--task",
                "rte",
                "--glue-dir",
                str(tmp_path / "glue"),
                "-o",
                str(tmp_path / "soup"),
                "--no-ensemble",
            ]
        )
        == 0
    )
    assert "bert.embeddings.position_ids" not in load_file(tmp_path / "soup" / "model.safetensors")


def test_adapter_over_another_base_is_refused(lora, tmp_path):
    _, adapters = lora
    torch.manual_seed(1)  # same architecture and shapes, other weights: only the base's identity tells them apart
    BertForSequenceClassification(tiny_bert_config()).save_pretrained(tmp_path / "other-base")
    stranger = make_adapter(tmp_path / "other-base", tmp_path / "stranger", 5, *ADAPTERS[0])
    with pytest.raises(
        SoupError, match=r"stranger': is an adapter over the base '.*other-base', but .* must share one base"
    ):
        merge_models([adapters[0], stranger], tmp_path / "soup", progress=False)
    assert not (tmp_path / "soup").exists()


def test_base_given_explicitly(lora, tmp_path):
    base_dir, adapters = lora
    anonymous = tmp_path / "anonymous"
    shutil.copytree(adapters[0], anonymous)
    config = json.loads((anonymous / "adapter_config.json").read_text())
    (anonymous / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    with pytest.raises(SoupError, match="anonymous': adapter_config.json names no base_model_name_or_path"):
        resolve_ingredients([anonymous, adapters[1]])
    validate_ingredients(resolve_ingredients([anonymous, adapters[1]], base=base_dir))


def test_adapter_that_does_not_fit_its_base_is_refused(lora, tmp_path):
    _, adapters = lora
    broken = tmp_path / "broken"
    shutil.copytree(adapters[0], broken)
    tensors = load_file(broken / "adapter_model.safetensors")
    name = next(k for k in tensors if k.endswith("query.lora_A.weight"))
    tensors[name] = torch.zeros(2, 8)
    save_file(tensors, broken / "adapter_model.safetensors")
    with pytest.raises(
        SoupError,
        match=r"broken': LoRA factors of '.*query.weight' make a \[16, 8\] update, the base weight is \[16, 16\]",
    ):
        validate_ingredients(resolve_ingredients([adapters[1], broken]))


def test_apply_adapters_swaps_soups_on_one_loaded_base(lora, tmp_path):
    base_dir, adapters = lora
    ingredients = resolve_ingredients(adapters)
    model = base_model(base_dir)
    untouched = model.bert.embeddings.word_embeddings.weight.clone()
    base_state = base_snapshot(model, ingredients)
    apply_adapters(model, ingredients, base_state, weights=[2, 1, 1])
    soup = merge_models(adapters, tmp_path / "soup", weights=[2, 1, 1], progress=False)
    torch.testing.assert_close(
        logits(model), logits(BertForSequenceClassification.from_pretrained(soup)), atol=1e-5, rtol=0
    )
    apply_adapters(model, ingredients[2:], base_state)
    torch.testing.assert_close(logits(model), logits(merged(base_dir, adapters[2])), atol=1e-5, rtol=0)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, untouched)


def test_greedy_and_uniform_soups_of_adapters(lora, tmp_path):
    """Recipes take adapters as ingredients; soup.json, recipe.yaml and the card say they were adapters, with ranks."""
    import yaml
    from helpers import BiasJudge

    from hf_soups import greedy_soup, replay_recipe, uniform_soup

    _, adapters = lora
    greedy = greedy_soup(adapters, judge=BiasJudge(), output_dir=tmp_path / "greedy", progress=False)
    assert any(i.kept for i in greedy.record.ingredients)
    uniform_soup(adapters, judge=BiasJudge(), output_dir=tmp_path / "uniform", progress=False)
    full = merge_models(adapters, tmp_path / "merged", progress=False)
    assert torch.equal(
        load_file(tmp_path / "uniform" / "model.safetensors")["classifier.weight"],
        load_file(full / "model.safetensors")["classifier.weight"],
    )
    record = json.loads((tmp_path / "uniform" / "soup.json").read_text())
    assert [i["adapter"]["r"] for i in record["ingredients"]] == [r for r, *_ in ADAPTERS]
    recipe = yaml.safe_load((tmp_path / "uniform" / "recipe.yaml").read_text())
    assert [m["adapter"]["lora_alpha"] for m in recipe["mix"]] == [a for _, a, *_ in ADAPTERS]
    card = (tmp_path / "uniform" / "README.md").read_text()
    assert "LoRA adapter r=4, lora_alpha=16" in card and "PEFT LoRA adapters" in card
    cooked = replay_recipe(tmp_path / "uniform", tmp_path / "again")
    assert (cooked / "model.safetensors").read_bytes() == (tmp_path / "uniform" / "model.safetensors").read_bytes()
