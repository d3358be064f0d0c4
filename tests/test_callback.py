"""SoupCallback / SoupTrainer in Trainer scripts: pantry, same-start check, pinned heads, crashes, concurrency, Hub."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from helpers import GLUE_DIR, VOCAB, needs_glue, tiny_bert_config, write_rte
from huggingface_hub import HfApi, hf_hub_download
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import (
    BertForSequenceClassification,
    BertModel,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
    set_seed,
)

from hf_soups import SoupCallback, SoupError, SoupTrainer
from hf_soups.evaluation.data import heldout_rule, load_glue_split, split_rows
from hf_soups.ingredients import validate_ingredients
from hf_soups.pantry import Pantry, PantryEntry, check_heldout, check_same_start, fingerprint
from hf_soups.recipes.trainer_judge import TrainerJudge
from hf_soups.record import SoupRecord
from hf_soups.testing.hub_server import DEFAULT_USER

WORDS = VOCAB[5:]


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))}


def dataset(tokenizer, rows: int, seed: int) -> datasets.Dataset:
    """Sentences of random words, labelled by whether they mention the cat."""
    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(rows)]
    labels = [int("cat" in s.split()) for s in sentences]
    data = datasets.Dataset.from_dict({"sentence": sentences, "label": labels, "idx": list(range(rows))})
    return data.map(lambda batch: tokenizer(batch["sentence"]), batched=True, remove_columns=["sentence"])


@pytest.fixture
def run(tmp_path, tiny_tokenizer):
    """``run(name, trainer_class=Trainer, lr=, seed=, lora=, **kwargs)``: one fine-tuning run of one pretrained body
    (a ``BertModel``, stored without the ``bert.`` prefix), whose new classifier head is drawn under ``seed``, with
    LoRA (a ``peft.LoraConfig``) when given; returns the trainer after ``train()``."""
    base = tmp_path / "base"
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(base)
    train, dev = dataset(tiny_tokenizer, 32, seed=1), dataset(tiny_tokenizer, 24, seed=2)

    def make(
        name, trainer_class=Trainer, lr=1e-2, seed=0, train_it=True, args=None, train_dataset=None, lora=None, **kwargs
    ):
        set_seed(seed)
        model = BertForSequenceClassification.from_pretrained(base, num_labels=2)
        if lora is not None:
            model = get_peft_model(model, lora)
        settings = {
            "output_dir": str(tmp_path / "runs" / name),
            "learning_rate": lr,
            "seed": seed,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 8,
            "eval_strategy": "epoch",
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
        }
        training_args = TrainingArguments(**settings | (args or {}))
        trainer = trainer_class(
            model,
            training_args,
            train_dataset=train if train_dataset is None else train_dataset,
            eval_dataset=dev,
            processing_class=tiny_tokenizer,
            compute_metrics=accuracy,
            **kwargs,
        )
        if train_it:
            trainer.train()
        return trainer

    return make


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_three_runs_fill_one_pantry_and_cook_a_soup(run, tmp_path):
    soup = SoupCallback(tmp_path / "pantry", pin_head=True)
    grid = [("lr1e-2-s0", 1e-2, 0), ("lr3e-2-s1", 3e-2, 1), ("lr1e-2-s2", 1e-2, 2)]
    for name, lr, seed in grid:
        trainer = run(name, lr=lr, seed=seed, callbacks=[soup])

    entries = Pantry(tmp_path / "pantry").entries()
    assert [e.name for e in entries] == [name for name, _, _ in grid]
    assert len({e.info["start"]["weights"] for e in entries}) == 1  # one pinned start
    for entry, (name, lr, seed) in zip(entries, grid, strict=True):
        assert entry.info["run_name"] == name and entry.info["kind"] == "final" and entry.info["step"] == 4
        assert entry.info["training_args"]["learning_rate"] == lr and entry.info["training_args"]["seed"] == seed
        assert set(entry.info["metrics"]) == {"eval_accuracy", "eval_loss"}
        assert (entry.path / "tokenizer_config.json").is_file()
    assert not torch.equal(
        weights(entries[0].path)["classifier.weight"], weights(entries[2].path)["classifier.weight"]
    )

    report = soup.make_soup(trainer)
    assert report.output_dir == tmp_path / "soup"  # beside the pantry, not in the last run's folder
    assert {"README.md", "soup.json", "model.safetensors", "recipe.yaml", "greedy_trajectory.png"} <= {
        p.name for p in report.output_dir.iterdir()
    }
    record = SoupRecord.load(report.output_dir)
    assert record.recipe.name == "greedy" and record.recipe.select_split == "eval_dataset:select"
    assert record.recipe.split_rule["rows"] == {"select": 12, "report": 12}
    assert [i.hyperparameters for i in record.ingredients] == [
        {"learning_rate": lr, "seed": seed} for _, lr, seed in grid
    ]
    assert [r.name for r in record.results] == [
        "best individual",
        "greedy",
        "uniform",
        "ensemble",
        "ensemble (greedy)",
    ]
    assert "learning_rate=0.03" in (report.output_dir / "README.md").read_text().replace(": ", "=")


def test_trainer_judge_scores_like_trainer_evaluate(run):
    trainer = run("judge", train_it=False, args={"metric_for_best_model": "eval_accuracy"})
    judge = TrainerJudge(trainer, seed=3)
    select, report = (set(judge.parts[split]["idx"]) for split in ("select", "report"))
    assert not select & report and len(select | report) == 24
    assert judge.split_rule["rows"] == {"select": 12, "report": 12}
    assert sorted(select) == split_rows(24, 0.5, seed=3)[0].tolist()  # the GLUE splits' rule
    for split in ("select", "report"):
        ours = judge.score(trainer.model, split, return_predictions=True)
        theirs = trainer.evaluate(judge.parts[split])
        assert ours.main_metric == "accuracy" and ours.main == pytest.approx(theirs["eval_accuracy"])
        assert ours.num_examples == 12 and ours.logits.shape == (12, 2)
        assert judge.main_metric(ours.predictions, ours.labels) == ours.main


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("seed", -1, "seed: must be a whole number ≥ 0"),
        ("select_fraction", 1.0, r"select_fraction: must be in \(0, 1\)"),
        ("select_fraction", 0, r"select_fraction: must be in \(0, 1\)"),
    ],
)
def test_trainer_judge_checks_its_split_options_as_the_callback_does(run, option, value, message):
    trainer = run("judge", train_it=False, args={"metric_for_best_model": "eval_accuracy"})
    with pytest.raises(SoupError, match=message):
        TrainerJudge(trainer, **{option: value})


def test_trainer_judge_scores_in_the_trainers_precision(run):
    from hf_soups.evaluation.scoring import Precision

    fp32 = TrainerJudge(run("fp32", train_it=False))
    trainer = run("bf16", train_it=False, args={"bf16": True})
    judge = TrainerJudge(trainer)
    assert (fp32.precision(), judge.precision()) == (Precision(), Precision(torch.bfloat16))
    ours, reference = judge.score(trainer.model, "select", True), fp32.score(trainer.model, "select", True)
    assert trainer.model.dtype == torch.float32  # scored as a bf16 copy
    assert not np.array_equal(ours.logits, reference.logits)
    np.testing.assert_allclose(ours.logits, reference.logits, atol=0.05)


def test_different_heads_refused_pinned_heads_accepted(run, tmp_path):
    unpinned, pinned = SoupCallback(tmp_path / "unpinned"), SoupCallback(tmp_path / "pinned", pin_head=True)
    for seed in (0, 1):
        trainer = run(f"u{seed}", seed=seed, callbacks=[unpinned], args={"max_steps": 1})
        run(f"p{seed}", seed=seed, callbacks=[pinned], args={"max_steps": 1})
    with pytest.raises(SoupError, match=r"'u0' and 'u1' start from different classifier heads.*pin_head=True"):
        unpinned.make_soup(trainer)
    assert (tmp_path / "pinned" / "start-head.safetensors").is_file()
    assert len({e.info["start"]["weights"] for e in Pantry(tmp_path / "pinned").entries()}) == 1
    assert pinned.make_soup(trainer, recipe="uniform").record.recipe.name == "uniform"


def test_a_lora_sweep_over_seeds_cooks(run, tmp_path):
    from peft import LoraConfig, get_peft_model

    callback = SoupCallback(tmp_path / "pantry")
    for seed in (0, 1):  # the seed draws each run's LoRA A; B = 0, so both start from the same function
        trainer = run(f"lora{seed}", args={"seed": seed}, train_it=False, callbacks=[callback])  # one head
        trainer.model.save_pretrained(tmp_path / "start")  # the adapters' base: the classifier the runs start from
        trainer.model.name_or_path = str(tmp_path / "start")
        set_seed(seed)
        lora = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"])
        trainer.model = trainer.model_wrapped = get_peft_model(trainer.model, lora)
        trainer.train()
    entries = Pantry(tmp_path / "pantry").entries()
    assert len({e.info["start"]["weights"] for e in entries}) == 1
    assert all((e.path / "adapter_config.json").is_file() for e in entries)
    report = callback.make_soup(trainer, recipe="uniform")
    assert [i.adapter["type"] for i in report.record.ingredients] == ["lora", "lora"]
    assert (report.output_dir / "model.safetensors").is_file()


@pytest.mark.parametrize("pin_head", [True, "probe"])
def test_a_lora_sweep_over_seeds_pins_the_head_it_trains(run, tmp_path, pin_head):
    """PEFT runs over a bare base: the start head is written from, and loaded into, the head copy PEFT trains
    (``modules_to_save``), under the plain model's names; the sweep cooks into a classifier."""
    callback = SoupCallback(tmp_path / "pantry", pin_head=pin_head)
    for seed in (0, 1):
        lora = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"])
        trainer = run(f"lora{seed}", seed=seed, lora=lora, callbacks=[callback], args={"max_steps": 1})
    pantry = Pantry(tmp_path / "pantry")
    assert pantry.head_mode() == ("probe" if pin_head == "probe" else "random")
    head = load_file(tmp_path / "pantry" / "start-head.safetensors")
    assert sorted(head) == ["classifier.bias", "classifier.weight"]
    assert len({e.info["start"]["weights"] for e in pantry.entries()}) == 1
    report = callback.make_soup(trainer, recipe="uniform")
    assert [i.adapter["type"] for i in report.record.ingredients] == ["lora", "lora"]
    assert report.record.architecture == "BertForSequenceClassification"
    assert {"bert.encoder.layer.0.attention.self.query.weight", "classifier.weight"} <= set(weights(report.output_dir))


