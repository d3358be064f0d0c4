"""Greedy's host memory and the bytes its resume state writes (issue 28), in one process and in two.

``make`` saves N "fine-tunes" of one BERT classifier built from config whose weights are mostly a large word
embedding (vocab 64,000 × hidden 512, one encoder layer: 132 MB of fp32, cheap to score; the embedding is 97% of
it, so anything that holds a whole tensor costs about a model), a tokenizer over that vocabulary and a small
RTE-shaped GLUE folder (40 validation rows, 200 train rows: 20 of them are ``train:heldout``). ``run`` cooks them
with the ``hf-soups soup`` command (greedy, ``--greedy-rule ties``: the random rows score most runs alike, so most
are kept) and writes, for its process, the peak RSS (``ru_maxrss``), the RSS before cooking (after the imports)
and the bytes written to the greedy state folder (every file the state writes through
``hf_soups.recipes.greedy._atomic``). ``report`` prints them against one fp32 model.

Usage:
    python benchmarks/greedy_memory.py make /tmp/gm --count 8
    python benchmarks/greedy_memory.py run /tmp/gm one
    ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no benchmarks/greedy_memory.py run /tmp/gm two
    python benchmarks/greedy_memory.py report /tmp/gm one two
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make(folder: Path, count: int, vocab: int = 64_000) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = vocab - len(SPECIAL)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + [f"w{i}" for i in range(words)]) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=512,
        num_hidden_layers=1,
        num_attention_heads=8,
        intermediate_size=512,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "entailment", 1: "not_entailment"},
    )
    torch.manual_seed(0)
    base = BertForSequenceClassification(config)
    state = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    for i in range(count):
        generator = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for name, param in base.named_parameters():
                param.copy_(state[name] + 0.02 * torch.randn(param.shape, generator=generator))
        base.save_pretrained(folder / f"ing{i}")
        tokenizer.save_pretrained(folder / f"ing{i}")
    rng = random.Random(0)
    rte = folder / "glue" / "RTE"
    rte.mkdir(parents=True, exist_ok=True)
    for file, rows in (("dev.tsv", 40), ("train.tsv", 200)):
        lines = ["index\tsentence1\tsentence2\tlabel"] + [
            f"{r}\t{' '.join(f'w{rng.randrange(words)}' for _ in range(12))}\t"
            f"{' '.join(f'w{rng.randrange(words)}' for _ in range(8))}\t{rng.choice(['entailment', 'not_entailment'])}"
            for r in range(rows)
        ]
        (rte / file).write_text("\n".join(lines) + "\n")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run(folder: Path, name: str) -> None:
    import hf_soups.recipes.greedy as greedy
    from hf_soups.cli import main

    written = [0]
    atomic = greedy._atomic

    def counted(path, write, suffix=""):
        atomic(path, write, suffix)
        written[0] += Path(path).stat().st_size

    greedy._atomic = counted
    ingredients = sorted(str(p) for p in folder.glob("ing*"))
    start = rss_mb()
    code = main(
        [
            "soup",
            "--task",
            "rte",
            *ingredients,
            "--glue-dir",
            str(folder / "glue"),
            "--no-ensemble",
            "--greedy-rule",
            "ties",
            "-o",
            str(folder / f"soup-{name}"),
            "--overwrite",
        ]
    )
    rank = int(os.environ.get("RANK", "0"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "rank": rank,
        "code": code,
        "rss_start_MB": round(start),
        "peak_rss_MB": round(peak),
        "state_bytes": written[0],
    }
    (folder / f"{name}-rank{rank}.json").write_text(json.dumps(out))


def report(folder: Path, names: list[str]) -> None:
    from safetensors import safe_open

    with safe_open(folder / "ing0" / "model.safetensors", "pt") as f:
        model = sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys()) * 4 / 2**20
    kept = {}
    for name in names:
        soup = json.loads((folder / f"soup-{name}" / "soup.json").read_text())
        kept[name] = sum(i["kept"] for i in soup["ingredients"])
    print(f"one fp32 model: {model:.0f} MB")
    print(
        "| run | rank | kept | RSS before cooking MB | peak RSS MB | peak / fp32 model | (peak − before) / model "
        "| state bytes / model |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        for path in sorted(folder.glob(f"{name}-rank*.json")):
            r = json.loads(path.read_text())
            print(
                f"| {name} | {r['rank']} | {kept[name]} | {r['rss_start_MB']} | {r['peak_rss_MB']} | "
                f"{r['peak_rss_MB'] / model:.2f} | {(r['peak_rss_MB'] - r['rss_start_MB']) / model:.2f} | "
                f"{r['state_bytes'] / 2**20 / model:.2f} |"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["make", "run", "report"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("names", nargs="*", default=["one"])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=64_000, help="make: the vocabulary (64,000: a 132 MB model)")
    args = parser.parse_args()
    if args.command == "make":
        make(args.folder, args.count, args.vocab)
    elif args.command == "run":
        run(args.folder, args.names[0])
    else:
        report(args.folder, args.names)
