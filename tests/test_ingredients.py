"""Resolving ingredient specs and rejecting bad input: one clear message, nothing written."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

import pytest
import torch
from helpers import tiny_bert_config
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

from hf_soups import SoupError, merge_models, resolve_ingredients
from hf_soups.ingredients import check_distinct


def rewrite(folder, edit):
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def edit_config(folder, **values):
    config = json.loads((folder / "config.json").read_text())
    config.update(values)
    (folder / "config.json").write_text(json.dumps(config))


def assert_rejected(folders, tmp_path, match, **kwargs):
    with pytest.raises(SoupError, match=match):
        merge_models(folders, tmp_path / "soup", progress=False, **kwargs)
    assert not (tmp_path / "soup").exists()
    assert not any(p.name.endswith(".hf-soups-tmp") for p in tmp_path.iterdir())


def test_trainer_output_folder_expands_to_checkpoints(make_ingredients, tmp_path):
    folders = make_ingredients(3)
    run = tmp_path / "run"
    run.mkdir()
    for step, folder in zip([500, 1000, 1500], folders, strict=True):
        folder.rename(run / f"checkpoint-{step}")
    (run / "checkpoint-1500" / "trainer_state.json").write_text(
        json.dumps({"best_model_checkpoint": "/elsewhere/run/checkpoint-1000"})
    )
    assert [i.path.name for i in resolve_ingredients([run])] == [
        "checkpoint-500",
        "checkpoint-1000",
        "checkpoint-1500",
    ]
    assert [i.path.name for i in resolve_ingredients([run], checkpoints="last")] == ["checkpoint-1500"]
    assert [i.path.name for i in resolve_ingredients([run], checkpoints="best")] == ["checkpoint-1000"]


def test_best_checkpoint_needs_trainer_state(make_ingredients, tmp_path):
    (folder,) = make_ingredients(1)
    run = tmp_path / "run"
    run.mkdir()
    folder.rename(run / "checkpoint-10")
    with pytest.raises(SoupError, match="best_model_checkpoint"):
        resolve_ingredients([run], checkpoints="best")


def test_empty_list(tmp_path):
    assert_rejected([], tmp_path, "no ingredients")


def test_one_ingredient(make_ingredients, tmp_path):
    assert_rejected(make_ingredients(1), tmp_path, "only one ingredient.*allow-single")


def test_missing_path(make_ingredients, tmp_path):
    assert_rejected([*make_ingredients(1), str(tmp_path / "nope")], tmp_path, "ingredient '.*nope': no such folder")


def test_missing_hub_repo_offline(make_ingredients, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert_rejected(
        [*make_ingredients(1), "someone/not-cached@v1"], tmp_path, "someone/not-cached@v1.*not in the local Hub cache"
    )


def test_folder_without_weights(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    (folders[1] / "model.safetensors").unlink()
    assert_rejected(folders, tmp_path, f"ingredient '{folders[1]}': no weights found")


@pytest.mark.parametrize("damage", ["truncate", "garbage header"])
def test_corrupt_safetensors(make_ingredients, tmp_path, damage):
    folders = make_ingredients(2)
    file = folders[1] / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:8] + b"{not json" + data[17:])
    assert_rejected(folders, tmp_path, f"{file}: (truncated|corrupt)")


def test_different_architectures(make_ingredients, tmp_path):
    folders = make_ingredients(1) + make_ingredients(1, arch="t5", name="t5")
    assert_rejected(folders, tmp_path, "config model_type is 't5'")


def test_tensor_of_another_shape(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    rewrite(folders[1], lambda s: s.update({"classifier.bias": torch.zeros(5)}))
    assert_rejected(folders, tmp_path, r"tensor 'classifier.bias' has shape \[5\]")


def test_missing_tensor(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    rewrite(folders[1], lambda s: s.pop("classifier.bias"))
    assert_rejected(folders, tmp_path, "tensor 'classifier.bias' of .* is missing")


def test_extra_tensor(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    rewrite(folders[1], lambda s: s.update({"extra.weight": torch.zeros(2)}))
    assert_rejected(folders, tmp_path, "extra tensor 'extra.weight'")


@pytest.mark.parametrize(
    ("arch", "name", "tensor"),
    [  # a non-persistent buffer that older checkpoints store; a key T5ForConditionalGeneration ignores by pattern
        ("bert", "bert.embeddings.position_ids", torch.arange(64).unsqueeze(0)),
        ("t5", "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", torch.ones(32, 2)),
    ],
)
def test_tensors_transformers_ignores_on_load_are_left_out(make_ingredients, tmp_path, arch, name, tensor):
    """Stored tensors that ``from_pretrained`` ignores are not averaged, written or compared: an ingredient that
    stores one mixes with one that does not, and the soup loads as the ingredients do."""
    from helpers import BiasJudge

    from hf_soups import uniform_soup

    folders = make_ingredients(2, arch=arch)
    rewrite(folders[0], lambda s: s.update({name: tensor}))
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    assert name not in load_file(soup / "model.safetensors")
    if arch == "bert":
        uniform_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "uniform", progress=False)


def test_load_rules_are_remembered_across_runs_and_a_damaged_file_is_only_a_lost_shortcut(tmp_path, monkeypatch):
    """A merge of models seen before builds no model class (no transformers modeling imports, about 150 MB)."""
    import hf_soups.ingredient as ingredient

    monkeypatch.setenv("HF_SOUPS_HASH_CACHE", str(tmp_path / "sha256.json"))
    built, real = [], ingredient._built_rules
    monkeypatch.setattr(ingredient, "_built_rules", lambda config: built.append(config) or real(config))
    config = {"model_type": "bert", "architectures": ["BertModel"]}
    rules = []
    for damage in (None, None, "not json", '{"a": [1, 2]}'):
        if damage is not None:
            (tmp_path / ingredient.LOAD_RULES_FILE).write_text(damage)
        ingredient._load_rules.cache_clear()  # a new run
        rules.append(ingredient.ignored_on_load(config))
    assert len(built) == 3  # the first run, and after each damage
    assert all(r("embeddings.position_ids") and not r("embeddings.word_embeddings.weight") for r in rules)
    ingredient._load_rules.cache_clear()


def test_merge_of_models_from_different_bases_warns_once(make_ingredients, tmp_path, caplog):
    """Same architecture, shapes and tokenizer, but fine-tuned from different base models (another seed's init):
    merge still writes the soup, and logs one warning naming a pair; fine-tunes of one base log none."""
    related = make_ingredients(2)
    with caplog.at_level("WARNING", logger="hf_soups"):
        merge_models(related, tmp_path / "related", progress=False)
    assert caplog.records == []
    torch.manual_seed(1)
    BertForSequenceClassification(tiny_bert_config()).save_pretrained(tmp_path / "stranger")
    shutil.copy(related[0] / "tokenizer.json", tmp_path / "stranger")
    with caplog.at_level("WARNING", logger="hf_soups"):
        merge_models([*related, tmp_path / "stranger"], tmp_path / "soup", progress=False)
    assert (tmp_path / "soup" / "model.safetensors").is_file()
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "stranger' were not fine-tuned from one base model" in record.message


def test_different_num_labels(make_ingredients, tmp_path):
    folders = make_ingredients(1) + make_ingredients(1, name="three", num_labels=3)
    assert_rejected(folders, tmp_path, "num_labels is 3")


def test_different_label_maps(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    edit_config(folders[1], id2label={"0": "positive", "1": "negative"}, label2id={"positive": 0, "negative": 1})
    assert_rejected(folders, tmp_path, "label map id2label")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf(make_ingredients, tmp_path, bad):
    folders = make_ingredients(3)

    def poison(state):
        state["classifier.weight"][0, 0] = bad

    rewrite(folders[2], poison)
    assert_rejected(
        folders, tmp_path, f"tensor 'classifier.weight' has NaN or Inf values in ingredient '{folders[2]}'"
    )


@pytest.mark.parametrize(
    ("weights", "match"),
    [([1.0], "1 given for 2"), ([1.0, -1.0], "≥ 0"), ([0.0, 0.0], "sum to 0"), ([1.0, math.nan], "finite")],
)
def test_bad_weights(make_ingredients, tmp_path, weights, match):
    assert_rejected(make_ingredients(2), tmp_path, f"weights: .*{match}", weights=weights)


def test_output_folder_exists(make_ingredients, tmp_path):
    (tmp_path / "soup").mkdir()
    with pytest.raises(SoupError, match="exists.*overwrite"):
        merge_models(make_ingredients(2), tmp_path / "soup", progress=False)


def test_pickled_code_never_runs(make_ingredients, tmp_path):
    """A pytorch_model.bin that would run code when unpickled is refused by weights_only loading."""
    folders = make_ingredients(2)
    (folders[1] / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')",))

    torch.save({"x": Evil()}, folders[1] / "pytorch_model.bin")
    assert_rejected(folders, tmp_path, "weights-only")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "name", ["../elsewhere/model.safetensors", "/abs/model.safetensors", "sub/../../x.safetensors"]
)
def test_shard_index_may_not_name_files_outside_the_ingredient(make_ingredients, tmp_path, name):
    folders = make_ingredients(2, save={"max_shard_size": "20KB"})
    index = json.loads((folders[1] / "model.safetensors.index.json").read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = name
    (folders[1] / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_rejected(folders, tmp_path, f"names '{name}', outside the ingredient's folder")


@pytest.mark.parametrize("twice", ["same", "dot slash", "symlink", "checkpoints"])
def test_an_ingredient_named_twice_is_refused(make_ingredients, tmp_path, monkeypatch, twice):
    folders = make_ingredients(2)
    monkeypatch.chdir(tmp_path)
    second = {"same": "ing0", "dot slash": "./ing0", "symlink": "link", "checkpoints": "ing0"}[twice]
    (tmp_path / "link").symlink_to(folders[0])
    specs = ["ing0", second] if twice != "checkpoints" else ["ing0", "ing1", str(folders[0])]
    assert_rejected(specs, tmp_path, "ingredient '.*': the same model as ingredient '.*ing0' .*named twice")


def test_different_tokenizers_are_refused(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    tokenizer = json.loads((folders[1] / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["[CLS]"], vocab["[SEP]"] = vocab["[SEP]"], vocab["[CLS]"]  # same size, other ids
    (folders[1] / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert_rejected(
        folders,
        tmp_path,
        f"ingredient '{folders[1]}': tokenizer file tokenizer.json differs from ingredient '{folders[0]}'",
    )


def test_tokenizer_padding_settings_do_not_count_as_a_different_tokenizer(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    for folder, length in zip(folders, (16, 32), strict=True):
        (folder / "tokenizer.json").write_text(
            json.dumps({"model": {"vocab": {"a": 0}}, "truncation": {"max_length": length}})
        )
    merge_models(folders, tmp_path / "soup", progress=False)


def test_one_model_twice_is_refused_by_its_files_or_their_known_sha256(make_ingredients, tmp_path):
    [original, other] = make_ingredients(2)
    linked, copied = tmp_path / "linked", tmp_path / "copied"
    linked.mkdir()
    for file in original.iterdir():
        os.link(file, linked / file.name)
    shutil.copytree(original, copied)
    with pytest.raises(SoupError, match=f"ingredient '{linked}': the same model as ingredient '{original}'"):
        check_distinct(resolve_ingredients([original, other, linked]))
    first, second = resolve_ingredients([original, copied])
    check_distinct([first, second])  # a copy whose bytes are not hashed yet passes, as before
    digest = hashlib.sha256((original / "model.safetensors").read_bytes()).hexdigest()
    for ingredient in (first, second):  # as a Hub ingredient's files are hashed when resolved
        ingredient.sha256 = {"model.safetensors": digest}
    with pytest.raises(SoupError, match=f"ingredient '{copied}': the same model as ingredient '{original}'"):
        check_distinct([first, second])
    check_distinct(resolve_ingredients([original, other]))