@pytest.mark.parametrize("lora", [False, True])
def test_a_soup_of_a_local_base_states_the_bases_license_and_names_no_local_path(run, tmp_path, lora):
    (tmp_path / "base" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a local base\n")
    callback = SoupCallback(tmp_path / "pantry", pin_head=True)
    for seed in (0, 1):
        config = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]) if lora else None
        trainer = run(f"run{seed}", seed=seed, lora=config, callbacks=[callback], args={"max_steps": 1})
    report = callback.make_soup(trainer, recipe="uniform")
    assert report.record.base_model == str((tmp_path / "base").resolve())  # soup.json: the base, where it was
    card = (report.output_dir / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "\nlicense: apache-2.0\n" in front and "base_model" not in front  # no Hub id known, no path published
    assert "of `base` (local)" in card and str(tmp_path) not in card


def test_different_bodies_refused(tmp_path):
    start = {"weights": "a", "body": "b", "head": "h"}
    other = start | {"weights": "c", "body": "d"}
    entries = [PantryEntry(tmp_path / "x", {"start": start}), PantryEntry(tmp_path / "y", {"start": other})]
    with pytest.raises(SoupError, match="'x' and 'y' start from different pretrained weights"):
        check_same_start(entries)


def test_soup_trainer_is_trainer_plus_callback(run, tmp_path):
    callback = SoupCallback(tmp_path / "pantry-a")
    for lr in (1e-2, 3e-2):
        plain = run(f"a{lr:g}", lr=lr, callbacks=[callback])
        souped = run(f"b{lr:g}", SoupTrainer, lr=lr, pantry=tmp_path / "pantry-b")
        callbacks = [sorted(t.callback_handler.callback_list.split("\n")) for t in (plain, souped)]
        assert callbacks[0] == callbacks[1]
    a, b = Pantry(tmp_path / "pantry-a").entries(), Pantry(tmp_path / "pantry-b").entries()
    assert len(a) == len(b) == 2
    for x, y in zip(a, b, strict=True):
        assert x.info["start"] == y.info["start"] and x.info["metrics"] == y.info["metrics"]
        assert all(torch.equal(t, weights(y.path)[k]) for k, t in weights(x.path).items())
    ours, theirs = souped.soup(), callback.make_soup(plain)
    assert ours.output_dir == tmp_path / "soup"

    def results(report):  # ensemble members are named by their pantry paths (pantry-a/a…, pantry-b/b…)
        return [(r.name, r.scores, r.gain, [Path(m).name[1:] for m in r.members or []]) for r in report.record.results]

    assert results(ours) == results(theirs)
    assert [i.kept for i in ours.record.ingredients] == [i.kept for i in theirs.record.ingredients]


def test_cook_on_end_cooks_after_the_last_run(run, tmp_path, caplog):
    callback = SoupCallback(tmp_path / "pantry", cook_on_end=True, sweep_size=2, output_dir=tmp_path / "soup")
    first = run("first", SoupTrainer, soup_callback=callback)
    assert callback.last_report is None and not (tmp_path / "soup").exists()
    assert first.optimizer.state  # not cooking: the training state stays
    with caplog.at_level("INFO", logger="hf_soups.callback"):
        second = run("second", SoupTrainer, lr=3e-2, soup_callback=callback)
    assert callback.last_report.output_dir == tmp_path / "soup"
    assert len(SoupRecord.load(tmp_path / "soup").ingredients) == 2
    # cooking: the optimizer state and the gradients were freed first (the model goes back to its device after)
    assert not second.optimizer.state and all(p.grad is None for p in second.model.parameters())
    assert "cook_on_end: freed the optimizer state and gradients" in caplog.text


def test_cooking_a_pantry_of_one_run_says_so_and_returns_none(run, tmp_path, caplog):
    """The first run of a one-run-per-process script (transformers' run_glue.py) calls cook after training."""
    callback = SoupCallback(tmp_path / "pantry")
    trainer = run("only", callbacks=[callback])
    with caplog.at_level("WARNING", logger="hf_soups.callback"):
        assert callback.make_soup(trainer) is None
    assert "holds one ingredient (only) so far" in caplog.text
    assert not (tmp_path / "soup").exists()


def test_cook_on_end_without_a_judge_is_refused_before_training(run, tmp_path):
    with pytest.raises(SoupError, match="cook_on_end=True\\) needs a judge"):
        run("r", callbacks=[SoupCallback(tmp_path / "pantry", cook_on_end=True)])
    assert not (tmp_path / "pantry").exists()


@pytest.mark.parametrize("size", ["2", -3, 2.5, 0, 1, True])
def test_a_sweep_size_that_is_not_a_whole_number_of_at_least_two_is_refused(tmp_path, size):
    with pytest.raises(SoupError, match=rf"^sweep_size: must be a whole number ≥ 2, got {size!r}$"):
        SoupCallback(tmp_path / "pantry", cook_on_end=True, sweep_size=size, task="rte")
    assert SoupCallback(tmp_path / "pantry", sweep_size=np.int64(3)).cooking.sweep_size == 3


def test_checkpoints_join_the_pantry(run, tmp_path):
    callback = SoupCallback(tmp_path / "pantry", checkpoints=True)
    run("r", callbacks=[callback], args={"save_strategy": "steps", "save_steps": 2})
    entries = Pantry(tmp_path / "pantry").entries()
    assert [(e.name, e.info["kind"], e.info["step"]) for e in entries] == [
        ("r.checkpoint-2", "checkpoint", 2),
        ("r.checkpoint-4", "checkpoint", 4),
        ("r", "final", 4),
    ]
    assert [i.hyperparameters for i in Pantry(tmp_path / "pantry").ingredients()] == [
        {"epoch": 0.5},
        {"epoch": 1.0},
        {"epoch": 1.0},
    ]


class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise RuntimeError("out of memory")


def test_a_crash_leaves_the_pantry_usable(run, tmp_path, monkeypatch):
    callback = SoupCallback(tmp_path / "pantry")
    trainer = run("ok1", callbacks=[callback])
    with pytest.raises(RuntimeError, match="out of memory"):  # dies while training: adds nothing
        run("crashed-training", callbacks=[callback, Crash()])

    def killed(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):  # dies while writing its entry
        patch.setattr(os, "rename", killed)
        run("crashed-writing", callbacks=[callback])
    run("ok2", lr=3e-2, callbacks=[callback])

    pantry = tmp_path / "pantry"
    assert [p.name.startswith(".tmp-") for p in sorted(pantry.iterdir())] == [True, False, False]
    assert [e.name for e in Pantry(pantry).entries()] == ["ok1", "ok2"]
    report = callback.make_soup(trainer)
    assert [Path(i.spec).name for i in report.record.ingredients] == ["ok1", "ok2"]


def _add_from_process(args: tuple[str, int]) -> str:
    pantry, seed = args
    torch.manual_seed(seed)  # every process draws its own head; pinning gives them the first writer's
    model = BertForSequenceClassification(tiny_bert_config())
    Pantry(pantry).pin_head(model)
    start = fingerprint(model)
    info = {"run_name": "run", "kind": "final", "step": 0, "epoch": None, "training_args": {}, "start": start}
    return Pantry(pantry).add("run", model, None, info).name


def test_concurrent_processes_share_one_pantry(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        names = pool.map(_add_from_process, [(str(tmp_path / "pantry"), seed) for seed in range(4)])
    assert sorted(names) == ["run", "run-2", "run-3", "run-4"]
    entries = Pantry(tmp_path / "pantry").entries()
    assert len(entries) == 4 and len({json.dumps(e.info["start"]["head"]) for e in entries}) == 1
    assert not [p for p in (tmp_path / "pantry").iterdir() if p.name.startswith(".tmp-")]
    heads = [weights(e.path)["classifier.weight"] for e in entries]
    assert all(torch.equal(h, heads[0]) for h in heads)


@pytest.mark.parametrize("hub_model_id", [f"{DEFAULT_USER}/sweep-soup", None])
def test_cook_pushes_when_asked(run, tmp_path, hub_server, hub_model_id, capsys):
    # no hub_model_id: the Trainer's output folder name + "-soup", a bare name under the token's user (issue 23)
    repo = hub_model_id or f"{DEFAULT_USER}/r0.03-soup"
    callback = SoupCallback(
        tmp_path / "pantry",
        push_to_hub=True,
        hub_model_id=hub_model_id,
        hub_token=hub_server.token,
        license="apache-2.0",
    )
    for lr in (1e-2, 3e-2):
        trainer = run(f"r{lr:g}", lr=lr, callbacks=[callback])
    callback.make_soup(trainer)
    assert f"{hub_server.endpoint}/{repo}/commit/" in capsys.readouterr().out  # where the soup went
    assert {"README.md", "soup.json", "model.safetensors"} <= set(HfApi(token=hub_server.token).list_repo_files(repo))
    card = Path(hf_hub_download(repo, "README.md", token=hub_server.token)).read_text()
    assert f'from_pretrained("{repo}")' in card and "hf-soups cook soup/recipe.yaml" in card
    assert "\nlicense: apache-2.0\n" in card
    assert "hf download" not in card  # the recipe names the pantry's local entries: a download cannot cook
    assert str(tmp_path) not in card  # no local paths published


def test_one_run_per_process_sweep_prints_its_progress_and_the_soup(run, tmp_path, capsys):
    for seed in (0, 1):  # a fresh callback per run, as when each run is its own process
        callback = SoupCallback(tmp_path / "pantry", pin_head=True, cook_on_end=True, sweep_size=2)
        run(f"s{seed}", trainer_class=SoupTrainer, seed=seed, soup_callback=callback, args={"max_steps": 1})
        out = capsys.readouterr().out
        if seed == 0:
            assert f"pantry {tmp_path / 'pantry'} holds 1 of 2 runs" in out and "soup written" not in out
        else:
            soup = tmp_path / "soup"
            assert callback.last_report.table in out and f"soup written to {soup}" in out and "holds" not in out


def start_loss(trainer) -> float:
    """The trainer's model's mean loss (eval mode) on its training set: how good a start its head is."""
    return trainer.evaluate(trainer.train_dataset)["eval_loss"]


def test_a_probe_head_is_every_runs_start_and_beats_a_random_head(run, tmp_path, caplog, capsys):
    callback = SoupCallback(tmp_path / "pantry", pin_head="probe")
    with caplog.at_level("INFO", logger="hf_soups.probe"):
        trainers = [run(f"s{seed}", seed=seed, callbacks=[callback], args={"max_steps": 1}) for seed in (0, 1)]
    # the first run fits the head (a pass over the training set) and says so; the second loads it
    assert caplog.text.count("pin_head='probe': fitting the start head") == 1
    assert "probe head: features: 100%" in capsys.readouterr().err
    pantry = Pantry(tmp_path / "pantry")
    assert pantry.head_mode() == "probe"
    assert len({e.info["start"]["weights"] for e in pantry.entries()}) == 1

    head = load_file(tmp_path / "pantry" / "start-head.safetensors")
    untrained = run("fresh", seed=5, train_it=False)
    random_loss = start_loss(untrained)
    untrained.model.load_state_dict(head, strict=False)
    assert start_loss(untrained) < random_loss
    report = callback.make_soup(trainers[-1], recipe="uniform")
    assert {i.start_head for i in report.record.ingredients} == {"probe"}
    assert "a linear probe fitted on the frozen encoder's features" in (report.output_dir / "README.md").read_text()


def test_a_run_trains_the_same_whether_it_fitted_the_probe_head_or_loaded_it(run, tmp_path):
    # The sweep's first run fits the start head; a run that finds it saved loads it. Fitting must not move the random
    # stream the run's dropout and shuffling draw from, or the same setting trains another model in another process.
    fitted, loaded = (
        run(name, seed=0, callbacks=[SoupCallback(tmp_path / "pantry", pin_head="probe")], args={"max_steps": 2})
        for name in ("fits", "loads")
    )
    assert Pantry(tmp_path / "pantry").head_mode() == "probe"
    trained = [trainer.model.state_dict() for trainer in (fitted, loaded)]
    assert all(torch.equal(trained[0][name], trained[1][name]) for name in trained[0])


def test_checkpoints_join_by_hard_links_and_greedy_can_keep_them(run, tmp_path):
    callback = SoupCallback(tmp_path / "pantry", checkpoints=True, pin_head=True)
    for seed in (0, 1):
        trainer = run(f"r{seed}", seed=seed, callbacks=[callback], args={"save_strategy": "steps", "save_steps": 2})
    pantry = Pantry(tmp_path / "pantry")
    by_name = {e.name: e.path for e in pantry.entries()}
    for seed in (0, 1):
        for step in (2, 4):
            ours = by_name[f"r{seed}.checkpoint-{step}"] / "model.safetensors"
            theirs = tmp_path / "runs" / f"r{seed}" / f"checkpoint-{step}" / "model.safetensors"
            assert ours.stat().st_ino == theirs.stat().st_ino  # the checkpoint's file, not a second copy
        assert (by_name[f"r{seed}"] / "model.safetensors").stat().st_ino == ours.stat().st_ino  # final = last one
    assert [e.name for e in pantry.select("all")] == [
        "r0.checkpoint-2",
        "r0.checkpoint-4",
        "r1.checkpoint-2",
        "r1.checkpoint-4",
    ]
    assert [e.name for e in pantry.select("last:1")] == ["r0.checkpoint-4", "r1.checkpoint-4"]
    assert [e.name for e in pantry.select("final")] == ["r0", "r1"]
    with pytest.raises(SoupError, match=r"choose 'final', 'all', 'last:K' \(K ≥ 1\) or 'ema:DECAY'"):
        pantry.select("last:0")

    report = callback.make_soup(trainer)  # checkpoints=True: greedy over every checkpoint along the runs
    assert [Path(i.spec).name for i in report.record.ingredients] == [e.name for e in pantry.select("all")]
    assert any(i.kept for i in report.record.ingredients)

    report = callback.make_soup(trainer, entries="average:2", output_dir=tmp_path / "lawa")  # then greedy across runs
    assert [Path(i.spec).name for i in report.record.ingredients] == ["r0.last2", "r1.last2"]
    assert [i.hyperparameters["averaged_checkpoints"] for i in report.record.ingredients] == [[2, 4], [2, 4]]
    average = weights(tmp_path / "pantry" / ".averages" / "r0.last2")["classifier.weight"]
    pair = [weights(by_name[f"r0.checkpoint-{step}"])["classifier.weight"] for step in (2, 4)]
    torch.testing.assert_close(average, (pair[0] + pair[1]) / 2)
    assert [e.name for e in pantry.entries()] == sorted(by_name, key=list(by_name).index)  # no new entries

    shutil.rmtree(by_name["r0.checkpoint-2"])  # the run's checkpoints changed: its average is made again
    pantry.run_averages(2)
    again = weights(tmp_path / "pantry" / ".averages" / "r0.last2")["classifier.weight"]
    assert torch.equal(again, weights(by_name["r0.checkpoint-4"])["classifier.weight"])


def test_stock_from_a_pantry_uses_the_recorded_start(run, tmp_path):
    from hf_soups.recipes.stock import StockBase, stock_soup_tensors

    callback = SoupCallback(tmp_path / "pantry", pin_head=True)
    for seed in (0, 1, 2):
        trainer = run(f"r{seed}", seed=seed, lr=3e-2, callbacks=[callback])
    report = callback.make_soup(trainer, recipe="stock")
    base = report.record.recipe.options["base"]
    assert base["ingredient"] == str(tmp_path / "base")  # the pretrained body every run loaded
    assert base["head"] == str(tmp_path / "pantry" / "start-head.safetensors")
    assert report.record.recipe.options["uniform_tensors"] == []
    ingredients = Pantry(tmp_path / "pantry").ingredients(Pantry(tmp_path / "pantry").select("final"))
    expected, _, _ = stock_soup_tensors(
        ingredients,
        validate_ingredients(ingredients),
        StockBase.resolve(tmp_path / "base", tmp_path / "pantry" / "start-head.safetensors"),
    )
    written = weights(report.output_dir)
    for name, tensor in expected.tensors.items():
        assert torch.equal(written[name], tensor), name


def test_runs_trained_without_their_heldout_rows_are_selected_on_them(run, tmp_path, tiny_tokenizer):
    from hf_soups.evaluation import hold_out

    rest, heldout, rule = hold_out(dataset(tiny_tokenizer, 40, seed=1), fraction=0.2, seed=0)
    assert rule["rows"] == heldout.num_rows == 8 and rest.num_rows == 32
    assert not set(rest["idx"]) & set(heldout["idx"])
    soup = SoupCallback(tmp_path / "pantry", pin_head=True, select_dataset=heldout, heldout=rule)
    for name, seed in (("a", 0), ("b", 1)):
        trainer = run(name, seed=seed, callbacks=[soup], train_dataset=rest)
    assert [e.info["heldout"] for e in Pantry(tmp_path / "pantry").entries()] == [rule, rule]
    record = soup.make_soup(trainer, recipe="bagged", bags=4).record
    assert (record.recipe.select_split, record.recipe.report_split) == ("select_dataset", "eval_dataset")
    assert record.recipe.split_rule["rows"] == {"select": 8, "report": 24}  # the whole eval dataset reports
    assert record.recipe.options["bags"] == 4


def test_a_run_trained_under_another_heldout_rule_is_refused(run, tmp_path, tiny_tokenizer):
    from hf_soups.evaluation import hold_out

    data = dataset(tiny_tokenizer, 40, seed=1)
    rest, heldout, rule = hold_out(data, fraction=0.2, seed=0)
    other_rest, other_heldout, other_rule = hold_out(data, fraction=0.2, seed=1)
    run("a", callbacks=[SoupCallback(tmp_path / "pantry", pin_head=True, heldout=rule)], train_dataset=rest)
    late = SoupCallback(tmp_path / "pantry", pin_head=True, heldout=other_rule, select_dataset=other_heldout)
    trainer = run("b", seed=1, callbacks=[late], train_dataset=other_rest)
    with pytest.raises(
        SoupError,
        match=r"pantry entry 'a' was trained under the held-out rule dataset train:heldout "
        r"\(seed 0, .* but the soup is selected on dataset train:heldout \(seed 1",
    ):
        late.make_soup(trainer)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"frobnicate": 1}, "make_soup: unknown option 'frobnicate'; the judge takes select_split, report_split, "),
        ({"bags": 3}, "make_soup: unknown option 'bags'; .* recipe 'greedy' takes greedy_rule, min_gain, resume"),
        ({"recipe": "frobnicate"}, "make_soup: unknown recipe 'frobnicate'; choose one of greedy, bagged, "),
    ],
)
def test_cook_refuses_an_unknown_option(run, tmp_path, options, message):
    soup = SoupCallback(tmp_path / "pantry", pin_head=True)
    for name, seed in (("a", 0), ("b", 1)):
        trainer = run(name, seed=seed, callbacks=[soup])
    with pytest.raises(SoupError, match=message):
        soup.make_soup(trainer, **options)


