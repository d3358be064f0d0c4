"""examples/glue: the sweep under one and two processes, and a soup cooked from Hub checkpoints and pushed back."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import GLUE_DIR, accelerate_launch, needs_glue, tiny_bert_config
from huggingface_hub import HfApi
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from hf_soups.pantry import Pantry
from hf_soups.record import SoupRecord
from hf_soups.testing.hub_server import DEFAULT_USER

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "glue"
pytestmark = needs_glue


def run(*command: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def tiny_glue(tmp_path) -> Path:
    """The first 48 train and 40 dev rows of RTE, in the GLUE tsv layout."""
    folder = tmp_path / "glue" / "RTE"
    folder.mkdir(parents=True)
    for name, lines in (("train.tsv", 49), ("dev.tsv", 41)):
        with open(GLUE_DIR / "RTE" / name, encoding="utf-8") as source:
            (folder / name).write_text("".join(source.readlines()[:lines]), encoding="utf-8")
    return folder.parent


@pytest.fixture
def tiny_model(tmp_path, tiny_tokenizer) -> Path:
    torch.manual_seed(0)
    folder = tmp_path / "tiny-bert"
    BertForSequenceClassification(
        tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("script", ["run_glue_sweep.py", "soup_from_hub.py"])
def test_help(script, capsys):
    module = runpy.run_path(str(EXAMPLES / script))  # not as __main__: defines parse_args without running
    with pytest.raises(SystemExit, match="0"):
        module["parse_args"](["--help"])
    assert "--glue-dir" in capsys.readouterr().out


def test_soup_from_hub_judges_on_the_splits_its_flags_name(tmp_path):
    main = runpy.run_path(str(EXAMPLES / "soup_from_hub.py"))["main"]
    seen = {}

    def run_recipe(name, ingredients, **options):
        seen.update(options, name=name)
        raise KeyboardInterrupt  # stop before anything is cooked

    main.__globals__["run_recipe"] = run_recipe
    argv = ["a", "b", "--task", "rte", "--output-dir", str(tmp_path / "soup"), "--recipe", "uniform"]
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--select-split", "validation:select", "--report-split", "validation:report", "--token", "t"])
    assert seen["name"] == "uniform" and seen["task"] == "rte" and seen["token"] == "t"
    assert (seen["select_split"], seen["report_split"]) == ("validation:select", "validation:report")


@pytest.mark.slow  # runs the example in subprocesses
def test_sweep_under_two_processes_cooks_the_soup_one_process_cooks(tiny_glue, tiny_model, tmp_path):
    sweep = [
        str(EXAMPLES / "run_glue_sweep.py"),
        "--model-name-or-path",
        str(tiny_model),
        "--task",
        "rte",
        "--glue-dir",
        str(tiny_glue),
        "--output-dir",
        str(tmp_path / "sweep"),
        "--learning-rates",
        "3e-2",
        "--seeds",
        "0",
        "1",
        "--batch-size",
        "4",
        "--max-length",
        "64",
        "--ema",
        "0.9",
    ]
    launch, env = accelerate_launch(2)
    out = run(*launch, *sweep, env=env)
    assert "best individual" in out and "ensemble" in out
    pantry = tmp_path / "sweep" / "pantry"
    assert sorted(p.name for p in pantry.iterdir()) == [  # one entry (and its EMA) per run: no process wrote twice
        "lr0.03-ep1-seed0",
        "lr0.03-ep1-seed0.ema-0.9",
        "lr0.03-ep1-seed1",
        "lr0.03-ep1-seed1.ema-0.9",
        "start-head.safetensors",
    ]
    two = tmp_path / "sweep" / "soup-two-processes"
    (tmp_path / "sweep" / "soup").rename(two)

    run(sys.executable, *sweep, "--cook-only")
    one = tmp_path / "sweep" / "soup"
    a, b = SoupRecord.load(one), SoupRecord.load(two)
    assert [(i.spec, i.kept, i.weight) for i in a.ingredients] == [(i.spec, i.kept, i.weight) for i in b.ingredients]
    assert a.results == b.results and a.recipe.trajectory == b.recipe.trajectory
    assert [i.hyperparameters for i in a.ingredients] == [{"seed": 0}, {"seed": 1}]
    # --selection heldout (the default): trained on train:rest (44 of 48 rows), selected on the 4 held out, reported
    # on the whole validation split
    assert (a.recipe.select_split, a.recipe.report_split) == ("train:heldout", "validation")
    assert a.recipe.split_rule["rows"] == {"select": 4, "report": 40}
    entries = Pantry(pantry).select("final")
    assert [e.info["heldout"]["rows"] for e in entries] == [4, 4]
    assert [e.info["training_args"]["num_train_epochs"] for e in entries] == [1.0, 1.0]
    x, y = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert all(torch.equal(t, y[name]) for name, t in x.items())
    assert (one / "README.md").is_file() and (one / "ingredients_vs_soups.png").is_file()
    run(sys.executable, *sweep, "--cook-only", "--entries", "ema:0.9")  # each run's EMA, kept by rank 0 under DDP
    assert [Path(i.spec).name for i in SoupRecord.load(one).ingredients] == [
        "lr0.03-ep1-seed0.ema-0.9",
        "lr0.03-ep1-seed1.ema-0.9",
    ]


@pytest.mark.slow  # runs the example in subprocesses
def test_soup_from_hub_cooks_and_pushes(make_ingredients, hub_server, tmp_path):
    api = HfApi(token=hub_server.token)
    repos = []
    for i, folder in enumerate(make_ingredients(3)):
        repo = f"{DEFAULT_USER}/tiny-rte-{i}"
        api.create_repo(repo)
        api.upload_folder(repo_id=repo, folder_path=folder)
        repos.append(repo)
    out = run(
        sys.executable,
        str(EXAMPLES / "soup_from_hub.py"),
        *repos,
        "--task",
        "rte",
        "--glue-dir",
        str(GLUE_DIR),
        "--output-dir",
        str(tmp_path / "soup"),
        "--push-to-hub",
        f"{DEFAULT_USER}/tiny-rte-soup",
        env={"HF_TOKEN": hub_server.token},
    )
    assert "greedy" in out and "pushed: " in out
    record = SoupRecord.load(tmp_path / "soup")
    assert [i.repo_id for i in record.ingredients] == repos and all(i.revision for i in record.ingredients)
    assert {"README.md", "soup.json", "model.safetensors"} <= set(api.list_repo_files(f"{DEFAULT_USER}/tiny-rte-soup"))
