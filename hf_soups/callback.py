"""Turn a ``transformers.Trainer`` sweep into a soup: :class:`SoupCallback`, :class:`SoupTrainer` and the pantry.

Every run of a sweep (one after another, or at once in separate processes) adds its final model, and optionally each
saved ``checkpoint-*``, to one *pantry* folder. Each entry records its run name, the run's ``TrainingArguments``, its
last eval metrics and a fingerprint of the weights training started from. Entries are written to a temporary folder
and renamed into place, so a crashed run leaves no half entry behind and concurrent runs never collide.

A soup needs one starting point: the callback refuses to cook entries whose starting weights differ. The random
classifier head depends on the seed in force when the model is created, so a sweep over seeds needs
``pin_head=True``: the first run saves its initial head in the pantry and every later run loads it.

Cooking runs a recipe (greedy by default) judged by a GLUE task (``task="rte"``) or by the Trainer's
``eval_dataset`` and ``compute_metrics`` (split into seeded selection and report halves), writes the soup with its
card and plots, and pushes it when asked. Under ``accelerate launch`` every process takes part in scoring and only
the main one writes. For a GLUE ``compute_metrics`` in your own script see :func:`hf_soups.evaluation.compute_metrics`.

Under sharded training (FSDP, FSDP2, DeepSpeed ZeRO-3) the entries, the start fingerprint and the pinned head are
made from the whole weights, gathered as ``Trainer.save_model`` gathers them (:mod:`hf_soups.gather`): every process
takes part, the main one writes. Under FSDP (1) the callback needs the Trainer's wrapper: use :class:`SoupTrainer`.

Example:
    >>> soup = SoupCallback("pantry", pin_head=True)  # doctest: +SKIP
    >>> for lr in (2e-5, 3e-5, 5e-5):  # doctest: +SKIP
    ...     args = TrainingArguments(f"runs/lr{lr}", learning_rate=lr, eval_strategy="epoch")
    ...     trainer = Trainer(model_fn(), args, train_dataset=train, eval_dataset=dev,
    ...                       compute_metrics=compute_metrics("rte"), callbacks=[soup])
    ...     trainer.train()
    >>> print(soup.make_soup(trainer).table)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, extract_model_from_parallel
from transformers import Trainer, TrainerCallback

from hf_soups.ema import WeightEMA
from hf_soups.errors import SoupError
from hf_soups.evaluation.data import (
    SplitRule,
    content_digest,
    heldout_record,
    input_keys,
    load_glue_split,
    trained_heldout_rows,
)
from hf_soups.gather import check_gatherable, load_whole, on_main, sharding, whole_state, wrapper_of
from hf_soups.ingredients import Ingredient
from hf_soups.options import CollectOptions, CookOptions, JudgeOptions, Options, PublishOptions
from hf_soups.pantry import Pantry, PantryEntry, check_heldout, fingerprint, holds_model
from hf_soups.probe import fit_head, head_names, output_layer, probe_head, shared_probe_features

logger = logging.getLogger(__name__)

# SoupCallback's keyword → the options object it takes (hf_soups.options: the command line's flags share them)
OPTION_GROUPS: dict[str, type[Options]] = {
    "collect": CollectOptions,
    "cooking": CookOptions,
    "judge": JudgeOptions,
    "publish": PublishOptions,
}

# ---------------------------------------------------------------------------------------------------- callback


class SoupCallback(TrainerCallback):
    """Collects every run of a sweep into a pantry and cooks a soup from it.

    Its options come in four groups, each a frozen options object of :mod:`hf_soups.options` (the command line's
    flags are made from the same declarations):

    - ``collect``: :class:`~hf_soups.options.CollectOptions`, what every run adds to the pantry (``checkpoints``,
      ``pin_head``, ``ema``);
    - ``cooking``: :class:`~hf_soups.options.CookOptions`, which soup and when (``recipe``, ``ensemble``,
      ``entries``, ``cook_on_end``, ``sweep_size``);
    - ``judge``: :class:`~hf_soups.options.JudgeOptions`, how soups are judged (a GLUE ``task`` with its splits,
      ``glue_dir`` and ``batch_size``; without a task the Trainer's ``eval_dataset``, with ``select_dataset``,
      ``heldout``, ``seed``, ``select_fraction``);
    - ``publish``: :class:`~hf_soups.options.PublishOptions`, where the soup goes (``output_dir``, ``push_to_hub``,
      ``hub_model_id``, ``hub_token``, ``hub_private_repo``, ``license``).

    Each field may also be given as a keyword of its own (``SoupCallback(pantry, pin_head=True, task="rte")``):
    it builds the same object, for a group not given as an object.

    Args:
        pantry: the folder shared by every run of the sweep.
        collect: ``checkpoints`` also adds each ``checkpoint-*`` the Trainer saves (``on_save``; when is the
            Trainer's ``save_strategy``), by hard links to its files (written whole where the checkpoint holds no
            whole model: a sharded one); cook them with ``entries="all"`` or ``"last:K"``. ``pin_head`` gives every
            run the same starting classifier head (``on_train_begin``): ``True`` saves the first run's initial
            (random) head in the pantry and later runs load it; ``"probe"`` first fits the head on the frozen
            model's features of the training set (:func:`hf_soups.probe.probe_head`: one process under
            ``accelerate launch``; under sharded training every process computes the features of its share), the
            start that makes runs soupable. ``ema`` keeps an EMA of every run's weights per decay.
        cooking: ``cook_on_end`` cooks at the end of a run (``on_train_end``) once the pantry holds ``sweep_size``
            final models (default: at the end of every run from the second on; the last run's soup is the
            sweep's). The main process prints how many runs the pantry holds until then, and the results table and
            the soup's folder (and Hub commit, when pushed) once it cooks. Before it cooks, the Trainer's optimizer
            state and gradients are freed and the trained model is moved to the CPU (back after), so the soup's
            scoring model has the device to itself (logged). ``recipe`` is a recipe of
            :data:`hf_soups.recipes.RECIPES`; ``ensemble`` adds the logit-ensemble baseline to the table.
        judge: with a GLUE ``task`` a soup is selected on ``train:heldout`` by default, a seeded
            ``heldout_fraction`` of the task's train split, and reported on the whole validation split: train the
            runs on ``train:rest`` (:func:`~hf_soups.evaluation.load_glue_split`). Each run's training rows are
            compared with the held-out rows by content (:func:`glue_heldout`), every entry records the held-out
            rule (with a digest of the rows' text and labels), and cooking refuses runs trained under another one
            or beside rows changed since. ``batch_size`` defaults to the Trainer's eval batch size. Without a task,
            the soup is selected on ``select_dataset`` (rows your training data leaves out, in the eval dataset's
            format) and reported on the whole ``eval_dataset``; ``heldout`` is the rule
            :func:`~hf_soups.evaluation.hold_out` returns with them, recorded by every entry and checked when
            cooking. ``select_dataset`` must hold the rows its rule names, and no run may train on a row that
            reads like one of them (same ``input_ids``). Without ``select_dataset``, ``eval_dataset`` is split into
            seeded selection and report parts (``seed``, ``select_fraction``).
        publish: ``output_dir`` is the soup folder (default: ``soup`` beside the pantry, ``<pantry>/../soup``: the
            sweep's, not inside the last run's output folder). Each Hub setting defaults to the Trainer's, and the
            soup's repo to the Trainer's ``hub_model_id`` (or output folder name) + ``-soup``; ``license`` is the
            licence the pushed card states (default: the base model's, as its card or config states it).
        **options: the groups' fields as keywords of their own.

    Raises:
        SoupError: an unknown option, a field given both alone and in its group's object, a bad value (naming the
            field), or a ``select_dataset`` that does not hold the rows of its ``heldout`` rule.

    Example:
        >>> from hf_soups.options import CollectOptions, CookOptions, JudgeOptions
        >>> callback = SoupCallback(  # doctest: +SKIP
        ...     "pantry",
        ...     collect=CollectOptions(pin_head=True),
        ...     cooking=CookOptions(cook_on_end=True, sweep_size=4),
        ...     judge=JudgeOptions(task="rte"),
        ... )
        >>> for lr, seed in grid:  # doctest: +SKIP
        ...     Trainer(make_model(), TrainingArguments(f"runs/{lr}-{seed}", learning_rate=lr, seed=seed),
        ...             train_dataset=train, processing_class=tokenizer, callbacks=[callback]).train()
    """

    def __init__(
        self,
        pantry: str | Path,
        *,
        collect: CollectOptions | None = None,
        cooking: CookOptions | None = None,
        judge: JudgeOptions | None = None,
        publish: PublishOptions | None = None,
        **options: Any,
    ) -> None:
        groups = grouped_options({"collect": collect, "cooking": cooking, "judge": judge, "publish": publish}, options)
        self.collect: CollectOptions = groups["collect"]
        self.cooking: CookOptions = groups["cooking"]
        self.judge: JudgeOptions = groups["judge"]
        self.publish: PublishOptions = groups["publish"]
        if self.judge.select_dataset is not None and self.judge.heldout is not None:
            check_select_dataset(self.judge.select_dataset, self.judge.heldout)
        self.pantry = Pantry(pantry)
        self.trainer: Trainer | None = None  # set by SoupTrainer: lets cook_on_end judge with the Trainer
        self.last_report = None
        self._start: dict[str, str] = {}
        self._saved_step: int | None = None
        self._start_model: str | None = None
        self._heldout: dict[str, Any] | None = None
        self._emas: list[WeightEMA] = []

    # -- collecting

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if self.cooking.cook_on_end and self.judge.task is None and self.trainer is None:
            raise SoupError(
                "SoupCallback(cook_on_end=True) needs a judge: pass task= (a GLUE task), use SoupTrainer, or call "
                "callback.make_soup(trainer) after the sweep"
            )
        target = self._target(model)
        check_gatherable(target, "SoupCallback")  # before training, on every process
        if (
            self.collect.ema and (setting := sharding(target)) is not None
        ):  # each averaged parameter whole on one process
            raise SoupError(
                f"SoupCallback(ema=...) keeps whole parameters on one process; under {setting} they are "
                "sharded: train without it (DDP, or one process), or drop ema="
            )
        # every run's training data is checked by content, as the dataloader holds it (columns the model does not
        # read already dropped): it must hold no row the soup is selected on
        train, tokenizer = getattr(train_dataloader, "dataset", None), kwargs.get("processing_class")
        self._heldout = self.judge.heldout
        if self.judge.heldout is None and self.judge.task is not None:
            self._heldout = glue_heldout(self.judge, train, tokenizer)
        elif self.judge.task is None and self.judge.select_dataset is not None:
            check_left_out(train, self.judge.select_dataset)
        if sharding(target) is not None:  # every process takes part in each gather; the main one does the rest
            if self.collect.pin_head:
                probe = self.collect.pin_head == "probe"
                self._pin_sharded_head(target, _unsharded(train_dataloader, args) if probe else None)
            whole = whole_state(target)
            self._start = on_main(lambda: fingerprint(model, whole))
        else:
            if self.collect.pin_head == "probe":
                if PartialState().is_main_process:  # one process fits the probe; the others load what it saved
                    self.pantry.pin_head(model, fit=lambda: probe_head(model, _unsharded(train_dataloader, args)))
                PartialState().wait_for_everyone()
                self.pantry.pin_head(model)
            elif self.collect.pin_head:
                self.pantry.pin_head(model)
            self._start = fingerprint(model)
        self._start_model = str(model.name_or_path) if getattr(model, "name_or_path", None) else None
        self._emas = []
        if self.collect.ema and state.is_world_process_zero:  # the process that writes the entries keeps them
            self._emas = [WeightEMA(model, decay) for decay in self.collect.ema]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        for ema in self._emas:
            ema.update(model)

    def on_save(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.collect.checkpoints:
            self._saved_step = state.global_step
            name = f"{run_name(args)}.checkpoint-{state.global_step}"
            folder = checkpoint_folder(args, state)
            self._add(name, "checkpoint", args, state, model, processing_class, link_from=folder)
            if state.is_world_process_zero:
                self._add_emas(name, "checkpoint", args, state, model, processing_class)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        # a checkpoint of this very step holds this very model: its files are linked
        same = self._saved_step == state.global_step and not args.load_best_model_at_end
        self._add(
            run_name(args),
            "final",
            args,
            state,
            model,
            processing_class,
            link_from=checkpoint_folder(args, state) if same else None,
        )
        if state.is_world_process_zero:
            self._add_emas(run_name(args), "final", args, state, model, processing_class)
        PartialState().wait_for_everyone()
        if self.cooking.cook_on_end:
            finals, needed = len(self._shared_entries("final")), self.cooking.sweep_size or 2
            if finals >= needed:
                with training_state_freed(model, kwargs.get("optimizer")):
                    self.last_report = self.make_soup(self.trainer, args=args)
                if self.last_report is not None and self.last_report.output_dir is not None:  # the main process
                    print(f"\n{self.last_report.table}\nsoup written to {self.last_report.output_dir}")
            elif PartialState().is_main_process:  # a one-run-per-process sweep says how far it is
                print(
                    f"pantry {self.pantry.path} holds {finals} of {needed} runs: the soup is cooked at the end of "
                    "the last one"
                )

    def _add(
        self, name: str, kind: str, args, state, model, tokenizer, link_from: Path | None = None, **extra: Any
    ) -> None:
        """Add the model as the entry ``name``, written by the main process: by links to the files of ``link_from``
        (a checkpoint of this very model) when it holds the whole model (:func:`~hf_soups.pantry.holds_model`), else
        saved. When training shards the model every process must call this: the whole weights are gathered as
        ``Trainer.save_model`` gathers them, every process taking part."""
        target = self._target(model)
        sharded = sharding(target) is not None
        if not (sharded or state.is_world_process_zero):
            return

        def holding() -> Path | None:
            return link_from if link_from is not None and holds_model(link_from) else None

        link = on_main(holding) if sharded else holding()  # under sharding, the same choice on every process
        whole = whole_state(target) if sharded and link is None else None
        if state.is_world_process_zero:
            info = {
                "run_name": run_name(args),
                "kind": kind,
                "step": state.global_step,
                "epoch": state.epoch,
                "training_args": args.to_dict(),
                "metrics": last_eval_metrics(state.log_history),
                "start": self._start,
                "start_model": self._start_model,
                "heldout": self._heldout,
                **extra,
            }
            self.pantry.add(name, model, tokenizer, info, link_from=link, state_dict=whole)

    def _target(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the model's whole weights are gathered from: the Trainer's FSDP1 wrapper of ``model`` when the
        callback knows the Trainer (SoupTrainer; the Trainer gives callbacks the model inside the wrapper), else
        ``model`` itself."""
        return wrapper_of(model, getattr(self.trainer, "model_wrapped", None))

    def _pin_sharded_head(self, target: torch.nn.Module, batches: Any) -> None:
        """``pin_head`` for a sharded model: the head is read from its gathered weights and loaded back into every
        process's shard; a probe computes its features on every process (``batches``: all the training data, for a
        probe) and is fitted by the main one, which writes the start head."""
        plain = extract_model_from_parallel(target)
        whole = whole_state(target)
        names = on_main(lambda: head_names(plain, whole))
        if not names:
            return
        features, layer_name = None, ""
        if batches is not None and on_main(lambda: self.pantry.head_mode() is None):
            layer_name, layer = output_layer(plain, names)
            features = shared_probe_features(target, layer, batches)  # the main process gets them all
        fit = None if features is None else partial(fit_head, {n: whole[n] for n in names}, layer_name, *features)
        pinned = on_main(lambda: self.pantry.start_head(whole, names, type(plain).__name__, fit))
        load_whole(target, pinned)

    def _add_emas(self, name: str, of: str, args, state, model, tokenizer) -> None:
        """Add each EMA of the run beside the entry ``name`` (a ``final`` or ``checkpoint`` one)."""
        for ema in self._emas:
            with ema.applied(model):
                self._add(
                    f"{name}.ema-{ema.decay:g}",
                    "ema",
                    args,
                    state,
                    model,
                    tokenizer,
                    ema_decay=ema.decay,
                    ema_of=of,
                    ema_steps=ema.steps,
                )

    def _shared_entries(self, kind: str | None = None) -> list[PantryEntry]:
        """The pantry's entries as the main process sees them, so every process cooks the same ingredients."""
        listed = [self.pantry.entries(kind) if PartialState().is_main_process else None]
        return broadcast_object_list(listed)[0]

    # -- cooking

    def make_soup(
        self,
        trainer: Trainer | None = None,
        recipe: str | None = None,
        output_dir: str | Path | None = None,
        task: str | None = None,
        push_to_hub: bool | None = None,
        args: Any = None,
        entries: str | None = None,
        **options: Any,
    ):
        """Make a soup of the pantry's final models (and checkpoints, with ``checkpoints=True``): choose the entries,
        check they left the selection rows out, set up a kitchen judged by the Trainer or a GLUE task, run the
        recipe and write the soup folder (:func:`~hf_soups.soups.run_in_kitchen`), and push it.

        Every process of a distributed run must call this; only the main one writes and pushes.

        Args:
            trainer: judges with its ``eval_dataset`` and ``compute_metrics`` (unless a GLUE ``task`` is set) and
                gives the defaults of ``output_dir`` and the Hub settings.
            recipe: overrides the callback's recipe.
            output_dir: the soup folder (default: the callback's, else ``soup`` beside the pantry).
            task: a GLUE task to judge with (overrides the callback's).
            push_to_hub: overrides the callback's and the Trainer's setting.
            args: ``TrainingArguments`` for the defaults when no trainer is given.
            entries: which pantry entries (see :meth:`~hf_soups.pantry.Pantry.select`): ``"final"``, ``"all"``
                (every checkpoint along each run), ``"last:K"``, or ``"average:K"`` (each run's last K checkpoints
                averaged into one ingredient, then the recipe across runs); default: the callback's
                ``cooking.entries``, else ``"all"`` with ``collect.checkpoints``, else ``"final"``.
            **options: the GLUE judge's options (``glue_dir``, ``select_split``, ``report_split``,
                ``heldout_fraction``, ``batch_size``: :class:`~hf_soups.options.JudgeOptions`), overriding the
                callback's, and the recipe's own (:attr:`hf_soups.recipes.Recipe.options`: ``greedy_rule``,
                ``min_gain``, ``resume`` for greedy; ``bags`` for bagged; ``epochs``, ... for learned).

        Returns:
            A :class:`~hf_soups.recipes.report.SoupReport`: ``.table``, ``.record``, ``.output_dir``, ``.model``;
            ``None`` (with a logged warning) while the pantry holds a single ingredient, so a script that runs one
            training per process can call ``make_soup`` after every run.

        Raises:
            SoupError: no judge, an unknown option, an empty pantry, ingredients that started from different
                weights or were trained on the rows the soup is selected on.

        Example:
            >>> report = callback.make_soup(trainer, recipe="bagged", bags=20, glue_dir="glue_data")  # doctest: +SKIP
            >>> print(report.table)  # doctest: +SKIP
        """
        from hf_soups.soups import run_in_kitchen

        recipe = recipe or self.cooking.recipe
        judge, recipe_options = self._split_options(recipe, task, options)
        if judge.task is None and trainer is None:
            raise SoupError("make_soup: give the Trainer (its eval_dataset and compute_metrics judge) or a GLUE task=")
        args = trainer.args if trainer is not None else args
        which = entries or self.cooking.entries or ("all" if self.collect.checkpoints else "final")
        listed = self._shared_entries()
        chosen = self._choose_entries(which, listed)
        if chosen is None:
            return None
        self._check_heldout(chosen, judge)
        kitchen = self._kitchen(self._ingredients(which, chosen, listed), judge, trainer, args)
        if recipe == "stock" and recipe_options.get("base") is None:
            recipe_options["base"], recipe_options["start_head"] = self.pantry.start_model()
        folder = Path(output_dir or self.publish.output_dir or self.pantry.path.parent / "soup")
        repo_id = self._repo_id(push_to_hub, args, folder)
        report = run_in_kitchen(
            kitchen,
            recipe,
            folder,
            ensemble=self.cooking.ensemble,
            overwrite=True,
            repo_id=repo_id,
            options=recipe_options,
        )
        self._push(folder, repo_id, args)
        return report

    def _split_options(self, recipe: str, task: str | None, options: dict[str, Any]) -> tuple[JudgeOptions, dict]:
        """:meth:`make_soup`'s judge (the callback's, with its ``task`` and the GLUE judge's options of ``options``)
        and the recipe's own options (the rest of ``options``).

        Raises:
            SoupError: an unknown recipe, or an option neither the judge nor the recipe takes.
        """
        from hf_soups.recipes import RECIPES

        if recipe not in RECIPES:
            raise SoupError(f"make_soup: unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        judge_names = [name for name in self.judge.kitchen_options() if name != "task"]
        unknown = sorted(set(options) - set(judge_names) - set(RECIPES[recipe].options))
        if unknown:
            raise SoupError(
                f"make_soup: unknown option {unknown[0]!r}; the judge takes {', '.join(judge_names)} and recipe "
                f"{recipe!r} takes {', '.join(RECIPES[recipe].options) or 'no options'}"
            )
        overrides = {name: options[name] for name in judge_names if name in options}
        judge = dataclasses.replace(self.judge, task=task or self.judge.task, **overrides)
        return judge, {name: value for name, value in options.items() if name not in overrides}

    def _choose_entries(self, which: str, listed: list[PantryEntry]) -> list[PantryEntry] | None:
        """The entries ``which`` names (``average:K``: each run's last K); ``None`` (logged) while they make one
        ingredient."""
        k = _averaged(which)
        chosen = self.pantry.select(which if k is None else f"last:{k}", listed)
        if len(chosen if k is None else {e.info["run_name"] for e in chosen}) == 1:
            # e.g. the first run of a one-run-per-process sweep: not an error
            logger.warning(
                "pantry %s holds one ingredient (%s) so far: a soup needs at least two, not cooking yet",
                self.pantry.path,
                chosen[0].name,
            )
            return None
        return chosen

    def _check_heldout(self, chosen: list[PantryEntry], judge: JudgeOptions) -> None:
        """Refuse entries trained under another held-out rule than the one ``judge`` selects on, or beside
        held-out rows changed since (:func:`~hf_soups.pantry.check_heldout`)."""
        heldout = glue_heldout(judge) if judge.task is not None else judge.heldout
        if heldout is not None or (judge.task is None and judge.select_dataset is not None):
            check_heldout(chosen, heldout)

    def _ingredients(self, which: str, chosen: list[PantryEntry], listed: list[PantryEntry]) -> list[Ingredient]:
        """The chosen entries as ingredients; for ``average:K`` each run's average, written by the main process
        and read by every other."""
        k = _averaged(which)
        if k is None:
            return self.pantry.ingredients(chosen)
        if PartialState().is_main_process:
            self.pantry.run_averages(k, listed)
        PartialState().wait_for_everyone()
        return self.pantry.run_averages(k, listed)

    def _kitchen(self, ingredients: list[Ingredient], judge: JudgeOptions, trainer: Trainer | None, args: Any):
        """The kitchen: judged by the GLUE task (batch size: the Trainer's eval batch size by default), else by the
        Trainer (:class:`~hf_soups.recipes.trainer_judge.TrainerJudge`)."""
        from hf_soups.recipes import make_kitchen
        from hf_soups.recipes.trainer_judge import TrainerJudge

        if judge.task is None:
            scorer = TrainerJudge(trainer, judge.seed, judge.select_fraction, judge.select_dataset)  # type: ignore[arg-type]
            return make_kitchen(ingredients, judge=scorer)
        if judge.batch_size is None:
            judge = dataclasses.replace(judge, batch_size=getattr(args, "per_device_eval_batch_size", None))
        accelerator = trainer.accelerator if trainer is not None else None
        return make_kitchen(ingredients, accelerator=accelerator, **judge.kitchen_options())

    def _repo_id(self, push_to_hub: bool | None, args: Any, folder: Path) -> str | None:
        """The Hub repo the soup is pushed to, ``None`` when it is not pushed: ``publish.hub_model_id``, else the
        Trainer's ``hub_model_id`` (or output folder name) + ``-soup``."""
        if not _first(push_to_hub, self.publish.push_to_hub, getattr(args, "push_to_hub", None), False):
            return None
        stem = getattr(args, "hub_model_id", None) or (Path(args.output_dir) if args is not None else folder).name
        return self.publish.hub_model_id or f"{stem}-soup"

    def _push(self, folder: Path, repo_id: str | None, args: Any) -> None:
        """Push the soup folder to ``repo_id`` from the main process (nothing when ``None``); every process waits."""
        from hf_soups.hub import push_soup

        if repo_id is not None and PartialState().is_main_process:
            url = push_soup(
                folder,
                repo_id,
                token=self.publish.hub_token or getattr(args, "hub_token", None),
                private=bool(_first(self.publish.hub_private_repo, getattr(args, "hub_private_repo", None), False)),
                license=self.publish.license,
            )
            print(f"pushed {folder}: {url}")
        PartialState().wait_for_everyone()

    def cook(self, *args: Any, **kwargs: Any):
        """Deprecated name of :meth:`make_soup`."""
        warnings.warn(
            "SoupCallback.cook is deprecated and will be removed: call SoupCallback.make_soup (the same soup)",
            FutureWarning,
            stacklevel=2,
        )
        return self.make_soup(*args, **kwargs)


def glue_heldout(judge: JudgeOptions, train_dataset: Any = None, tokenizer: Any = None) -> dict[str, Any] | None:
    """The held-out rule of a GLUE judge (``judge.task``) that selects on a part of the train split (``None`` when
    it selects on validation), after checking that the training data leaves those rows out.

    The training rows are compared by content (:func:`~hf_soups.evaluation.data.trained_heldout_rows`: their
    ``input_ids`` against the held-out rows tokenized by ``tokenizer``), so neither their order, their labels nor
    the columns the Trainer drops matter; without a tokenizer or ``input_ids`` only their number is checked.

    Raises:
        SoupError: the training data holds a held-out row, or more rows than the rest of train.
    """
    if not judge.select_split.startswith("train:"):
        return None
    task, rule = judge.task, SplitRule(heldout_fraction=judge.heldout_fraction)
    split = load_glue_split(task, judge.select_split, judge.glue_dir, rule)  # type: ignore[arg-type]
    if train_dataset is not None:
        held = 0
        if _tokenized(train_dataset, "the Trainer's training data") and tokenizer is not None:
            held = trained_heldout_rows(train_dataset, split, tokenizer, judge.glue_dir)
        elif tokenizer is None:
            logger.warning(
                "SoupCallback(task=%r): the Trainer has no processing_class (tokenizer), so its training "
                "rows are not compared with the held-out rows, only counted",
                task,
            )
        if held or len(train_dataset) > split.rule["base_rows"] - split.rule["rows"]:
            raise SoupError(
                f"SoupCallback(task={task!r}) selects the soup on {split.name} ({split.rule['rows']} rows held out of "
                f"train's {split.rule['base_rows']}), but the Trainer's train_dataset ({len(train_dataset)} rows) "
                f"holds {f'{held} of them' if held else 'some of them'}: train on load_glue_split(task, "
                "'train:rest', ...) with the same heldout_fraction, or select on validation:select (select_split=)"
            )
    return heldout_record(split)


def check_left_out(train_dataset: Any, select_dataset: Any) -> None:
    """Refuse training data that holds a row of ``select_dataset``, compared by content
    (:func:`~hf_soups.evaluation.data.input_keys`: ``input_ids`` less padding).

    Raises:
        SoupError: naming how many training rows are selection rows.
    """
    if not (_tokenized(train_dataset, "the Trainer's training data") and _tokenized(select_dataset, "select_dataset")):
        return
    selection = set(input_keys(select_dataset))
    held = sum(key in selection for key in input_keys(train_dataset))
    if held:
        raise SoupError(
            f"SoupCallback(select_dataset=...) selects the soup on {len(select_dataset)} rows, but {held} rows of the "
            f"Trainer's train_dataset ({len(train_dataset)} rows) read the same (input_ids): train on rows it leaves "
            "out (hf_soups.evaluation.hold_out returns both parts)"
        )


def check_select_dataset(select_dataset: Any, heldout: dict[str, Any]) -> None:
    """Refuse a ``select_dataset`` that does not hold the rows the held-out rule ``heldout`` names, by content.

    Raises:
        SoupError: the rule records no content, or the rows' content differs.
    """
    if "content" not in heldout or "columns" not in heldout:
        raise SoupError(
            "SoupCallback(heldout=...) records no content digest of the held-out rows: make the rule with "
            "hf_soups.evaluation.hold_out (or heldout_rule)"
        )
    if not isinstance(select_dataset, datasets.Dataset):
        raise SoupError(
            f"SoupCallback(select_dataset=...) with heldout=... must be a datasets.Dataset to compare with the rule, "
            f"not {type(select_dataset).__name__}"
        )
    if content_digest(select_dataset, heldout["columns"]) != heldout["content"]:
        raise SoupError(
            f"SoupCallback(select_dataset=...) does not hold the rows of its held-out rule (content digest "
            f"{heldout['content'][:12]} of {heldout['rows']} rows): pass the held-out rows hold_out returned with "
            "that rule, unchanged"
        )


def _tokenized(dataset: Any, name: str) -> bool:
    """Whether ``dataset`` holds rows to compare by content (a ``datasets.Dataset`` with ``input_ids``); warns if
    not."""
    if isinstance(dataset, datasets.Dataset) and "input_ids" in dataset.column_names:
        return True
    logger.warning(
        "SoupCallback: %s (%s) is not a datasets.Dataset with input_ids, so its rows are not compared "
        "by content with the rows the soup is selected on",
        name,
        type(dataset).__name__,
    )
    return False


def grouped_options(groups: dict[str, Options | None], options: dict[str, Any]) -> dict[str, Any]:
    """The callback's option objects (:data:`OPTION_GROUPS`): each group as given, else built from the keywords of
    its fields in ``options`` (``pin_head=True`` is ``collect=CollectOptions(pin_head=True)``); the one place the
    keywords become objects.

    Raises:
        SoupError: an unknown keyword, a keyword of a group also given as an object, an object of the wrong type,
            or a bad value (naming the field).
    """
    owner = {f.name: group for group, kind in OPTION_GROUPS.items() for f in dataclasses.fields(kind)}
    for name in options:
        if name not in owner:
            kinds = [kind.__name__ for kind in OPTION_GROUPS.values()]
            raise SoupError(
                f"SoupCallback: unknown option {name!r} (not a field of {', '.join(kinds[:-1])} or {kinds[-1]})"
            )
    built = {}
    for group, kind in OPTION_GROUPS.items():
        fields, given = {k: v for k, v in options.items() if owner[k] == group}, groups[group]
        if given is not None and not isinstance(given, kind):
            raise SoupError(f"SoupCallback({group}=...): must be a {kind.__name__}, not {type(given).__name__}")
        if given is not None and fields:
            raise SoupError(
                f"SoupCallback: {next(iter(fields))}= is a field of {group}={kind.__name__}(...), given too: set it "
                "there"
            )
        built[group] = given if given is not None else kind(**fields)
    return built


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _averaged(which: str) -> int | None:
    """K of ``entries="average:K"``, ``None`` for other entries."""
    if not which.startswith("average:"):
        return None
    text = which.removeprefix("average:")
    if not text.isdigit() or int(text) < 1:
        raise SoupError(f"entries={which!r}: K must be a whole number ≥ 1")
    return int(text)


def checkpoint_folder(args: Any, state: Any) -> Path:
    """The folder the Trainer saves its checkpoint of the current step to."""
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


@contextlib.contextmanager
def training_state_freed(model: torch.nn.Module | None, optimizer: Any = None) -> Iterator[None]:
    """For cooking at the end of training (``cook_on_end``): the optimizer's state and the gradients are freed and
    the trained model is moved to the CPU (unless sharded), leaving its device to the soup's scoring model; the
    model goes back to its device after the block (the optimizer starts from an empty state if training goes on).
    Logs what it freed."""
    params = list(model.parameters()) if model is not None else []
    device = params[0].device if params else torch.device("cpu")
    tensors = [t for s in (optimizer.state.values() if optimizer is not None else []) for t in s.values()]
    freed = sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
    freed += sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    if optimizer is not None:
        optimizer.state.clear()
    if model is not None:
        model.zero_grad(set_to_none=True)
    move = device.type != "cpu" and sharding(model) is None  # type: ignore[arg-type]
    if move:
        model.to("cpu")  # type: ignore[union-attr]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    logger.info(
        "cook_on_end: freed the optimizer state and gradients (%.1f MiB)%s before cooking",
        freed / 2**20,
        f" and moved the trained model from {device} to the CPU" if move else "",
    )
    try:
        yield
    finally:
        if move:
            model.to(device)  # type: ignore[union-attr]


def _unsharded(loader: Any, args: Any) -> torch.utils.data.DataLoader:
    """Every training example once, in order, in the Trainer's batches (not one process's shard)."""
    if loader is None:
        raise SoupError("SoupCallback(pin_head='probe') needs the Trainer's train dataloader (a train_dataset)")
    return torch.utils.data.DataLoader(
        loader.dataset, batch_size=args.per_device_train_batch_size, collate_fn=loader.collate_fn
    )


def run_name(args: Any) -> str:
    """The run's name: ``args.run_name``, else its output folder's name."""
    return args.run_name or Path(args.output_dir).name


def last_eval_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The ``eval_*`` numbers of the last evaluation in a Trainer's log history, speed metrics left out (empty if
    none ran)."""
    evals = [entry for entry in log_history if any(key.startswith("eval_") for key in entry)]
    if not evals:
        return {}
    return {
        k: v
        for k, v in evals[-1].items()
        if k.startswith("eval_") and isinstance(v, int | float) and not k.endswith(("_runtime", "_per_second"))
    }


# ------------------------------------------------------------------------------------------------- SoupTrainer


class SoupTrainer(Trainer):
    """A :class:`transformers.Trainer` with a :class:`SoupCallback` installed and :meth:`soup` to cook.

    Training is exactly the Trainer's; the callback adds the run's model to the pantry at the end.

    Args:
        *args, **kwargs: the Trainer's.
        pantry: the sweep's shared pantry folder (default: ``<output_dir>/pantry``).
        soup_callback: a configured :class:`SoupCallback` to install instead (its pantry wins).

    Example:
        >>> soup = SoupCallback("pantry", pin_head=True)  # doctest: +SKIP
        >>> for lr in (2e-5, 5e-5):  # doctest: +SKIP
        ...     trainer = SoupTrainer(model_fn(), TrainingArguments(f"runs/{lr}", learning_rate=lr),
        ...                           train_dataset=train, eval_dataset=dev, compute_metrics=compute_metrics("rte"),
        ...                           soup_callback=soup)
        ...     trainer.train()
        >>> print(trainer.soup().table)  # doctest: +SKIP
    """

    def __init__(
        self, *args: Any, pantry: str | Path | None = None, soup_callback: SoupCallback | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.soup_callback = soup_callback or SoupCallback(pantry or Path(self.args.output_dir) / "pantry")
        self.soup_callback.trainer = self
        self.add_callback(self.soup_callback)

    def soup(self, **kwargs: Any):
        """Make a soup of the pantry judged by this Trainer (see :meth:`SoupCallback.make_soup`)."""
        return self.soup_callback.make_soup(self, **kwargs)


__all__ = ["SoupCallback", "SoupTrainer"]