@needs_glue
def test_cook_gives_its_judge_options_to_the_glue_judge(run, tmp_path):
    soup = SoupCallback(tmp_path / "pantry", pin_head=True)
    for name, seed in (("a", 0), ("b", 1)):
        trainer = run(name, seed=seed, callbacks=[soup])
    # glue_dir was once swallowed by **options, and the Hub tried instead
    report = soup.make_soup(
        trainer,
        task="rte",
        glue_dir=GLUE_DIR,
        select_split="validation:select",
        report_split="validation:report",
        batch_size=64,
    )
    assert report.record.recipe.split_rule["rows"] == {"select": 138, "report": 139}


@needs_glue
def test_a_training_set_holding_the_heldout_rows_is_refused(run, tmp_path, tiny_tokenizer):
    # all of RTE's 2,490 train rows (as transformers' run_glue.py trains) while the soup would select on 249 of them
    soup = SoupCallback(tmp_path / "pantry", pin_head=True, task="rte", glue_dir=GLUE_DIR)
    with pytest.raises(
        SoupError,
        match=r"selects the soup on train:heldout \(249 rows held out of train's 2490\), "
        r"but the Trainer's train_dataset \(2490 rows\) holds some of them",
    ):
        run("a", callbacks=[soup], train_dataset=dataset(tiny_tokenizer, 2490, seed=1))
    assert not (tmp_path / "pantry").exists()  # refused before the start head is pinned


