"""Cook a greedy soup of token classifiers judged by a Trainer's own evaluation loop (TrainerJudge.predict) and
write it: run with `python` or `accelerate launch`.

Usage: trainer_judge_processes.py FOLDER OUT (FOLDER holds the ingredients ing0, ing1, ing2)
"""

import sys
from pathlib import Path

from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_trainer_tasks import entity_f1, tagged  # noqa: E402

from hf_soups import greedy_soup  # noqa: E402
from hf_soups.recipes.trainer_judge import TrainerJudge  # noqa: E402

folder, out = Path(sys.argv[1]), sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder / "ing0")
args = TrainingArguments(
    str(folder / "args"), per_device_eval_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True
)
trainer = Trainer(
    AutoModelForTokenClassification.from_pretrained(folder / "ing0"),
    args,
    eval_dataset=tagged(tokenizer, 22, seed=2),
    data_collator=DataCollatorForTokenClassification(tokenizer),
    compute_metrics=entity_f1,
)
greedy_soup(
    [folder / f"ing{i}" for i in range(3)], judge=TrainerJudge(trainer, progress=False), output_dir=out, progress=False
)
