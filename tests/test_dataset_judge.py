"""A dataset of your own instead of a GLUE task (hf_soups.evaluation.dataset, hf_soups.recipes.dataset_judge): files
read by datasets' loaders, GLUE's split rules, labels matched to the models' id2label, a metric by name; the soup,
evaluate and diagnose commands and the Python API."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
from helpers import GLUE_DIR, WORDS, accelerate_launch, needs_glue, perturbed, tiny_bert_config, write_tsv
from huggingface_hub import ModelCard
from transformers import BertForSequenceClassification, BertTokenizer

from hf_soups import DatasetJudge, SoupError, greedy_soup, uniform_soup
from hf_soups.cli import main
from hf_soups.evaluation.dataset import TextDataset, label_ids

NAMES = {0: "negative", 1: "positive"}


def sha(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header, *rows])
    return path


def sweep(tmp_path: Path, texts: list[str], n: int = 3, scale: float = 0.3, **config) -> list[Path]:
    """``n`` perturbed copies of one tiny BERT whose tokenizer knows the 200 commonest words of ``texts``."""
    words = [word for word, _ in Counter(" ".join(texts).split()).most_common(200)]
    tmp_path.mkdir(exist_ok=True)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(vocab))
    torch.manual_seed(0)
    base = BertForSequenceClassification(tiny_bert_config(vocab_size=len(words) + 5, **config))
    state = {k: v.clone() for k, v in base.state_dict().items()}
    folders = []
    for i in range(n):
        base.load_state_dict(state)
        perturbed(base, seed=i + 1, scale=scale).save_pretrained(tmp_path / f"ing{i}")
        tokenizer.save_pretrained(tmp_path / f"ing{i}")
        folders.append(tmp_path / f"ing{i}")
    return folders


def toy_rows(rows: int, seed: int) -> list[tuple[str, int]]:
    """Sentences of the helpers' words, labelled by whether they mention the cat."""
    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(WORDS[:12], k=rng.randint(2, 9))) for _ in range(rows)]
    return [(s, int("cat" in s.split())) for s in sentences]


@pytest.fixture
def toy(tmp_path):
    """A sweep of three and a ``data`` folder (train.csv with 60 rows, dev.csv with 30, string labels)."""
    train, dev = toy_rows(60, seed=1), toy_rows(30, seed=2)
    folders = sweep(tmp_path, [s for s, _ in train + dev], id2label=NAMES)
    for name, rows in (("train", train), ("dev", dev)):
        write_csv(tmp_path / "data" / f"{name}.csv", ["text", "label"], [[s, NAMES[y]] for s, y in rows])
    return folders, tmp_path / "data"


@needs_glue
@pytest.mark.slow
def test_sst2_rows_as_a_csv_soup_as_the_glue_task_does(tmp_path, capsys):
    """Target of issue 30: SST-2 rows written as the user's own CSV (text,label; string labels) are souped by one
    `hf-soups soup` with train:heldout selection to the GLUE judge's members, scores and weights."""
    rows = {}
    for split, file, count in (("train", "train.tsv", 600), ("dev", "dev.tsv", 150)):
        lines = (GLUE_DIR / "SST-2" / file).read_text(encoding="utf-8").splitlines()[1 : count + 1]
        rows[split] = [line.split("\t") for line in lines]
        write_tsv(tmp_path / "glue" / "SST-2" / file, ["sentence", "label"], rows[split])
        write_csv(
            tmp_path / "data" / f"{split}.csv",
            ["text", "label"],
            [[text, NAMES[int(label)]] for text, label in rows[split]],
        )
    folders = sweep(tmp_path, [text for part in rows.values() for text, _ in part], n=4, id2label=NAMES)
    common = ["soup", *map(str, folders), "--select-split", "train:heldout", "--greedy-rule", "ties"]
    glue_soup, csv_soup = tmp_path / "glue-soup", tmp_path / "csv-soup"
    assert main([*common, "--task", "sst2", "--glue-dir", str(tmp_path / "glue"), "-o", str(glue_soup)]) == 0
    assert main([*common, "--dataset", str(tmp_path / "data"), "-o", str(csv_soup)]) == 0
    glue, mine = (json.loads((tmp_path / name / "soup.json").read_text()) for name in ("glue-soup", "csv-soup"))
    assert len({i["scores"]["select"]["accuracy"] for i in glue["ingredients"]}) > 1  # the choice is not trivial
    assert [i["kept"] for i in mine["ingredients"]] == [i["kept"] for i in glue["ingredients"]]
    assert [i["scores"] for i in mine["ingredients"]] == [i["scores"] for i in glue["ingredients"]]
    assert mine["results"] == glue["results"] and mine["recipe"]["trajectory"] == glue["recipe"]["trajectory"]
    assert (
        mine["recipe"]["split_rule"]["rows"] == glue["recipe"]["split_rule"]["rows"] == {"select": 60, "report": 150}
    )
    assert mine["recipe"]["split_rule"]["select"]["digest"] == glue["recipe"]["split_rule"]["select"]["digest"]
    assert sha(tmp_path / "csv-soup") == sha(tmp_path / "glue-soup")
    assert mine["recipe"]["task"] is None and mine["recipe"]["split_rule"]["dataset"]["name"] == "data"


