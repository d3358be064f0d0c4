"""Every kind of bad input to the command line: exit status 2, one stderr line naming the culprit, nothing written.

Each case prepares a bad input in a folder holding two tiny ingredients (``ing0``, ``ing1``; the working
directory) and gives the command line to run and a piece of the message it must print.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct

import pytest
import torch
import yaml
from helpers import GLUE_DIR, BiasJudge, tiny_bert_config, write_rte, write_stsb
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

from hf_soups import SoupCallback, SoupError, uniform_soup
from hf_soups.cli import main
from hf_soups.options import CollectOptions, CookOptions, JudgeOptions

MERGE = ["merge", "ing0", "ing1", "-o", "soup"]
PUSH = ["push", "made", "me/soup", "--token", "hf_" + "x" * 32]
SOUP = ["soup", "ing0", "ing1", "--task", "rte", "-o", "soup", "--glue-dir", str(GLUE_DIR)]


def _config(folder, **values):
    config = json.loads((folder / "config.json").read_text())
    config.update(values)
    (folder / "config.json").write_text(json.dumps(config))


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _mkdir(folder):
    folder.mkdir(exist_ok=True)
    return folder


def _negative_shape(folder, shape):
    header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}}).encode()
    _write(folder / "model.safetensors", struct.pack("<Q", len(header)) + header + bytes(16))


def _trainer_run(tmp, state):
    (tmp / "run" / "checkpoint-1").mkdir(parents=True)
    for file in (tmp / "ing0").iterdir():
        (tmp / "run" / "checkpoint-1" / file.name).write_bytes(file.read_bytes())
    _write(tmp / "run" / "checkpoint-1" / "trainer_state.json", state)


def _pickled_code(folder):
    class Evil:
        def __reduce__(self):
            return (exec, ("print('pwned')",))

    (folder / "model.safetensors").unlink()
    torch.save({"x": Evil()}, folder / "pytorch_model.bin")


def _recipe(tmp, edit):
    uniform_soup([tmp / "ing0", tmp / "ing1"], judge=BiasJudge(), output_dir=tmp / "made", progress=False)
    recipe = yaml.safe_load((tmp / "made" / "recipe.yaml").read_text())
    edit(recipe)
    (tmp / "made" / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def _recipe_with_alias(tmp):
    _recipe(tmp, lambda r: None)
    path = tmp / "made" / "recipe.yaml"
    text = path.read_text().replace("dtype: float32", "dtype: &kind float32")
    text = text.replace("metric: accuracy", "metric: *kind")
    assert "*kind" in text
    path.write_text(text)


def _made_then(tmp, change):
    _recipe(tmp, lambda r: None)
    change(tmp / "made")


def _stock_base_and_head(tmp, cut=None, content=None):
    shutil.copytree(tmp / "ing0", tmp / "base")
    save_file({"classifier.bias": torch.zeros(2)}, tmp / "head.safetensors")
    whole = (tmp / "head.safetensors").read_bytes()
    (tmp / "head.safetensors").write_bytes(whole[:cut] if content is None else content)


STOCK = [*SOUP, "--recipe", "stock", "--base", "base", "--start-head"]


def _other_size(folder, **sizes):
    """A model of another size (its config and weights) in place of the one in ``folder``."""
    BertForSequenceClassification(tiny_bert_config(**sizes)).save_pretrained(folder)


def _head_of_three(folder):
    """A classifier head with three outputs in place of two (the config left as it is)."""
    state = load_file(folder / "model.safetensors")
    state["classifier.weight"] = torch.zeros(3, state["classifier.weight"].shape[1])
    state["classifier.bias"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _no_tokenizer(folder):
    for file in folder.iterdir():
        if file.name not in ("config.json", "model.safetensors"):
            file.unlink()


DATA = ["soup", "ing0", "ing1", "--dataset", "data", "-o", "soup"]


def _data(tmp, labels=("0", "1")):
    """A dataset folder of yours: train.csv (20 rows) and dev.csv (10 rows), columns text and label."""
    for name, rows in (("train", 20), ("dev", 10)):
        lines = ["text,label", *(f"the cat w{i},{labels[i % 2]}" for i in range(rows))]
        _write(tmp / "data" / f"{name}.csv", "\n".join(lines) + "\n")


def _poison(folder, value):
    state = load_file(folder / "model.safetensors")
    state["classifier.bias"][0] = float(value)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _stsb_score(glue_dir, score):
    """An STS-B dev file whose second row's score is ``score``."""
    tsv = write_stsb(glue_dir, 5)
    lines = tsv.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rsplit("\t", 1)[0] + f"\t{score}\n"
    tsv.write_text("".join(lines))


