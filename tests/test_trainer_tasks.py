"""SoupCallback on Trainer tasks beyond sequence classification (hf_soups.recipes.trainer_judge): a token-
classification sweep judged by entity-level F1 (seqeval) and a T5 Seq2SeqTrainer sweep judged on generated text,
each scored by the Trainer's own evaluation loop; recipes that need logits or a loss say they do not apply."""

from __future__ import annotations

import logging
import random

import datasets
import numpy as np
import pytest
import torch
from helpers import VOCAB, accelerate_launch, perturbed, tiny_bert_config, tiny_t5, tiny_t5_tokenizer
from huggingface_hub import ModelCard
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoModelForTokenClassification,
    BertForTokenClassification,
    BertModel,
    DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_soups import SoupCallback, SoupError
from hf_soups.record import SoupRecord

seqeval = pytest.importorskip("seqeval.metrics")

TAGS = {0: "O", 1: "B-ANIMAL"}
ANIMALS = {"cat", "dog"}
SETTINGS = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "save_strategy": "no",
    "report_to": "none",
    "use_cpu": True,
    "disable_tqdm": True,
}
GRID = [("lr5e-2", 5e-2, 0), ("lr1e-1", 1e-1, 1), ("lr2e-1", 2e-1, 2)]


def sentences(rows: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.choices(VOCAB[5:], k=rng.randint(3, 7)) for _ in range(rows)]


def entity_f1(prediction) -> dict[str, float]:
    """The user's compute_metrics: entity-level F1 of the tags, positions labelled -100 left out."""
    predicted, gold = prediction.predictions.argmax(-1), prediction.label_ids
    keep = gold != -100
    truth = [[TAGS[int(t)] for t in row[mask]] for row, mask in zip(gold, keep, strict=True)]
    guess = [[TAGS[int(t)] for t in row[mask]] for row, mask in zip(predicted, keep, strict=True)]
    return {"f1": float(seqeval.f1_score(truth, guess)), "accuracy": float(seqeval.accuracy_score(truth, guess))}


def tagged(tokenizer, rows: int, seed: int) -> datasets.Dataset:
    words = sentences(rows, seed)

    def encode(batch):
        encoded = tokenizer(batch["words"], is_split_into_words=True)
        encoded["labels"] = [
            [-100 if w is None else int(sentence[w] in ANIMALS) for w in encoded.word_ids(i)]
            for i, sentence in enumerate(batch["words"])
        ]
        return encoded

    return datasets.Dataset.from_dict({"words": words}).map(encode, batched=True, remove_columns=["words"])


@pytest.mark.slow
def test_a_token_classification_sweep_cooks_on_entity_f1(tmp_path, tiny_tokenizer, caplog):
    base = tmp_path / "base"
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(base)
    train, dev, held = (tagged(tiny_tokenizer, rows, seed) for rows, seed in ((32, 1), (16, 2), (16, 3)))
    soup = SoupCallback(tmp_path / "pantry", pin_head=True, select_dataset=held)
    collator = DataCollatorForTokenClassification(tiny_tokenizer)
    for name, lr, seed in GRID:
        set_seed(seed)
        model = BertForTokenClassification.from_pretrained(base, num_labels=2, id2label=TAGS)
        args = TrainingArguments(str(tmp_path / "runs" / name), learning_rate=lr, seed=seed, **SETTINGS)
        trainer = Trainer(
            model,
            args,
            train_dataset=train,
            eval_dataset=dev,
            data_collator=collator,
            processing_class=tiny_tokenizer,
            compute_metrics=entity_f1,
            callbacks=[soup],
        )
        trainer.train()

    report = soup.make_soup(trainer, output_dir=tmp_path / "greedy")
    record = SoupRecord.load(report.output_dir)
    assert record.recipe.metric == "f1" and "report f1" in report.table
    names = [r.name for r in record.results]
    assert names[:3] == ["best individual", "greedy", "uniform"] and "ensemble" in names  # logits: an ensemble
    greedy = next(r for r in record.results if r.name == "greedy")
    souped = AutoModelForTokenClassification.from_pretrained(report.output_dir)
    evaluated = Trainer(
        souped, trainer.args, eval_dataset=dev, data_collator=collator, compute_metrics=entity_f1
    ).evaluate()
    assert greedy.scores["report"] == {
        "f1": pytest.approx(evaluated["eval_f1"]),
        "accuracy": pytest.approx(evaluated["eval_accuracy"]),
    }
    card = ModelCard.load(report.output_dir / "README.md")
    assert card.data.pipeline_tag == "token-classification" and "f1 (report)" in card.text

    uniform = soup.make_soup(trainer, recipe="uniform", output_dir=tmp_path / "uniform")
    assert [r.name for r in uniform.record.results][:2] == ["best individual", "uniform"]
    with pytest.raises(
        SoupError,
        match="recipe 'learned' does not apply here: it needs .* one label a row .* the "
        "judge scores from logits of many labels a row",
    ):
        soup.make_soup(trainer, recipe="learned", output_dir=tmp_path / "learned")
    assert not (tmp_path / "learned").exists()