@pytest.mark.slow
def test_a_dataset_judge_is_a_public_type_the_recipes_take(toy):
    folders, data = toy
    tokenizer = BertTokenizer.from_pretrained(folders[0])
    files = f"train={data / 'train.csv'},validation={data / 'dev.csv'}"
    judge = DatasetJudge(
        files,
        tokenizer,
        NAMES,
        metric="f1",
        select_split="validation:select",
        report_split="validation:report",
        progress=False,
    )
    assert judge.split_rule["rows"] == {"select": 15, "report": 15} and judge.metric == "f1"
    report = uniform_soup(folders, judge=judge, ensemble=False, progress=False)
    assert report.record.recipe.metric == "f1" and report.record.recipe.split_rule["dataset"]["name"] == "data"
    model = BertForSequenceClassification.from_pretrained(folders[0])
    assert report.record.ingredients[0].scores["report"] == judge.score(model, "report").metrics


def test_labels_are_matched_by_name_or_id():
    assert label_ids(["POSITIVE", "negative"], None, NAMES, "x") == [1, 0]
    assert label_ids([1, 0, 1], None, NAMES, "x") == [1, 0, 1]
    assert label_ids([1, 0], None, {0: "LABEL_0", 1: "LABEL_1"}, "x") == [1, 0]
    assert label_ids([0.5, 3], None, {0: "LABEL_0"}, "x") == [0.5, 3.0]  # a regressor
    hub = datasets.ClassLabel(names=["neg", "pos"])  # a Hub dataset's class ids, read through its names
    assert label_ids([0, 1], hub, {0: "pos", 1: "neg"}, "x") == [1, 0]
    assert label_ids([0, 1], hub, {0: "LABEL_0", 1: "LABEL_1"}, "x") == [0, 1]
    for values, id2label, message in [
        (["neutral"], NAMES, "label 'neutral' is not a class of the models (0: negative, 1: positive)"),
        ([2], NAMES, "label 2 is not a class"),
        (["positive"], {0: "LABEL_0", 1: "LABEL_1"}, "config.json names no classes"),
        ([None], NAMES, "row 0 has no label"),
        (["high"], {0: "LABEL_0"}, "label 'high' is not a number, and the models are regressors"),
        ([0.5], NAMES, "label 0.5 is neither a class name nor a class id"),
    ]:
        with pytest.raises(SoupError, match=re.escape(message)):
            label_ids(values, None, id2label, "x")


def test_json_lines_with_class_ids_and_a_regressor_on_scores(tmp_path):
    rows = toy_rows(40, seed=3)
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "".join(json.dumps({"sentence": s, "a": s[::-1], "score": len(s) / 10, "y": y}) + "\n" for s, y in rows)
    )
    splits = {"select_split": "train:select", "report_split": "train:report"}
    (classifier,) = sweep(tmp_path, [s for s, _ in rows], n=1)  # LABEL_0, LABEL_1: labels are ids
    tokenizer = BertTokenizer.from_pretrained(classifier)
    model = BertForSequenceClassification.from_pretrained(classifier)
    judge = DatasetJudge(
        str(path),
        tokenizer,
        model.config.id2label,
        text_columns="sentence",
        label_column="y",
        progress=False,
        **splits,
    )
    assert judge.split_rule["rows"] == {"select": 20, "report": 20}
    assert judge.score(model, "report").metrics.keys() == {"accuracy"}
    (regressor,) = sweep(tmp_path / "reg", [s for s, _ in rows], n=1, num_labels=1)
    model = BertForSequenceClassification.from_pretrained(regressor)
    judge = DatasetJudge(
        str(path),
        tokenizer,
        model.config.id2label,
        text_columns=("sentence", "a"),
        label_column="score",
        metric="spearmanr",
        progress=False,
        **splits,
    )
    result = judge.score(model, "select", return_predictions=True)
    assert result.main_metric == "spearmanr" and result.labels.dtype.kind == "f" and result.predictions.ndim == 1


