"""Score a saved model on a GLUE folder and save the gathered result: run with `python` or `accelerate launch`.

Usage: eval_processes.py MODEL_DIR GLUE_DIR TASK SPLIT BATCH_SIZE OUT.npz
"""

import sys

import numpy as np
from accelerate import Accelerator
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_soups.evaluation import GlueScorer

model_dir, glue_dir, task, split, batch_size, out = sys.argv[1:]
accelerator = Accelerator()
model = AutoModelForSequenceClassification.from_pretrained(model_dir)
scorer = GlueScorer(task, AutoTokenizer.from_pretrained(model_dir), split, glue_dir, int(batch_size), accelerator)
result = scorer.score(model, return_predictions=True)
if accelerator.is_main_process:
    np.savez(
        out,
        processes=accelerator.num_processes,
        main=result.main,
        num_examples=result.num_examples,
        predictions=result.predictions,
        logits=result.logits,
    )