def rte_rows(tokenizer, glue_dir: Path, split: str) -> datasets.Dataset:
    """RTE rows tokenized as run_glue.py tokenizes them (``idx`` and ``label`` kept; the Trainer drops ``idx``)."""
    rows = load_glue_split("rte", split, glue_dir).dataset
    return rows.map(
        lambda batch: tokenizer(batch["sentence1"], batch["sentence2"]),
        batched=True,
        remove_columns=["sentence1", "sentence2"],
    )


def test_a_run_trained_on_the_heldout_rows_is_refused_by_their_content(run, tmp_path, tiny_tokenizer):
    glue = tmp_path / "glue"
    write_rte(glue, 200, file="train.tsv")
    soup = SoupCallback(tmp_path / "pantry", pin_head=True, task="rte", glue_dir=glue)
    heldout = rte_rows(tiny_tokenizer, glue, "train:heldout")  # 20 rows: fewer than the rest, `idx` dropped
    for rows in (heldout, heldout.shuffle(seed=0).map(lambda row: {"label": 1 - row["label"], "idx": -1})):
        with pytest.raises(
            SoupError,
            match=r"selects the soup on train:heldout \(20 rows held out of train's 200\), "
            r"but the Trainer's train_dataset \(20 rows\) holds 20 of them",
        ):
            run("a", callbacks=[soup], train_dataset=rows)
    run("a", callbacks=[soup], train_dataset=rte_rows(tiny_tokenizer, glue, "train:rest").select(range(32)))
    (entry,) = Pantry(tmp_path / "pantry").entries()
    assert entry.info["heldout"] == heldout_rule("rte", glue)