SOUP = ["soup", "ing0", "ing1", "--task", "rte", "-o", "soup", "--glue-dir", str(GLUE_DIR)]

# (case, prepare(tmp folder) or None, command line, what the message must name)
CASES = [
    # config files
    (
        "config is a list",
        lambda t: _write(t / "ing1" / "config.json", "[1, 2]"),
        MERGE,
        "ing1/config.json is a JSON list",
    ),
    (
        "config not UTF-8",
        lambda t: _write(t / "ing1" / "config.json", b'{"a": "\xff"}'),
        MERGE,
        "ing1/config.json is not valid JSON",
    ),
    (
        "id2label ids",
        lambda t: _config(t / "ing1", id2label={"x": "A", "y": "B"}),
        MERGE,
        "id2label needs integer ids",
    ),
    (
        "model_type a list",
        lambda t: _config(t / "ing1", model_type=["bert"]),
        MERGE,
        "ing1/config.json: model_type is ['bert']",
    ),
    (
        "unknown model_type",
        lambda t: [_config(t / f, model_type="nomodel") for f in ("ing0", "ing1")],
        SOUP,
        "model_type 'nomodel' is not one transformers knows",
    ),
    (
        "head of another size",
        lambda t: [_config(t / f, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}) for f in ("ing0", "ing1")],
        SOUP,
        "ingredient 'ing0': tensor 'classifier.bias' has shape [2], its config.json builds [3]",
    ),
    (
        "soup output holds ingredients",
        lambda t: (t / "runs").mkdir() or (t / "ing0").rename(t / "runs" / "a"),
        ["soup", "runs/a", "ing1", "--task", "rte", "-o", "runs", "--overwrite", "--glue-dir", str(GLUE_DIR)],
        "output: runs holds ingredient 'runs/a'",
    ),
    (
        "negative config size",
        lambda t: [_config(t / f, hidden_size=-16) for f in ("ing0", "ing1")],
        SOUP,
        "ing0/config.json: hidden_size is -16, a negative size",
    ),
    (
        "soup named twice",
        None,
        ["soup", "ing0", "ing0", "--task", "rte", "-o", "soup", "--glue-dir", str(GLUE_DIR)],
        "the same model as ingredient 'ing0'",
    ),
    (
        "negative dimensions",
        lambda t: _negative_shape(t / "ing1", [-2, 2]),
        MERGE,
        "ing1/model.safetensors: tensor 'w' has a negative dimension in its shape [-2, 2]",
    ),
    (
        "negative dimensions of a positive size",
        lambda t: _negative_shape(t / "ing1", [-2, -2]),
        MERGE,
        "ing1/model.safetensors: tensor 'w' has a negative dimension in its shape [-2, -2]",
    ),
    ("pickled code", lambda t: _pickled_code(t / "ing1"), MERGE, "refused by weights-only loading"),
    (
        "bad trainer_state",
        lambda t: _trainer_run(t, "{not json"),
        ["merge", "run", "ing1", "-o", "soup", "--checkpoints", "best"],
        "trainer_state.json is not valid JSON",
    ),
    (
        "trainer_state a list",
        lambda t: _trainer_run(t, "[]"),
        ["merge", "run", "ing1", "-o", "soup", "--checkpoints", "best"],
        "records no best_model_checkpoint",
    ),
    # ingredient specs
    (
        "mistyped local path",
        lambda t: (t / "runs").mkdir(),
        ["merge", "runs/ing9", "ing1", "-o", "soup"],
        "ingredient 'runs/ing9': no such folder",
    ),
    (
        "symlink loop",
        lambda t: (t / "loop").symlink_to(t / "loop"),
        ["merge", "loop", "ing1", "-o", "soup"],
        "ingredient 'loop': a symlink to nothing (or a symlink loop)",
    ),
    ("named twice", None, ["merge", "ing0", "./ing0", "-o", "soup"], "the same model as ingredient 'ing0'"),
    (
        "named twice by hard links",
        lambda t: [os.link(file, _mkdir(t / "linked") / file.name) for file in (t / "ing0").iterdir()],
        ["merge", "ing0", "linked", "-o", "soup"],
        "ingredient 'linked': the same model as ingredient 'ing0'",
    ),
    (
        "a model with more layers",
        lambda t: _other_size(t / "ing1", num_hidden_layers=3),
        MERGE,
        "ingredient 'ing1': a model of another size than ingredient 'ing0': config num_hidden_layers 3 ≠ 2",
    ),
    (
        "a wider model",
        lambda t: _other_size(t / "ing1", hidden_size=32, intermediate_size=64),
        SOUP,
        "ingredient 'ing1': a model of another size than ingredient 'ing0': config hidden_size 32 ≠ 16, "
        "intermediate_size 64 ≠ 32",
    ),
    ("name past the limit", None, ["merge", "ing0", "a" * 300, "-o", "soup"], "File name too long (no such folder"),
    ("Hub id past the limit", None, ["merge", "ing0", "me/" + "a" * 300, "-o", "soup"], "not a valid Hub repo id"),
    # output folders
    ("output .", None, ["merge", "ing0", "ing1", "-o", "."], "--output: '.' is not a folder name"),
    ("output empty", None, ["merge", "ing0", "ing1", "-o", ""], "--output: '' is not a folder name"),
    ("output ..", None, ["merge", "ing0", "ing1", "-o", "..", "--overwrite"], "--output: '..' is not a folder name"),
    (
        "output parent is a file",
        lambda t: _write(t / "afile", "x"),
        ["merge", "ing0", "ing1", "-o", "afile/soup"],
        "afile is a file",
    ),
    ("output is an ingredient", None, ["merge", "ing0", "ing1", "-o", "ing1", "--overwrite"], "is ingredient 'ing1'"),
    (
        "output holds ingredients",
        lambda t: (t / "runs").mkdir() or (t / "ing0").rename(t / "runs" / "a"),
        ["merge", "runs/a", "ing1", "-o", "runs", "--overwrite"],
        "output: runs holds ingredient 'runs/a'",
    ),
    (
        "cook output is an ingredient",
        lambda t: _recipe(t, lambda r: None),
        ["cook", "made", "-o", "ing0", "--overwrite"],
        "is ingredient",
    ),
    (
        "cook output is the soup it replays",
        lambda t: _recipe(t, lambda r: None),
        ["cook", "made/recipe.yaml", "-o", "made", "--overwrite"],
        "output: made holds the recipe file made/recipe.yaml",
    ),
    (
        "cook output links to the soup it replays",
        lambda t: _recipe(t, lambda r: None) or (t / "link").symlink_to(t / "made"),
        ["cook", "made", "-o", "link", "--overwrite"],
        "output: link holds the recipe file made/recipe.yaml",
    ),
    (
        "stock base is an ingredient",
        None,
        [*SOUP, "--recipe", "stock", "--base", "ing1"],
        "base 'ing1': is ingredient 'ing1'",
    ),
    (
        "stock start head truncated",
        lambda t: _stock_base_and_head(t, cut=-4),
        [*STOCK, "head.safetensors"],
        "start head head.safetensors: truncated safetensors file",
    ),
    (
        "stock start head not safetensors",
        lambda t: _stock_base_and_head(t, content=b"a pickle, a zip, a text"),
        [*STOCK, "head.safetensors"],
        "start head head.safetensors: corrupt or truncated safetensors file",
    ),
    (
        "stock start head a folder",
        lambda t: _stock_base_and_head(t),
        [*STOCK, "ing1"],
        "start head ing1: not a regular file",
    ),
    # flag values
    ("weights negative", None, [*MERGE, "--weights", "-1,2"], "weights: ingredient 'ing0': must be ≥ 0"),
    ("weights not numbers", None, [*MERGE, "--weights", "a,b"], "--weights: 'a,b' is not a comma-separated list"),
    ("weights overflow", None, [*MERGE, "--weights", "1e308,1e308"], "positive, finite sum"),
    ("weights zero", None, [*MERGE, "--weights", "0,0"], "positive, finite sum"),
    ("shard size abc", None, [*MERGE, "--max-shard-size", "abc"], "--max-shard-size: 'abc' is not a size"),
    ("shard size 0", None, [*MERGE, "--max-shard-size", "0"], "--max-shard-size: '0' is not a size"),
    ("shard size negative", None, [*MERGE, "--max-shard-size", "-5GB"], "--max-shard-size: '-5GB' is not a size"),
    ("threads 0", None, [*MERGE, "--threads", "0"], "--threads: must be a whole number ≥ 1, got '0'"),
    (
        "adapter rank 0",
        None,
        [*MERGE, "--adapter-output", "svd", "--adapter-rank", "0"],
        "--adapter-rank: must be a whole",
    ),
    ("unknown dtype", None, [*MERGE, "--dtype", "fp8"], "--dtype: invalid choice"),
    ("batch size 0", None, [*SOUP, "--batch-size", "0"], "--batch-size: must be a whole number ≥ 1"),
    ("epochs 0", None, [*SOUP, "--recipe", "learned", "--epochs", "0"], "--epochs: must be a whole number ≥ 1"),
    ("lr nan", None, [*SOUP, "--recipe", "learned", "--lr", "nan"], "--lr: must be a finite number"),
    ("lr negative", None, [*SOUP, "--recipe", "learned", "--lr", "-0.1"], "--lr: must be > 0"),
    ("missing -o", None, ["merge", "ing0", "ing1"], "required: -o/--output"),
    ("abbreviated flag", None, [*SOUP, "--greedy-rul", "ties"], "unrecognized arguments: --greedy-rul ties"),
    ("abbreviated flag of merge", None, [*MERGE, "--weigh", "3,1"], "unrecognized arguments: --weigh 3,1"),
    # evaluate and diagnose
    ("evaluate missing model", None, ["evaluate", "nosuch", "--task", "rte"], "ingredient 'nosuch': no such folder"),
    (
        "evaluate corrupt model",
        lambda t: _write(t / "ing0" / "model.safetensors", "garbage"),
        ["evaluate", "ing0", "--task", "rte"],
        "ing0/model.safetensors: truncated",
    ),
    (
        "evaluate without a tokenizer",
        lambda t: _no_tokenizer(t / "ing0"),
        ["evaluate", "ing0", "--task", "rte", "--glue-dir", str(GLUE_DIR)],
        "ingredient 'ing0': no tokenizer files to score with (save its tokenizer beside the weights)",
    ),
    (
        "evaluate output in a missing folder",
        None,
        ["evaluate", "ing0", "--task", "rte", "--output", "no/such/r.json"],
        "--output: the folder of no/such/r.json does not exist",
    ),
    (
        "evaluate output onto a folder",
        None,
        ["evaluate", "ing0", "--task", "rte", "--output", "ing1"],
        "--output: 'ing1' is a folder",
    ),
    (
        "diagnose plots onto a file",
        lambda t: _write(t / "afile", "x"),
        ["diagnose", "ing0", "ing1", "--plots", "afile"],
        "--plots: ",
    ),
    ("diagnose batch size", None, ["diagnose", "ing0", "ing1", "--batch-size", "-3"], "--batch-size: must be a whole"),
    *[
        (
            f"diagnose {value} weights",
            lambda t, value=value: _poison(t / "ing1", value),
            ["diagnose", "ing0", "ing1"],
            "tensor 'classifier.bias' has NaN or Inf values in ingredient 'ing1'",
        )
        for value in ["nan", "inf"]
    ],
    (
        "diagnose --task without a tokenizer",
        lambda t: _no_tokenizer(t / "ing0"),
        ["diagnose", "ing0", "ing1", "--task", "rte", "--glue-dir", str(GLUE_DIR)],
        "ingredient 'ing0': no tokenizer files to score with (save its tokenizer beside the weights)",
    ),
    *[
        (
            f"STS-B score {score}",
            lambda t, score=score: _stsb_score(t / "glue", score),
            [
                "soup",
                "ing0",
                "ing1",
                "--task",
                "stsb",
                "-o",
                "soup",
                "--glue-dir",
                "glue",
                "--select-split",
                "validation:select",
                "--report-split",
                "validation:report",
            ],
            f"glue/STS-B/dev.tsv line 3: score '{score}' is not a number from 0 to 5",
        )
        for score in ["nan", "1e9", "-0.5", "inf"]
    ],
    # held-out selection (the soup command reads RTE from the shared GLUE folder)
    *[
        (f"soup {' '.join(flags)}", None, [*SOUP, *flags], message)
        for flags, message in [
            (["--heldout-fraction", "0"], "--heldout-fraction: must be in (0, 0.5], got '0'"),
            (["--heldout-fraction", "0.6"], "--heldout-fraction: must be in (0, 0.5], got '0.6'"),
            (["--recipe", "bagged", "--bags", "0"], "--bags: must be a whole number ≥ 1, got '0'"),
            (["--recipe", "bagged", "--bag-seed", "-1"], "--bag-seed: must be a whole number ≥ 0, got '-1'"),
            (["--recipe", "bagged", "--resume"], "--resume: applies to the recipe greedy only, not to 'bagged'"),
            (["--recipe", "uniform", "--min-gain", "0.1"], "--min-gain: applies to the recipe greedy / bagged"),
            (["--min-gain", "-0.1"], "--min-gain: must be ≥ 0, got '-0.1'"),
            (["--min-gain", "nan"], "--min-gain: must be a finite number, got 'nan'"),
            (
                ["--select-split", "validation:select", "--report-split", "validation"],
                "select_split 'validation:select' overlaps report_split 'validation'",
            ),
            (
                ["--recipe", "fisher", "--statistics-rows", "0"],
                "--statistics-rows: must be a whole number ≥ 1, got '0'",
            ),
            (
                ["--recipe", "regmean", "--statistics-rows", "-5"],
                "--statistics-rows: must be a whole number ≥ 1, got '-5'",
            ),
            (
                ["--recipe", "fisher", "--statistics-rows", "250"],
                "statistics_rows: 250 is more than the 249 rows of the selection split train:heldout",
            ),
            (
                ["--recipe", "regmean", "--statistics-rows", "1000"],
                "statistics_rows: 1000 is more than the 249 rows of the selection split train:heldout",
            ),
            (["--recipe", "regmean", "--regmean-alpha", "1.5"], "--regmean-alpha: must be in [0, 1], got '1.5'"),
            (["--recipe", "regmean", "--regmean-alpha", "-0.1"], "--regmean-alpha: must be in [0, 1], got '-0.1'"),
            (["--recipe", "regmean", "--regmean-alpha", "nan"], "--regmean-alpha: must be a finite number, got 'nan'"),
            (["--recipe", "fisher", "--fisher-over", "best"], "--fisher-over: invalid choice: 'best'"),
        ]
    ],
    *[
        (
            f"{recipe} over heads of another shape",
            lambda t: _head_of_three(t / "ing1"),
            [*SOUP, "--recipe", recipe],
            "ingredient 'ing1': tensor 'classifier.bias' has shape [3], ingredient 'ing0' has [2]",
        )
        for recipe in ("fisher", "regmean")
    ],
    (
        "soup on a GLUE tsv that is not UTF-8",
        lambda t: _write(tsv := write_rte(t / "glue", 5, file="train.tsv"), tsv.read_bytes() + b"5\t\xe9\ta\t0"),
        ["soup", "ing0", "ing1", "--task", "rte", "-o", "soup", "--glue-dir", "glue"],
        "glue/RTE/train.tsv line 7: byte 0xe9 is not UTF-8 text",
    ),
    (
        "soup on a GLUE folder without a train split",
        lambda t: write_rte(t / "glue", 20),
        ["soup", "ing0", "ing1", "--task", "rte", "-o", "soup", "--glue-dir", "glue"],
        "GLUE folder 'glue': missing RTE/train.tsv (task 'rte')",
    ),
    # a dataset of your own (data/train.csv and data/dev.csv: text and label, the class ids of the models' id2label)
    *[
        (f"dataset {case}", _data, argv, message)
        for case, argv, message in [
            (
                "missing file",
                ["soup", "ing0", "ing1", "--dataset", "nosuch.csv", "-o", "soup"],
                "dataset file 'nosuch.csv': no such file",
            ),
            (
                "missing folder",
                ["soup", "ing0", "ing1", "--dataset", "no/such", "-o", "soup"],
                "dataset 'no/such': no such local file or folder, and the Hub gave none",
            ),
            (
                "missing column",
                [*DATA, "--text-columns", "sentence"],
                "dataset 'data' split 'train': no column 'sentence'; its columns: text, label",
            ),
            ("unknown metric", [*DATA, "--metric", "bleu"], "unknown metric 'bleu'; metrics: accuracy, f1, f1_macro"),
            (
                "metric for another task",
                [*DATA, "--metric", "pearson"],
                "metric 'pearson' does not fit a classifier of 2 classes; metrics that do: accuracy,",
            ),
            (
                "missing split",
                [*DATA, "--report-split", "test"],
                "dataset 'data' has no split 'test'; its splits: train, validation,",
            ),
            (
                "overlapping splits",
                [*DATA, "--report-split", "train"],
                "select_split 'train:heldout' overlaps report_split 'train'",
            ),
            ("option without a dataset", [*SOUP, "--metric", "f1"], "metric='f1' is an option of a dataset"),
            (
                "evaluate missing column",
                ["evaluate", "ing0", "--dataset", "data", "--label-column", "y"],
                "dataset 'data' split 'validation': no column 'y'",
            ),
        ]
    ],
    (
        "dataset label the models do not know",
        lambda t: _data(t, labels=("negative", "positive")),
        DATA,
        "dataset 'data' split 'train' column 'label': label 'negative' is not a class of the models (0: LABEL_0, "
        "1: LABEL_1)",
    ),
    # hand-edited recipes
    (
        "recipe zero weights",
        lambda t: _recipe(t, lambda r: [m.update(weight=0) for m in r["mix"]]),
        ["cook", "made", "-o", "soup"],
        "positive, finite sum",
    ),
    (
        "recipe list for a string",
        lambda t: _recipe(t, lambda r: r.update(dtype=["bf16"])),
        ["cook", "made", "-o", "soup"],
        "`dtype` must be a string",
    ),
    (
        "recipe misspelled mix key",
        lambda t: _recipe(t, lambda r: r["mix"][0].update(weigth=3.0)),
        ["cook", "made", "-o", "soup"],
        "mix entry 1 ('../ing0'): unknown key 'weigth' (the keys: ingredient, sha256, weight, layer_weights, adapter, "
        "statistics)",
    ),
    (
        "recipe misspelled key",
        lambda t: _recipe(t, lambda r: r.update(dtpye="bfloat16")),
        ["cook", "made", "-o", "soup"],
        "made/recipe.yaml: unknown key 'dtpye'",
    ),
    (
        "recipe misspelled base key",
        lambda t: _recipe(t, lambda r: r.update(base={"ingredient": "ing0", "sha265": {}})),
        ["cook", "made", "-o", "soup"],
        "made/recipe.yaml: `base`: unknown key 'sha265'",
    ),
    (
        "recipe unknown recipe",
        lambda t: _recipe(t, lambda r: r.update(recipe="frobnicate")),
        ["cook", "made", "-o", "soup"],
        "made/recipe.yaml: unknown recipe 'frobnicate' (recipes: ",
    ),
    (
        "recipe misspelled option",
        lambda t: _recipe(t, lambda r: r.update(options={"greedy_rul": "ties"})),
        ["cook", "made", "-o", "soup"],
        "made/recipe.yaml: `options`: unknown key 'greedy_rul' (the keys: greedy_rule, ",
    ),
    (
        "recipe options not a mapping",
        lambda t: _recipe(t, lambda r: r.update(options=["bags", 20])),
        ["cook", "made", "-o", "soup"],
        "made/recipe.yaml: `options` must be a mapping, got ['bags', 20]",
    ),
    (
        "recipe ingredient past the name limit",
        lambda t: _recipe(t, lambda r: r["mix"][0].update(ingredient="a" * 300)),
        ["cook", "made", "-o", "soup"],
        "File name too long (no such folder",
    ),
    ("cook a device", None, ["cook", "/dev/zero", "-o", "soup"], "recipe file /dev/zero: not a regular file"),
    (
        "cook a FIFO",
        lambda t: os.mkfifo(t / "recipe.yaml"),
        ["cook", "recipe.yaml", "-o", "soup"],
        "recipe file recipe.yaml: not a regular file",
    ),
    (
        "recipe too large",
        lambda t: _write(t / "recipe.yaml", "mix: []\n" + "#" * 4 * 2**20),
        ["cook", "recipe.yaml", "-o", "soup"],
        "recipe file recipe.yaml: larger than 4 MiB, the most a recipe file may hold",
    ),
    (
        "recipe deeply nested",
        lambda t: _write(t / "recipe.yaml", "mix: " + "[" * 10_000 + "]" * 10_000),
        ["cook", "recipe.yaml", "-o", "soup"],
        "recipe file recipe.yaml: cannot be read (nested deeper than 32 levels",
    ),
    (
        "recipe alias",
        _recipe_with_alias,
        ["cook", "made", "-o", "soup"],
        "aliases (*name) are not allowed in a recipe file",
    ),
    # a soup folder to push (checked before the Hub is asked anything)
    (
        "push weights edited since soup.json",
        lambda t: _made_then(t, lambda made: (made / "model.safetensors").write_bytes(b"edited")),
        PUSH,
        "soup folder made: model.safetensors differs from the file soup.json records (its sha256)",
    ),
    (
        "push a link out of the soup folder",
        lambda t: _made_then(t, lambda made: (made / "notes.txt").symlink_to(t / "ing0" / "config.json")),
        PUSH,
        "soup folder made: notes.txt is a symbolic link to ",
    ),
]


