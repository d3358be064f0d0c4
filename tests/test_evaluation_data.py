"""GLUE data: the local tsv reader (row counts, features, label ids), seeded select/report splits, bad input."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from helpers import GLUE_DIR, HEADERS, needs_glue, write_mnli, write_rte, write_tsv

from hf_soups.errors import SoupError
from hf_soups.evaluation import (
    SplitRule,
    heldout_rule,
    hold_out,
    load_glue_split,
    read_glue_tsv,
    rows_digest,
    split_names,
)
from hf_soups.evaluation.data import (
    check_splits_apart,
    content_digest,
    glue_features,
    input_keys,
    trained_heldout_rows,
)

# Row counts from SOURCES.md.
ROW_COUNTS = {
    ("cola", "train"): 8551,
    ("cola", "validation"): 1043,
    ("sst2", "train"): 67349,
    ("sst2", "validation"): 872,
    ("mrpc", "train"): 3668,
    ("mrpc", "validation"): 408,
    ("stsb", "train"): 5749,
    ("stsb", "validation"): 1500,
    ("rte", "train"): 2490,
    ("rte", "validation"): 277,
}
# Label counts from SOURCES.md, by Hub label id.
LABEL_COUNTS = {
    "sst2": {1: 444, 0: 428},
    "mrpc": {1: 279, 0: 129},
    "cola": {1: 721, 0: 322},
    "rte": {0: 146, 1: 131},
}


@needs_glue
@pytest.mark.parametrize(("task", "split"), sorted(ROW_COUNTS))
def test_shared_glue_row_counts(task, split):
    dataset = read_glue_tsv(GLUE_DIR, task, split)
    assert dataset.num_rows == ROW_COUNTS[task, split]
    assert dataset.features == glue_features(task)
    assert list(dataset["idx"][:3]) == [0, 1, 2]
    if split == "validation" and task in LABEL_COUNTS:
        labels, counts = np.unique(np.asarray(list(dataset["label"])), return_counts=True)
        assert dict(zip(labels.tolist(), counts.tolist(), strict=True)) == LABEL_COUNTS[task]


@needs_glue
def test_shared_glue_rows_as_on_the_hub():
    rte = read_glue_tsv(GLUE_DIR, "rte", "validation")[0]
    assert rte["sentence2"] == "Christopher Reeve had an accident." and rte["label"] == 1  # not_entailment
    mrpc = read_glue_tsv(GLUE_DIR, "mrpc", "validation")[0]  # bare quote kept, BOM stripped from the header
    assert mrpc["sentence2"].startswith('" The foodservice pie') and mrpc["label"] == 1
    sst2 = read_glue_tsv(GLUE_DIR, "sst2", "validation")[0]
    assert sst2["sentence"] == "it 's a charming and often affecting journey . "
    stsb = read_glue_tsv(GLUE_DIR, "stsb", "validation")[1]
    assert stsb["label"] == pytest.approx(4.75) and stsb["sentence1"] == "A young child is riding a horse."
    cola = read_glue_tsv(GLUE_DIR, "cola", "validation")
    assert cola[-1]["sentence"] and cola[0]["sentence"] == "The sailors rode the breeze clear of the rocks."


def test_mnli_qqp_qnli_wnli_layouts(tmp_path):
    write_mnli(tmp_path, [("p0", "h0", "entailment"), ("p1", "h1", "neutral"), ("p2", "null", "contradiction")])
    write_mnli(tmp_path, [("q0", "k0", "neutral")], file="dev_mismatched.tsv")
    write_tsv(tmp_path / "QQP" / "dev.tsv", HEADERS["QQP"], [[7, 1, 2, "how?", "NA", 1], [8, 3, 4, "why?", "why", 0]])
    qnli = [[0, "q?", "s.", "not_entailment"], [1, "q", "s", "entailment"]]
    write_tsv(tmp_path / "QNLI" / "dev.tsv", HEADERS["QNLI"], qnli)
    write_tsv(tmp_path / "WNLI" / "dev.tsv", HEADERS["WNLI"], [[0, "a", "b", 1], [1, "c", "d", 0]])

    mnli = read_glue_tsv(tmp_path, "mnli", "validation_matched")
    assert mnli.to_dict() == {
        "premise": ["p0", "p1", "p2"],
        "hypothesis": ["h0", "h1", "null"],
        "label": [0, 1, 2],
        "idx": [0, 1, 2],
    }
    assert load_glue_split("mnli", None, tmp_path).dataset.num_rows == 3  # default: validation_matched
    assert load_glue_split("mnli", "validation_mismatched", tmp_path).dataset["premise"][0] == "q0"
    assert read_glue_tsv(tmp_path, "qqp", "validation").to_dict() == {
        "question1": ["how?", "why?"],
        "question2": ["NA", "why"],
        "label": [1, 0],
        "idx": [0, 1],
    }
    assert list(read_glue_tsv(tmp_path, "qnli", "validation")["label"]) == [1, 0]  # not_entailment = 1
    assert list(read_glue_tsv(tmp_path, "wnli", "validation")["label"]) == [1, 0]  # entailment = 1 on the Hub too
    for task in ["mnli", "qqp", "qnli", "wnli"]:
        assert read_glue_tsv(tmp_path, task, "validation_matched" if task == "mnli" else "validation").features == (
            glue_features(task)
        )


def test_select_report_and_heldout_splits(tmp_path):
    write_rte(tmp_path, 101)
    select = load_glue_split("rte", "validation:select", tmp_path)
    report = load_glue_split("rte", "validation:report", tmp_path)
    select_idx, report_idx = list(select.dataset["idx"]), list(report.dataset["idx"])
    assert (len(select_idx), len(report_idx)) == (50, 51)
    assert sorted(select_idx + report_idx) == list(range(101))
    assert select_idx == sorted(select_idx) and report_idx == sorted(report_idx)
    assert select.rule["rows"] == 50 and select.rule["base_rows"] == 101 and select.rule["seed"] == 0
    # deterministic, seed-dependent, and reproducible from the recorded rule
    assert list(load_glue_split("rte", "validation:select", tmp_path).dataset["idx"]) == select_idx
    other = load_glue_split("rte", "validation:select", tmp_path, SplitRule(seed=1))
    assert list(other.dataset["idx"]) != select_idx
    replay = load_glue_split("rte", "validation:select", tmp_path, SplitRule.from_record(other.rule))
    assert list(replay.dataset["idx"]) == list(other.dataset["idx"])

    write_rte(tmp_path, 200, file="train.tsv")
    heldout = load_glue_split("rte", "train:heldout", tmp_path, SplitRule(heldout_fraction=0.25))
    rest = load_glue_split("rte", "train:rest", tmp_path, SplitRule(heldout_fraction=0.25))
    assert heldout.dataset.num_rows == 50 and rest.dataset.num_rows == 150
    assert not set(heldout.dataset["idx"]) & set(rest.dataset["idx"])
    assert heldout.rule["fraction"] == 0.25 and heldout.rule["part"] == "heldout"


def test_the_heldout_rule_names_the_heldout_rows(tmp_path):
    write_rte(tmp_path, 200, file="train.tsv")
    heldout = load_glue_split("rte", "train:heldout", tmp_path)
    rule = heldout_rule("rte", tmp_path)
    columns = ["sentence1", "sentence2", "label"]
    assert rule == {
        "task": "rte",
        "split": "train:heldout",
        "seed": 0,
        "fraction": 0.1,
        "rows": 20,
        "digest": rows_digest(heldout.dataset["idx"]),
        "columns": columns,
        "content": content_digest(heldout.dataset, columns),
    }
    assert heldout_rule("rte", tmp_path, SplitRule(seed=1))["digest"] != rule["digest"]
    # your own dataset held out by the same rule: the same rows, the same digest
    rest, held, own = hold_out(read_glue_tsv(tmp_path, "rte", "train"))
    assert list(held["idx"]) == list(heldout.dataset["idx"]) and own["digest"] == rule["digest"]
    assert rest.num_rows == 180 and not set(rest["idx"]) & set(held["idx"])
    assert own["columns"] == columns and own["content"] == rule["content"]


def test_the_heldout_rule_names_the_heldout_rows_content(tmp_path):
    # rows shuffled or relabelled in the tsv after training keep the held-out positions, not their content
    path = write_rte(tmp_path, 200, file="train.tsv")
    rule = heldout_rule("rte", tmp_path)
    header, *lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *reversed(lines)]) + "\n")
    shuffled = heldout_rule("rte", tmp_path)
    assert shuffled["digest"] == rule["digest"] and shuffled["content"] != rule["content"]
    held = load_glue_split("rte", "train:heldout", tmp_path).dataset["idx"][0]
    lines = path.read_text().splitlines()
    fields = lines[1 + held].split("\t")
    fields[-1] = "entailment" if fields[-1] == "not_entailment" else "not_entailment"
    lines[1 + held] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")
    relabelled = heldout_rule("rte", tmp_path)
    assert relabelled["digest"] == rule["digest"] and relabelled["content"] not in (
        rule["content"],
        shuffled["content"],
    )


def test_hold_out_trains_on_no_copy_of_a_heldout_row():
    data = datasets.Dataset.from_dict({"input_ids": [[2, i % 5, 3] for i in range(40)], "label": [0] * 40})
    rest, held, _ = hold_out(data, fraction=0.1)
    assert held.num_rows == 4 and rest.num_rows == 8 * (5 - len(set(input_keys(held))))  # each input 8 times
    assert not set(input_keys(rest)) & set(input_keys(held))


def test_trained_heldout_rows_counts_heldout_rows_by_content(tmp_path, tiny_tokenizer, monkeypatch):
    path = write_rte(tmp_path, 200, file="train.tsv")
    header, *lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines, lines[6]]) + "\n")  # row 6 (held out) again, as row 200 (not)
    heldout = load_glue_split("rte", "train:heldout", tmp_path)
    rest = load_glue_split("rte", "train:rest", tmp_path).dataset

    def tokenized(rows, **options):  # as a training script tokenizes GLUE rows; the Trainer then drops the rest
        encoded = rows.map(
            lambda batch: tiny_tokenizer(batch["sentence1"], batch["sentence2"], **options), batched=True
        )
        return encoded.select_columns(["input_ids", "attention_mask", "label"])

    assert trained_heldout_rows(tokenized(rest), heldout, tiny_tokenizer, tmp_path) == 0
    relabelled = heldout.dataset.map(lambda row: {"label": 1 - row["label"]}).shuffle(seed=0)
    padded = tokenized(relabelled, truncation=True, max_length=24, padding="max_length")
    assert 6 in heldout.dataset["idx"] and 200 not in heldout.dataset["idx"]
    # every held-out row but 6, whose copy in the rest cannot be told from it
    assert trained_heldout_rows(padded, heldout, tiny_tokenizer, tmp_path) == heldout.dataset.num_rows - 1
    monkeypatch.setattr("hf_soups.evaluation.data.TOKENIZE_ROWS", 7)  # the train split tokenized in 29 parts
    assert trained_heldout_rows(padded, heldout, tiny_tokenizer, tmp_path) == heldout.dataset.num_rows - 1
    assert trained_heldout_rows(tokenized(rest.select(range(9))), heldout, tiny_tokenizer, tmp_path) == 0


@pytest.mark.parametrize("fraction", [0.0, 0.6, -0.1, float("nan")])
def test_a_heldout_fraction_outside_0_to_half_is_refused(tmp_path, fraction):
    write_rte(tmp_path, 20, file="train.tsv")
    with pytest.raises(SoupError, match=r"heldout_fraction: must be in \(0, 0.5\]|heldout_fraction: must be a fin"):
        load_glue_split("rte", "train:heldout", tmp_path, SplitRule(heldout_fraction=fraction))
    with pytest.raises(SoupError, match="heldout_fraction: must be"):
        hold_out(read_glue_tsv(tmp_path, "rte", "train"), fraction)


@pytest.mark.parametrize(
    ("select", "report", "apart"),
    [
        ("train:heldout", "validation", True),
        ("validation:select", "validation:report", True),
        ("train:heldout", "train:rest", True),
        ("validation:select", "validation", False),
        ("train:heldout", "train:report", False),
        ("validation", "validation", False),
        ("train", "train:heldout", False),
    ],
)
def test_check_splits_apart(select, report, apart):
    if apart:
        check_splits_apart(select, report)
    else:
        with pytest.raises(SoupError, match="overlaps"):
            check_splits_apart(select, report)


def test_unknown_split_lists_valid_ones(tmp_path):
    assert "validation:report" in split_names("rte") and "validation_matched:select" in split_names("mnli")
    with pytest.raises(SoupError, match=r"unknown split 'test' for task 'rte'; valid splits: train, validation, "):
        load_glue_split("rte", "test", tmp_path)
    with pytest.raises(SoupError, match=r"unknown split 'validation' for task 'mnli'.*validation_matched"):
        load_glue_split("mnli", "validation", tmp_path)
    with pytest.raises(SoupError, match="unknown GLUE task 'glue'; valid tasks: cola, sst2"):
        load_glue_split("glue", "validation", tmp_path)


def test_bad_split_rule(tmp_path):
    write_rte(tmp_path, 10)
    with pytest.raises(SoupError, match="select_fraction=1.0 must be strictly between 0 and 1"):
        load_glue_split("rte", "validation:select", tmp_path, SplitRule(select_fraction=1.0))


def test_empty_split(tmp_path):
    write_rte(tmp_path, 0)
    with pytest.raises(SoupError, match=r"split 'validation' of task 'rte' \(local:.*\) has no rows"):
        load_glue_split("rte", "validation", tmp_path)
    write_rte(tmp_path, 1)
    with pytest.raises(SoupError, match="split 'validation:select' .* has no rows"):
        load_glue_split("rte", "validation:select", tmp_path)


def test_missing_and_malformed_glue_folder(tmp_path):
    with pytest.raises(SoupError, match=r"GLUE folder .*: missing RTE/dev.tsv"):
        load_glue_split("rte", "validation", tmp_path)
    path = write_rte(tmp_path, 5)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [lines[3].rsplit("\t", 1)[0]] + lines[4:]) + "\n")
    with pytest.raises(SoupError, match=r"RTE/dev.tsv line 4: expected 4 tab-separated fields, found 3"):
        load_glue_split("rte", "validation", tmp_path)
    path.write_text("\n".join(lines[:2] + [lines[2].rsplit("\t", 1)[0] + "\tmaybe"] + lines[3:]) + "\n")
    with pytest.raises(SoupError, match=r"RTE/dev.tsv line 3: label 'maybe' is not one of entailment, not_entailment"):
        load_glue_split("rte", "validation", tmp_path)
    path.write_text("index\tpremise\thypothesis\tlabel\n")
    with pytest.raises(SoupError, match=r"RTE/dev.tsv line 1: header lacks column\(s\) sentence1, sentence2"):
        load_glue_split("rte", "validation", tmp_path)
    write_tsv(tmp_path / "SST-2" / "dev.tsv", ["sentence", "label"], [["good", "2"]])
    with pytest.raises(SoupError, match=r"SST-2/dev.tsv line 2: label '2' is not one of 0, 1"):
        load_glue_split("sst2", "validation", tmp_path)


def test_a_tsv_byte_that_is_not_utf8_is_one_message_naming_its_line(tmp_path):
    path = write_rte(tmp_path, 5)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines))  # a byte-order mark and Windows line ends are fine
    assert load_glue_split("rte", "validation", tmp_path).dataset["sentence1"][1] == lines[2].split(b"\t")[1].decode()
    path.write_bytes(b"\n".join(lines[:3] + [lines[3].replace(b"\t", b"\tcaf\xe9 ", 1)] + lines[4:]))
    with pytest.raises(SoupError, match=r"RTE/dev.tsv line 4: byte 0xe9 is not UTF-8 text"):
        load_glue_split("rte", "validation", tmp_path)