def test_a_soup_is_not_selected_on_heldout_rows_changed_since_training(run, tmp_path, tiny_tokenizer):
    glue = tmp_path / "glue"
    path = write_rte(glue, 200, file="train.tsv")
    soup = SoupCallback(tmp_path / "pantry", pin_head=True, task="rte", glue_dir=glue)
    for name, seed in (("a", 0), ("b", 1)):
        trainer = run(
            name,
            seed=seed,
            callbacks=[soup],
            train_dataset=rte_rows(tiny_tokenizer, glue, "train:rest").select(range(32)),
        )
    held = load_glue_split("rte", "train:heldout", glue).dataset["idx"][0]
    header, *lines = path.read_text().splitlines()
    fields = lines[held].split("\t")
    lines[held] = "\t".join([*fields[:-1], "entailment" if fields[-1] == "not_entailment" else "not_entailment"])
    path.write_text("\n".join([header, *lines]) + "\n")  # one held-out row relabelled; positions unchanged
    with pytest.raises(
        SoupError,
        match=r"pantry entry 'a' was trained leaving out held-out rows whose text or labels "
        r"differ from the rows the soup is selected on now .*\(rows reordered, edited or relabelled\)",
    ):
        soup.make_soup(trainer)


def test_an_entry_of_an_older_version_without_a_content_digest_is_checked_by_position(tmp_path, caplog):
    rule = {"task": "rte", "split": "train:heldout", "seed": 0, "fraction": 0.1, "rows": 20, "digest": "d" * 64}
    now = rule | {"columns": ["sentence1", "sentence2", "label"], "content": "c" * 64}
    entries = [PantryEntry(tmp_path / "old", {"heldout": rule}), PantryEntry(tmp_path / "new", {"heldout": now})]
    with caplog.at_level("WARNING", logger="hf_soups.pantry"):
        check_heldout(entries, now)
    assert "pantry entry 'old' records its held-out rows by position only" in caplog.text
    with pytest.raises(SoupError, match="pantry entry 'old' was trained under the held-out rule"):
        check_heldout(entries, now | {"seed": 1, "digest": "e" * 64})