def test_parquet_and_a_single_csv_file(tmp_path):
    rows = toy_rows(30, seed=4)
    table = datasets.Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]})
    table.to_parquet(tmp_path / "rows.parquet")
    write_csv(tmp_path / "rows.csv", ["text", "label"], [[s, y] for s, y in rows])
    texts = {}
    for name in ("rows.parquet", "rows.csv"):
        (split,) = TextDataset(str(tmp_path / name)).splits(["train:heldout"], NAMES)
        texts[name] = split.dataset.to_dict()
        assert split.rule["source"].startswith("local:") and split.rule["rows"] == 3
    assert texts["rows.parquet"] == texts["rows.csv"]


def test_csv_cells_stay_text(tmp_path):
    write_csv(tmp_path / "rows.csv", ["text", "label"], [["null", 0], ["NA", 1], ["", 0]])
    (split,) = TextDataset(str(tmp_path / "rows.csv")).splits(["train"], NAMES)
    assert split.dataset["text"] == ["null", "NA", ""]


def test_evaluate_a_dataset_as_the_glue_task(toy, tmp_path, capsys):
    folders, data = toy
    glue = tmp_path / "glue"
    rows = list(csv.reader((data / "dev.csv").open()))[1:]
    write_tsv(glue / "SST-2" / "dev.tsv", ["sentence", "label"], [[s, 0 if y == "negative" else 1] for s, y in rows])
    assert (
        main(
            [
                "evaluate",
                str(folders[0]),
                "--task",
                "sst2",
                "--glue-dir",
                str(glue),
                "--output",
                str(tmp_path / "glue.json"),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(folders[0]), "--dataset", str(data), "--output", str(tmp_path / "mine.json")]) == 0
    theirs, mine = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("glue", "mine"))
    assert mine["metrics"] == theirs["metrics"] and mine["num_examples"] == 30


def test_diagnose_a_dataset(tmp_path, capsys):
    rows = toy_rows(30, seed=2)
    folders = sweep(tmp_path, [s for s, _ in rows], scale=0.005, id2label=NAMES)
    write_csv(tmp_path / "rows.csv", ["text", "label"], [[s, NAMES[y]] for s, y in rows])
    argv = [
        "diagnose",
        *map(str, folders),
        "--dataset",
        str(tmp_path / "rows.csv"),
        "--split",
        "train",
        "--output",
        str(tmp_path / "diagnosis.json"),
    ]
    assert main(argv) == 0
    landscape = json.loads((tmp_path / "diagnosis.json").read_text())["loss_landscape"]
    assert (landscape["task"], landscape["split"], landscape["metric"]) == ("rows", "train", "accuracy")
    assert len(landscape["curves"]) == 2


@pytest.mark.slow
def test_the_card_names_the_dataset_and_its_metric(toy, tmp_path):
    folders, data = toy
    greedy_soup(
        folders,
        dataset=str(data),
        metric="matthews_correlation",
        output_dir=tmp_path / "soup",
        ensemble=False,
        progress=False,
    )
    card = ModelCard.load(tmp_path / "soup" / "README.md")
    (result,) = card.data.eval_results
    assert (result.dataset_name, result.dataset_split, result.metric_type) == (
        "data",
        "validation",
        "matthews_correlation",
    )
    assert "GLUE" not in card.text and f"# {tmp_path.name}-soup\n" in card.text
    assert "- dataset: `data` (local files); text `text`, label `label`" in card.text


@pytest.mark.slow
def test_two_processes_judge_a_dataset_as_one(toy, tmp_path):
    import subprocess

    import hf_soups.cli

    folders, data = toy
    args = ["soup", *map(str, folders), "--dataset", str(data), "--batch-size", "4"]
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    launch, env = accelerate_launch(2)
    done = subprocess.run(
        [*launch, hf_soups.cli.__file__, *args, "-o", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "soup.json").read_text()) for name in ("one", "two"))
    assert one["results"] == two["results"] and one["recipe"]["trajectory"] == two["recipe"]["trajectory"]
    assert sha(tmp_path / "one") == sha(tmp_path / "two")