def _tree(folder):
    return {
        str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if not p.is_symlink() or p.exists()
    }


@pytest.mark.parametrize(("case", "prepare", "argv", "culprit"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(
    make_ingredients, tmp_path, monkeypatch, capsys, case, prepare, argv, culprit
):
    make_ingredients(2)
    monkeypatch.chdir(tmp_path)
    if prepare is not None:
        prepare(tmp_path)
    capsys.readouterr()
    before = _tree(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse
        status = exit.code
    stderr = capsys.readouterr().err.strip()
    assert status == 2, stderr
    assert stderr.count("\n") == 0 and stderr.startswith("hf-soups") and "Traceback" not in stderr, stderr
    assert culprit in stderr
    assert _tree(tmp_path) == before


HUGE = [["x" * 1000] * 10 for _ in range(10)]  # distinct lists: safe_dump writes no alias


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(dtype=HUGE), "`dtype` must be a string, got [["),
        (lambda r: r["mix"][0].update(ingredient=HUGE), "`ingredient` must be a path or Hub id, got [["),
        (lambda r: r.update(recipe="x" * 100_000), "unknown recipe 'xxx"),
        (lambda r: r.update(options="x" * 100_000), "`options` must be a mapping, got 'xxx"),
    ],
)
def test_a_recipe_message_quotes_a_huge_value_briefly(make_ingredients, tmp_path, monkeypatch, capsys, edit, message):
    make_ingredients(2)
    monkeypatch.chdir(tmp_path)
    _recipe(tmp_path, edit)
    capsys.readouterr()
    assert main(["cook", "made", "-o", "soup"]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr) < 400, stderr[:400]


