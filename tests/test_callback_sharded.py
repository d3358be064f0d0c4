"""SoupCallback under sharded training: FSDP1 and FSDP2 in two CPU processes (gloo), the callback's hooks driven as
a Trainer drives them (``tests/scripts/sharded_callback.py``), against an unsharded replica of every run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import VOCAB, accelerate_launch, tiny_bert_config, write_rte
from safetensors.torch import load_file
from transformers import BertModel, BertTokenizer

from hf_soups import SoupCallback
from hf_soups.pantry import HEAD_FILE, Pantry
from hf_soups.record import SoupRecord

SCRIPT = Path(__file__).parent / "scripts" / "sharded_callback.py"
SWEEPS = ["fsdp1-probe", "fsdp1-random", "fsdp2-probe", "fsdp2-random"]
ENTRIES = [f"seed{s}{suffix}" for s in (0, 1) for suffix in (".checkpoint-1", ".checkpoint-2", "")]
TIMEOUT = 540  # seconds: a hang fails the test instead of blocking


def run_script(work: Path) -> None:
    """Run the script in two processes under ``accelerate launch``; kill the whole group when it hangs."""
    launch, env = accelerate_launch(2)
    process = subprocess.Popen(
        [*launch, str(SCRIPT), str(work)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"the two processes hung for {TIMEOUT} s:\n{out[-3000:]}")
    assert process.returncode == 0, out[-5000:]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The two-process run, once for every test of this module."""
    work = tmp_path_factory.mktemp("sharded")
    (work / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(vocab=str(work / "vocab.txt")).save_pretrained(work / "base")
    torch.manual_seed(0)
    BertModel(tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(
        work / "base"
    )
    write_rte(work / "glue", 32, file="dev.tsv")  # 16 rows to select on, 16 to report on: even over 2 × 4
    run_script(work)
    return work


@pytest.mark.slow
def test_two_processes_ran_and_what_cannot_be_gathered_is_refused_on_both(work):
    refused = json.loads((work / "refs" / "refused.json").read_text())
    assert refused["processes"] == 2
    for case, words in [
        ("fsdp1-bare-callback", "FSDP (FullyShardedDataParallel)"),
        ("fsdp2-peft", "PEFT"),
        ("fsdp2-head", "does not fit"),  # found by the main process, raised by both
    ]:
        assert len(refused[case]) == 2, case
        assert all(message is not None and words in message for message in refused[case]), refused[case]
    assert not (work / "refused" / "pantry").exists()  # refused before anything was written


@pytest.mark.slow
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_entry_holds_the_unsharded_models_weights(work, sweep):
    pantry = Pantry(work / sweep / "pantry")
    assert sorted(e.name for e in pantry.entries()) == sorted(ENTRIES)
    for entry in pantry.entries():
        written = load_file(entry.path / "model.safetensors")
        expected = load_file(work / "refs" / sweep / f"{entry.name}.safetensors")
        assert sorted(written) == sorted(expected), entry.name
        for name, tensor in expected.items():
            assert torch.equal(written[name], tensor), f"{entry.name}: {name}"
    # a checkpoint folder holding the whole model is linked; one holding only FSDP shards is gathered and written
    runs = work / sweep / "runs"
    for name, folder in [("seed1.checkpoint-2", "seed1/checkpoint-2"), ("seed1", "seed1/checkpoint-2")]:
        assert (pantry.path / name / "model.safetensors").stat().st_ino == (
            runs / folder / "model.safetensors"
        ).stat().st_ino
    assert not (runs / "seed0" / "checkpoint-2" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sweep", SWEEPS)
def test_the_start_is_the_unsharded_start_on_both_processes(work, sweep):
    starts = json.loads((work / "refs" / sweep / "starts.json").read_text())
    for run in starts.values():
        assert run["processes"] == [run["replica"], run["replica"]]
    assert starts["seed0"]["replica"] == starts["seed1"]["replica"]  # the pinned head: one start for both seeds
    recorded = {e.info["start"]["weights"] for e in Pantry(work / sweep / "pantry").entries()}
    assert recorded == {starts["seed0"]["replica"]["weights"]}
    if sweep.endswith("probe"):  # the features of both processes, fitted once: the head one process fits
        head = load_file(work / sweep / "pantry" / HEAD_FILE)
        one = load_file(work / "refs" / sweep / "probe-head.safetensors")
        assert sorted(head) == sorted(one) and all(torch.equal(head[n], one[n]) for n in one)
        assert Pantry(work / sweep / "pantry").head_mode() == "probe"


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ["fsdp1-probe", "fsdp2-random"])
def test_the_soup_is_the_one_one_process_cooks(work, sweep, tmp_path):
    two = work / sweep / "soup"  # cooked in both processes by cook_on_end at the end of the second run
    one = SoupCallback(
        work / sweep / "pantry",
        checkpoints=True,
        task="rte",
        glue_dir=work / "glue",
        select_split="validation:select",
        report_split="validation:report",
        batch_size=4,
    ).make_soup(output_dir=tmp_path / "soup")
    a, b = one.record, SoupRecord.load(two)
    assert [(Path(i.spec).name, i.kept, i.weight) for i in a.ingredients] == [
        (Path(i.spec).name, i.kept, i.weight) for i in b.ingredients
    ]
    assert len(a.ingredients) == 4 and a.results == b.results
    x, y = load_file(tmp_path / "soup" / "model.safetensors"), load_file(two / "model.safetensors")
    assert sorted(x) == sorted(y) and all(torch.equal(t, y[name]) for name, t in x.items())
