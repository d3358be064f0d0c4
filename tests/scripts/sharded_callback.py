"""SoupCallback's hooks driven as a Trainer drives them on a model FSDP shards, in each process of `accelerate launch`.

Usage: sharded_callback.py WORK_DIR

WORK_DIR holds ``base/`` (a tiny BertModel and its tokenizer) and ``glue/`` (RTE). Four sweeps, FSDP1 and FSDP2 each
with ``pin_head="probe"`` and ``pin_head=True``, train two seeds each: ``on_train_begin``, a step, ``on_save`` (a
sharded checkpoint folder: no model file), a step, ``on_save`` (seed 0: sharded again; seed 1: a folder holding the
whole model, as FULL_STATE_DICT writes it), ``on_train_end`` with ``cook_on_end``. FSDP1 runs under SoupTrainer (the
Trainer hands callbacks the model inside the wrapper), FSDP2 under a bare SoupCallback. Beside each run an unsharded
replica takes the same steps. The script writes, per sweep, under ``refs/<sweep>/``: the replica's state dict when
each entry is added (``<entry>.safetensors``), every process's start fingerprint and the replica's
(``starts.json``), and for the probe the head one process fits on the replica (``probe-head.safetensors``); and
``refs/refused.json``: what each process was told when FSDP1 ran under a bare callback, a PEFT model under FSDP2,
and a model under FSDP2 whose head does not fit the pantry's start head.
"""

import copy
import functools
import json
import sys
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.models.bert.modeling_bert import BertLayer

from hf_soups import SoupCallback, SoupError, SoupTrainer
from hf_soups.pantry import Pantry, fingerprint
from hf_soups.probe import probe_head

WORDS = ["the", "a", "cat", "dog", "w1", "w2", "w3", "w4"]


def wrap(model: BertForSequenceClassification, flavour: str) -> torch.nn.Module:
    """The model sharded the way accelerate shards it: each BertLayer its own unit, then the whole."""
    if flavour == "fsdp1":
        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={BertLayer})
        return FullyShardedDataParallel(
            model, auto_wrap_policy=policy, device_id=torch.device("cpu"), use_orig_params=True
        )
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    return fully_shard(model)