def test_a_damaged_hash_cache_is_only_a_lost_shortcut(make_ingredients, tmp_path, monkeypatch):
    for content in ("[]", '{"x": 3}', "{not json"):
        cache = tmp_path / f"cache{len(content)}.json"
        cache.write_text(content)
        monkeypatch.setenv("HF_SOUPS_HASH_CACHE", str(cache))
        folders = make_ingredients(2)
        assert main(["merge", *map(str, folders), "-o", str(tmp_path / f"soup{len(content)}")]) == 0


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_or_read_only_folder_is_one_line_and_leaves_nothing(
    make_ingredients, tmp_path, monkeypatch, capsys, code
):
    import hf_soups.model_folder

    def fail(path, *args):
        raise OSError(code, "cannot write", str(path))

    folders = make_ingredients(2)
    monkeypatch.setattr(hf_soups.model_folder, "write_safetensors", fail)
    capsys.readouterr()
    assert main(["merge", *map(str, folders), "-o", str(tmp_path / "soup")]) == 2
    *bar, stderr = capsys.readouterr().err.strip().splitlines()
    assert (
        all(line.startswith("merging") for line in bar)
        and f"output folder {tmp_path / 'soup'}: cannot be written (cannot write" in stderr
    )
    assert not [p for p in tmp_path.iterdir() if "soup" in p.name]