def test_select_dataset_is_compared_with_its_rule_and_the_training_rows(run, tmp_path, tiny_tokenizer):
    from hf_soups.evaluation import hold_out

    rest, heldout, rule = hold_out(dataset(tiny_tokenizer, 40, seed=1), fraction=0.2, seed=0)
    relabelled = heldout.map(lambda row: {"label": 1 - row["label"]})
    for other in (heldout.select(range(7, -1, -1)), relabelled, heldout.select(range(7))):
        with pytest.raises(SoupError, match=r"select_dataset=...\) does not hold the rows of its held-out rule"):
            SoupCallback(tmp_path / "pantry", select_dataset=other, heldout=rule)
    soup = SoupCallback(tmp_path / "pantry", pin_head=True, select_dataset=heldout, heldout=rule)
    everything = datasets.concatenate_datasets([rest, relabelled.map(lambda row: {"idx": -1})])
    with pytest.raises(
        SoupError,
        match=r"selects the soup on 8 rows, but 8 rows of the Trainer's train_dataset "
        r"\(40 rows\) read the same",
    ):
        run("a", callbacks=[soup], train_dataset=everything)
    with pytest.raises(SoupError, match=r"selects the soup on 8 rows, but 8 rows"):  # without a rule as well
        run("a", callbacks=[SoupCallback(tmp_path / "pantry", select_dataset=heldout)], train_dataset=everything)


