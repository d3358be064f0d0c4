"""The tests' shared helpers (fixtures are in ``conftest.py``): tiny configs, tokenizers and models built offline,
the GLUE data marker, the ``accelerate launch`` command line, and GLUE tsv folders written the way the GLUE download
lays them out (headers and columns as in the real files, not taken from hf_soups' registry)."""

from __future__ import annotations

import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from hf_soups.evaluation import EvalResult
from hf_soups.recipes.judge import mean_probabilities

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not (GLUE_DIR / "RTE").is_dir(), reason=f"no GLUE data at {GLUE_DIR}")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(40)), "the", "a", "cat", "dog"]


def accelerate_launch(processes: int = 2) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run a script under ``accelerate launch`` on ``processes`` CPU
    processes (append the script and its arguments)."""
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    return launch, {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def tiny_bert_config(**overrides) -> BertConfig:
    """A 2-layer BERT classifier config small enough for unit tests."""
    values = dict(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_t5_config(**overrides) -> T5Config:
    """A 1-layer T5 config (tied `shared`/`embed_tokens`/`lm_head`) for unit tests."""
    values = dict(
        vocab_size=len(VOCAB),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=3,
    )
    values.update(overrides)
    return T5Config(**values)


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Play "fine-tuning": add seeded noise to every float parameter (tied ones stay tied)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "is", "not", "big", "red", "null", '"', "."]
# T5 needs its task prefixes, field names and label words in the vocabulary.
T5_WORDS = WORDS + [
    "rte",
    "mnli",
    "stsb",
    "sst2",
    "sentence",
    "sentence1",
    "sentence2",
    "hypothesis",
    "premise",
    ":",
    "entailment",
    "not_entailment",
    "neutral",
    "contradiction",
    "positive",
    "negative",
    *"012345",
]

# Real GLUE headers.
HEADERS = {
    "RTE": ["index", "sentence1", "sentence2", "label"],
    "SST-2": ["sentence", "label"],
    "STS-B": [
        "index",
        "genre",
        "filename",
        "year",
        "old_index",
        "source1",
        "source2",
        "sentence1",
        "sentence2",
        "score",
    ],
    "QQP": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "QNLI": ["index", "question", "sentence", "label"],
    "WNLI": ["index", "sentence1", "sentence2", "label"],
    "MNLI": [
        "index",
        "promptID",
        "pairID",
        "genre",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
        "label1",
        "label2",
        "label3",
        "label4",
        "label5",
        "gold_label",
    ],
}


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[:12]) for _ in range(rng.randint(2, 12)))


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in lines), encoding="utf-8")
    return path


def write_rte(glue_dir: Path, num_rows: int, seed: int = 0, file: str = "dev.tsv") -> Path:
    """An RTE file of random sentences: labels are names, as in the real file."""
    rng = random.Random(seed)
    rows = [[i, sentence(rng), sentence(rng), rng.choice(["entailment", "not_entailment"])] for i in range(num_rows)]
    return write_tsv(glue_dir / "RTE" / file, HEADERS["RTE"], rows)


def write_sst2(glue_dir: Path, num_rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [[sentence(rng) + " ", rng.randint(0, 1)] for _ in range(num_rows)]
    return write_tsv(glue_dir / "SST-2" / "dev.tsv", HEADERS["SST-2"], rows)


def write_stsb(glue_dir: Path, num_rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [
        [
            i,
            "main-captions",
            "MSRvid",
            "2012test",
            f"{i:04d}",
            "none",
            "none",
            sentence(rng),
            sentence(rng),
            f"{rng.uniform(0, 5):.3f}",
        ]
        for i in range(num_rows)
    ]
    return write_tsv(glue_dir / "STS-B" / "dev.tsv", HEADERS["STS-B"], rows)


def write_mnli(glue_dir: Path, rows: list[tuple[str, str, str]], file: str = "dev_matched.tsv") -> Path:
    """MNLI rows ``(premise, hypothesis, gold_label)`` with the parse and annotator columns filled in."""
    lines = [
        [
            i,
            1000 + i,
            f"{1000 + i}e",
            "fiction",
            "( x )",
            "( y )",
            "(ROOT x)",
            "(ROOT y)",
            premise,
            hypothesis,
            gold,
            gold,
            gold,
            gold,
            gold,
            gold,
        ]
        for i, (premise, hypothesis, gold) in enumerate(rows)
    ]
    return write_tsv(glue_dir / "MNLI" / file, HEADERS["MNLI"], lines)


def tiny_bert_tokenizer(folder: Path) -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))


def tiny_bert(num_labels: int = 2, seed: int = 0, **config) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    values = dict(
        vocab_size=5 + len(WORDS),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(BertConfig(**(values | config))).eval()


def tiny_t5_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer that appends ``</s>`` like T5's (``0.2`` → ``0 . 2 </s>``)."""
    vocab = {word: i for i, word in enumerate(["<pad>", "</s>", "<unk>", *T5_WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=3 + len(T5_WORDS),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


class TwoLayers(torch.nn.Module):
    """z = W₂ tanh(W₁ x + b₁) + b₂ (3 inputs, 4 hidden units), its output in ``.logits`` as a transformers model
    gives it: the two-layer model the Fisher and RegMean statistics are checked on by hand."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = torch.nn.Linear(3, 4), torch.nn.Linear(4, outputs)

    def forward(self, x):
        return types.SimpleNamespace(logits=self.second(torch.tanh(self.first(x))))


ROWS = 100


class BiasJudge:
    """Scores a model by how close its classifier bias is to zero: right answers known by construction.

    The score is an accuracy on ROWS rows whose first ``round(ROWS * quality)`` predictions are right, quality =
    max(0, 1 − ‖bias‖₁), the same on both splits.
    """

    task, metric = "toy", "accuracy"
    split_names = {"select": "toy:select", "report": "toy:report"}
    split_rule = {"rows": {"select": ROWS, "report": ROWS}}

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls, self.interrupt_after = 0, interrupt_after

    def score(self, model, split, return_predictions=False):
        if split == "select":
            self.calls += 1
            if self.interrupt_after is not None and self.calls > self.interrupt_after:
                raise KeyboardInterrupt
        quality = max(0.0, 1.0 - float(model.classifier.bias.detach().abs().sum()))
        labels = np.ones(ROWS, dtype=int)
        predictions = (np.arange(ROWS) < round(ROWS * quality)).astype(int)
        logits = np.stack([1 - predictions, predictions], axis=1).astype(float)
        return EvalResult(
            "toy",
            split,
            {"accuracy": self.main_metric(predictions, labels)},
            "accuracy",
            ROWS,
            {},
            predictions,
            logits,
            labels,
        )

    def main_metric(self, predictions, labels):
        return float(np.mean(predictions == labels))

    def ensemble(self, results):
        predictions = mean_probabilities([r.logits for r in results]).argmax(-1)
        labels = results[0].labels
        return EvalResult(
            "toy",
            results[0].split,
            {"accuracy": self.main_metric(predictions, labels)},
            "accuracy",
            ROWS,
            {},
            predictions,
            None,
            labels,
        )