def test_an_early_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import hf_soups.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(hf_soups.cli, "build_parser", interrupted)
    assert main(["merge", "a", "b", "-o", "soup"]) == 130
    assert capsys.readouterr().err == "hf-soups: interrupted\n"


def test_a_ctrl_c_that_a_library_turns_into_another_error_is_still_an_interrupt(monkeypatch, capsys):
    import signal

    import hf_soups.commands.merge

    def run(args):
        try:
            signal.raise_signal(signal.SIGINT)  # as if it came while torch imported numpy
        except KeyboardInterrupt:
            raise ImportError("cannot load module more than once per process") from None

    monkeypatch.setattr(hf_soups.commands.merge, "run", run)
    assert main(["merge", "a", "b", "-o", "soup"]) == 130
    assert capsys.readouterr().err == "hf-soups: interrupted\n"


# The option objects of the Python fronts (hf_soups.options): refused when built, in one SoupError naming the field;
# SoupCallback's keywords build the same objects, so they are refused with the same message, before any folder.
OPTION_CASES = [
    ("pin_head", CollectOptions, {"pin_head": "random"}, "pin_head: unknown value 'random'; choose one of False"),
    ("ema decay", CollectOptions, {"ema": (1.0,)}, "ema: decay 1.0: give a number in (0, 1)"),
    ("ema twice", CollectOptions, {"ema": (0.9, 0.9)}, "ema: each decay once, got (0.9, 0.9)"),
    ("ema number", CollectOptions, {"ema": 0.9}, "ema: give a sequence of decays"),
    ("recipe", CookOptions, {"recipe": "soupy"}, "recipe: unknown value 'soupy'; choose one of 'greedy'"),
    ("sweep_size", CookOptions, {"sweep_size": 1}, "sweep_size: must be a whole number ≥ 2, got 1"),
    ("batch_size", JudgeOptions, {"batch_size": 0}, "batch_size: must be a whole number ≥ 1, got 0"),
    ("heldout_fraction", JudgeOptions, {"heldout_fraction": 0.7}, "heldout_fraction: must be in (0, 0.5], got 0.7"),
    ("seed", JudgeOptions, {"seed": -1}, "seed: must be a whole number ≥ 0, got -1"),
    ("select_fraction", JudgeOptions, {"select_fraction": 1.0}, "select_fraction: must be in (0, 1), got 1.0"),
]


@pytest.mark.parametrize(("case", "kind", "values", "message"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_a_bad_option_is_one_error_naming_it_from_its_object_and_the_callback(tmp_path, case, kind, values, message):
    with pytest.raises(SoupError, match="^" + re.escape(message)):
        kind(**values)
    with pytest.raises(SoupError, match="^" + re.escape(message)):
        SoupCallback(tmp_path / "pantry", **values)
    assert not (tmp_path / "pantry").exists()