def train_data(tokenizer) -> datasets.Dataset:
    """18 rows (5 batches of 4: one process runs a forward more in the probe), labelled by whether a cat is named."""
    rows = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 4)) for i in range(18)]
    data = datasets.Dataset.from_dict({"sentence": rows, "label": [int("cat" in r.split()) for r in rows]})
    return data.map(lambda batch: tokenizer(batch["sentence"]), batched=True, remove_columns=["sentence"])


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def main(work: Path) -> None:
    # before anything makes a PartialState: sets up the gloo process group (each TrainingArguments resets
    # accelerate's state and makes a new PartialState of the same processes)
    main_process = Accelerator().is_main_process
    tokenizer = AutoTokenizer.from_pretrained(work / "base")
    collate = DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(train_data(tokenizer), batch_size=4, collate_fn=collate)
    batch = next(iter(loader))  # every process and the replica train on the same batch
    control = TrainerControl()
    for flavour in ("fsdp1", "fsdp2"):
        for pin in ("probe", True):
            sweep = f"{flavour}-{'probe' if pin == 'probe' else 'random'}"
            refs = work / "refs" / sweep
            refs.mkdir(parents=True, exist_ok=True)
            callback = SoupCallback(
                work / sweep / "pantry",
                checkpoints=True,
                pin_head=pin,
                cook_on_end=True,
                sweep_size=2,
                task="rte",
                glue_dir=work / "glue",
                select_split="validation:select",
                report_split="validation:report",
                batch_size=4,
                output_dir=work / sweep / "soup",
            )
            starts = {}
            for seed in (0, 1):
                name = f"seed{seed}"
                set_seed(seed)  # the new head is drawn under the run's seed
                model = BertForSequenceClassification.from_pretrained(work / "base", num_labels=2)
                replica = copy.deepcopy(model)
                if pin == "probe" and seed == 0 and main_process:  # what one process fits on the same data
                    save_file(probe_head(copy.deepcopy(model), loader), refs / "probe-head.safetensors")
                wrapped = wrap(model, flavour)
                args = TrainingArguments(
                    str(work / sweep / "runs" / name),
                    run_name=name,
                    seed=seed,
                    per_device_train_batch_size=4,
                    per_device_eval_batch_size=4,
                    use_cpu=True,
                    report_to="none",
                    save_strategy="steps",
                )
                if flavour == "fsdp1":
                    SoupTrainer(wrapped, args, soup_callback=callback)  # the callback gets the Trainer's wrapper
                state = TrainerState()
                state.is_world_process_zero = main_process
                hooked = wrapped.module if flavour == "fsdp1" else wrapped  # what the Trainer gives callbacks
                callback.on_train_begin(
                    args, state, control, model=hooked, train_dataloader=loader, processing_class=tokenizer
                )
                Pantry(callback.pantry.path).pin_head(replica)  # the unsharded start: the same pinned head
                starts[name] = {
                    "processes": gather_object([callback._start]),
                    "replica": fingerprint(replica),
                }
                optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.5)
                replica_optimizer = torch.optim.SGD(replica.parameters(), lr=0.5)
                for global_step in (1, 2):
                    step(wrapped, optimizer, batch)
                    step(replica, replica_optimizer, batch)
                    state.global_step, state.epoch = global_step, global_step / 2
                    folder = Path(args.output_dir) / f"checkpoint-{global_step}"
                    if main_process:  # what the Trainer saved before on_save
                        if seed == 1 and global_step == 2:
                            replica.save_pretrained(folder)  # FULL_STATE_DICT: the whole model
                        else:
                            (folder / "pytorch_model_fsdp_0").mkdir(parents=True)  # SHARDED_STATE_DICT: none
                        save_file(replica.state_dict(), refs / f"{name}.checkpoint-{global_step}.safetensors")
                    PartialState().wait_for_everyone()
                    callback.on_save(args, state, control, model=hooked, processing_class=tokenizer)
                if main_process:
                    save_file(replica.state_dict(), refs / f"{name}.safetensors")
                callback.on_train_end(
                    args, state, control, model=hooked, processing_class=tokenizer, optimizer=optimizer
                )
            if main_process:
                (refs / "starts.json").write_text(json.dumps(starts, indent=2))

    # refused on every process, none left waiting: FSDP1 under a bare callback, a PEFT model under FSDP2, and (found
    # by the main process alone) a pantry whose start head does not fit the model
    if main_process:  # three labels' head
        (work / "refused" / "head-pantry").mkdir(parents=True)
        save_file(
            {"classifier.weight": torch.zeros(3, 16), "classifier.bias": torch.zeros(3)},
            work / "refused" / "head-pantry" / "start-head.safetensors",
        )
    PartialState().wait_for_everyone()
    refused = {}
    for case in ("fsdp1-bare-callback", "fsdp2-peft", "fsdp2-head"):
        set_seed(0)
        model = BertForSequenceClassification.from_pretrained(work / "base", num_labels=2)
        if case == "fsdp2-peft":
            model = get_peft_model(model, LoraConfig(r=2, target_modules=["query"]))
        if case == "fsdp1-bare-callback":
            wrap(model, "fsdp1")  # the callback is given the model inside the wrapper
        else:
            fully_shard(model)
        args = TrainingArguments(str(work / "refused"), use_cpu=True, report_to="none")
        pantry = work / "refused" / ("head-pantry" if case == "fsdp2-head" else "pantry")
        try:
            SoupCallback(pantry, pin_head=True).on_train_begin(args, TrainerState(), control, model=model)
            message = None
        except SoupError as err:
            message = str(err)
        refused[case] = gather_object([message])
    if main_process:
        (work / "refs" / "refused.json").write_text(json.dumps({"processes": PartialState().num_processes, **refused}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