class RecordWeights(TrainerCallback):
    """Keeps the trainable weights after every optimizer step."""

    def __init__(self) -> None:
        self.history: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.history.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})


def test_ema_entries_hold_each_runs_weight_average_and_cook(run, tmp_path):
    soup = SoupCallback(tmp_path / "pantry", pin_head=True, checkpoints=True, ema=(0.5, 0.9))
    recorded = RecordWeights()
    first = run("r", callbacks=[soup, recorded], args={"save_strategy": "steps", "save_steps": 2})
    pantry = Pantry(tmp_path / "pantry")
    assert [(e.name, e.info["kind"], e.info.get("ema_decay"), e.info.get("ema_of")) for e in pantry.entries()] == [
        ("r.checkpoint-2", "checkpoint", None, None),
        ("r.checkpoint-2.ema-0.5", "ema", 0.5, "checkpoint"),
        ("r.checkpoint-2.ema-0.9", "ema", 0.9, "checkpoint"),
        ("r.checkpoint-4", "checkpoint", None, None),
        ("r.checkpoint-4.ema-0.5", "ema", 0.5, "checkpoint"),
        ("r.checkpoint-4.ema-0.9", "ema", 0.9, "checkpoint"),
        ("r", "final", None, None),
        ("r.ema-0.5", "ema", 0.5, "final"),
        ("r.ema-0.9", "ema", 0.9, "final"),
    ]
    (final,) = pantry.select("ema:0.9")
    steps = len(recorded.history)
    assert steps == 4 and final.info["ema_steps"] == 4 and final.name == "r.ema-0.9"
    coefficients = [0.9 ** (steps - s) for s in range(1, steps + 1)]
    for name, tensor in weights(final.path).items():
        expected = sum(c * h[name].double() for c, h in zip(coefficients, recorded.history, strict=True))
        torch.testing.assert_close(tensor.double(), expected / sum(coefficients), rtol=1e-5, atol=1e-6)
    live = dict(first.model.named_parameters())  # saving the EMA swapped it back out of the model
    assert all(torch.equal(live[n], t) for n, t in recorded.history[-1].items())
    assert all(torch.equal(t, live[n].detach()) for n, t in weights(pantry.path / "r").items())
    assert [e.name for e in pantry.select("all")] == ["r.checkpoint-2", "r.checkpoint-4"]

    second = run("s", seed=1, callbacks=[soup])
    assert [e.name for e in pantry.select("final+ema:0.9")] == ["r", "r.ema-0.9", "s", "s.ema-0.9"]
    report = soup.make_soup(second, entries="ema:0.5", output_dir=tmp_path / "soup")
    record = SoupRecord.load(report.output_dir)
    assert [Path(i.spec).name for i in record.ingredients] == ["r.ema-0.5", "s.ema-0.5"]
    with pytest.raises(SoupError, match=r"no entry is an EMA of decay 0.3.*holds ema:0.5, ema:0.9"):
        pantry.select("ema:0.3")


@pytest.mark.parametrize("ema", [(0,), (1.0,), (0.9, 0.9), ("0.9",)])
def test_an_ema_decay_outside_0_1_or_twice_is_refused(tmp_path, ema):
    with pytest.raises(SoupError, match=r"ema"):
        SoupCallback(tmp_path / "pantry", ema=ema)


def test_ema_under_sharded_training_is_refused_before_training(tmp_path):
    model = BertForSequenceClassification(tiny_bert_config())
    for index, parameter in enumerate(model.parameters()):
        parameter.ds_id = index  # how DeepSpeed ZeRO-3 marks the parameters it partitions
    args = TrainingArguments(str(tmp_path / "run"), report_to="none", use_cpu=True)
    with pytest.raises(SoupError, match=r"ema=.*under DeepSpeed ZeRO-3 they are sharded"):
        SoupCallback(tmp_path / "pantry", ema=(0.9,)).on_train_begin(args, TrainerState(), None, model=model)
    assert not (tmp_path / "pantry").exists()