@pytest.mark.slow
def test_two_processes_judge_a_token_classifier_as_one(tmp_path, tiny_tokenizer):
    import subprocess
    import sys
    from pathlib import Path

    torch.manual_seed(0)
    base = BertForTokenClassification(tiny_bert_config(num_labels=2, id2label=TAGS))
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for i in range(3):
        base.load_state_dict(state)
        perturbed(base, seed=i + 1, scale=0.5).save_pretrained(tmp_path / f"ing{i}")
        tiny_tokenizer.save_pretrained(tmp_path / f"ing{i}")
    script = str(Path(__file__).parent / "scripts" / "trainer_judge_processes.py")
    launch, env = accelerate_launch(2)
    for command, out in (([sys.executable], "one"), (launch, "two")):
        done = subprocess.run(
            [*command, script, str(tmp_path), str(tmp_path / out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (SoupRecord.load(tmp_path / name) for name in ("one", "two"))
    assert one.recipe.split_rule["rows"] == {"select": 11, "report": 11}
    assert [r.scores for r in one.results] == [r.scores for r in two.results]
    assert one.recipe.trajectory == two.recipe.trajectory
    assert [i.kept for i in one.ingredients] == [i.kept for i in two.ingredients]


def exact_match(tokenizer):
    """The user's compute_metrics: the share of generated answers equal to the target."""

    def compute(prediction):
        predicted = np.where(prediction.predictions < 0, tokenizer.pad_token_id, prediction.predictions)
        gold = np.where(prediction.label_ids < 0, tokenizer.pad_token_id, prediction.label_ids)
        decode = lambda ids: [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]  # noqa: E731
        return {"exact_match": float(np.mean([a == b for a, b in zip(decode(predicted), decode(gold), strict=True)]))}

    return compute


def answered(tokenizer, rows: int, seed: int) -> datasets.Dataset:
    """T5 rows ``sst2 sentence: …`` → ``positive`` when the sentence holds a ``1``, else ``negative``."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "1", "2", "3"]
    texts = [" ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(rows)]
    sources = [f"sst2 sentence : {text}" for text in texts]
    targets = ["positive" if "1" in text.split() else "negative" for text in texts]
    encoded = tokenizer(sources, text_target=targets)
    return datasets.Dataset.from_dict(dict(encoded))


@pytest.mark.slow
def test_a_t5_sweep_cooks_on_generated_text(tmp_path, caplog):
    tokenizer = tiny_t5_tokenizer()
    tiny_t5(seed=0).save_pretrained(tmp_path / "base")
    train, dev, held = (answered(tokenizer, rows, seed) for rows, seed in ((32, 1), (16, 2), (16, 3)))
    soup = SoupCallback(tmp_path / "pantry", select_dataset=held)
    for name, lr, seed in GRID:
        set_seed(seed)
        model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "base")
        args = Seq2SeqTrainingArguments(
            str(tmp_path / "runs" / name),
            learning_rate=lr,
            seed=seed,
            predict_with_generate=True,
            generation_max_length=4,
            **SETTINGS,
        )
        trainer = Seq2SeqTrainer(
            model,
            args,
            train_dataset=train,
            eval_dataset=dev,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model),
            processing_class=tokenizer,
            compute_metrics=exact_match(tokenizer),
            callbacks=[soup],
        )
        trainer.train()

    with caplog.at_level(logging.WARNING, logger="hf_soups.recipes"):
        report = soup.make_soup(trainer, output_dir=tmp_path / "greedy")
    assert "the logit-ensemble rows are left out" in caplog.text and "generated ids" in caplog.text
    record = SoupRecord.load(report.output_dir)
    assert [r.name for r in record.results] == ["best individual", "greedy", "uniform"]
    assert record.recipe.metric == "exact_match" and "report exact_match" in report.table
    greedy = next(r for r in record.results if r.name == "greedy")
    souped = AutoModelForSeq2SeqLM.from_pretrained(report.output_dir)
    evaluated = Seq2SeqTrainer(
        souped,
        trainer.args,
        eval_dataset=dev,
        data_collator=DataCollatorForSeq2Seq(tokenizer, souped),
        compute_metrics=exact_match(tokenizer),
    ).evaluate()
    assert greedy.scores["report"]["exact_match"] == pytest.approx(evaluated["eval_exact_match"])
    assert "exact_match (report)" in (report.output_dir / "README.md").read_text()

    uniform = soup.make_soup(trainer, recipe="uniform", output_dir=tmp_path / "uniform")
    assert [r.name for r in uniform.record.results] == ["best individual", "uniform"]
    with pytest.raises(
        SoupError,
        match="recipe 'learned' does not apply here: it needs the model's logits .* the "
        "judge scores from generated ids",
    ):
        soup.make_soup(trainer, recipe="learned", output_dir=tmp_path / "learned")
