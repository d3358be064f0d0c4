"""The pantry: one folder that collects the models of a sweep, with how each was trained and where it started.

Each entry is a ``save_pretrained`` folder (model and tokenizer) with an ``ingredient.json``: run name, kind
(``"final"`` or ``"checkpoint"``), step, epoch, the run's ``TrainingArguments``, its last eval metrics and the
fingerprint of its starting weights. Entries are written under ``.tmp-*`` and renamed into place (a taken name gets
a ``-2``, ``-3``, ... suffix), so readers only ever see complete entries and concurrent runs never collide; the
``.tmp-*`` of a writer that was killed is removed by the next one (:meth:`Pantry.remove_stale_temporaries`). A
checkpoint the Trainer has just saved joins by hard links to its files: no weight file is written twice.

A soup needs one starting point. The pantry can hold the sweep's *start head* (``start-head.safetensors``): the
first run's random head (``pin_head=True``) or a head fitted on the frozen encoder's features (``pin_head="probe"``,
see :mod:`hf_soups.probe`); every later run loads it.

Example:
    >>> pantry = Pantry("pantry")  # doctest: +SKIP
    >>> [entry.name for entry in pantry.entries()]  # doctest: +SKIP
    ['lr2e-05', 'lr2e-05.checkpoint-500', 'lr3e-05']
    >>> ingredients = pantry.ingredients(pantry.select("last:2"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel

from hf_soups.adapters import is_adapter
from hf_soups.atomic_folder import fitted_name, pid_alive
from hf_soups.ema import check_decay, ema_label
from hf_soups.errors import SoupError
from hf_soups.ingredient import WEIGHT_LAYOUTS
from hf_soups.ingredients import Ingredient, resolve_ingredients
from hf_soups.merge import merge_models
from hf_soups.probe import head_names, live_state, plain_model, read_start_head
from hf_soups.record import SoupRecord
from hf_soups.version import __version__

logger = logging.getLogger(__name__)

ENTRY_FILE = "ingredient.json"
HEAD_FILE = "start-head.safetensors"
# TrainingArguments that name places or accounts, not how a model was trained.
BOOKKEEPING_ARGS = frozenset({"output_dir", "logging_dir", "run_name", "hub_model_id", "hub_token", "push_to_hub"})
# Files of a Trainer checkpoint that belong to the optimizer and the Trainer, not to the model.
TRAINER_STATE_FILES = re.compile(r"^(optimizer|scheduler|scaler|rng_state|trainer_state|training_args)")
PinHead = bool | Literal["probe"]
# The keys of ingredient.json the pantry reads and their types (``None``: may be null; the optional keys may also be
# absent); ``start`` holds the fingerprint's three hashes.
ENTRY_TYPES: dict[str, tuple[type | None, ...]] = {
    "run_name": (str,),
    "kind": (str,),
    "step": (int,),
    "epoch": (int, float, None),
    "created": (int, float),
    "training_args": (dict,),
    "start": (dict,),
    "start_model": (str, None),
    "heldout": (dict, None),
}
OPTIONAL_KEYS = ("start_model", "heldout")
START_KEYS = ("weights", "body", "head")
_DAMAGED = "a damaged or hand-edited entry: restore the file or move the folder out of the pantry"
# Temporary entries and start heads: .tmp-HOST-PID-RANDOM[.safetensors] (earlier versions wrote .tmp-RANDOM).
_TEMPORARY = re.compile(r"\.tmp-(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?[0-9a-f]{32}(?:\.safetensors)?")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
STALE_AFTER = 24 * 3600  # seconds without a write after which a temporary's writer is taken to be gone


def fingerprint(model: PreTrainedModel, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, str]:
    """sha256 of the weights a model computes with (names, dtypes, shapes, bytes), whole and split into body and
    head. For a PEFT LoRA model these are the base weights with each ΔW = B·A·scaling merged in, not the factors,
    and the head's trained copy (by the plain model's names, see :func:`~hf_soups.probe.live_state`): at the start
    B = 0, so runs that draw different A (a sweep over seeds) start from the same function.

    Args:
        model: the model.
        state: its whole weights when training shards them (:func:`~hf_soups.gather.whole_state`), hashed instead
            of the model's own tensors, which are shards.

    Example:
        >>> fingerprint(model)["head"][:12]  # doctest: +SKIP
        '3f1c0e9a2b7d'
    """
    head = head_names(model, None if state is None else list(state))
    hashers = {part: hashlib.sha256() for part in ("weights", "body", "head")}
    for name, tensor in sorted((_effective_state(model) if state is None else state).items()):
        data = tensor.detach().to("cpu").contiguous()
        for part in ("weights", "head" if name in head else "body"):
            hashers[part].update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
            hashers[part].update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {part: hasher.hexdigest() for part, hasher in hashers.items()}


def _effective_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A model's :func:`~hf_soups.probe.live_state`; for a PEFT LoRA model, with each active ΔW added to the base
    weight it adapts."""
    state = live_state(model)
    if not hasattr(model, "peft_config"):
        return state
    from peft.tuners.lora import LoraLayer

    deltas = {
        f"{name}.weight": sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
        for name, module in plain_model(model).named_modules()
        if isinstance(module, LoraLayer)
    }
    with torch.no_grad():
        return {name: tensor + deltas[name] if name in deltas else tensor for name, tensor in state.items()}


@dataclass
class PantryEntry:
    """One pantry folder and its ``ingredient.json``."""

    path: Path
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def read(cls, folder: Path) -> PantryEntry:
        """Read and check an entry's ``ingredient.json`` (the keys the pantry reads, of their types).

        Raises:
            SoupError: the file cannot be read, is not UTF-8 JSON, not an object, or lacks a key or has one of the
                wrong type (a damaged or hand-edited entry), naming the file and the key.
        """
        path = folder / ENTRY_FILE
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SoupError(f"pantry entry {path}: cannot be read as JSON ({err}); {_DAMAGED}") from None
        if not isinstance(info, dict):
            raise SoupError(f"pantry entry {path}: is a JSON {type(info).__name__}, not an object; {_DAMAGED}")
        start = info.get("start")
        fields = [(key, info, kinds) for key, kinds in ENTRY_TYPES.items()]
        fields += [(key, start, (str,)) for key in START_KEYS] if isinstance(start, dict) else []
        for key, holder, kinds in fields:
            name = key if holder is info else f"start.{key}"
            if key not in holder and key not in OPTIONAL_KEYS:
                raise SoupError(f"pantry entry {path}: lacks '{name}'; {_DAMAGED}")
            value = holder.get(key)
            if not (value is None and None in kinds or type(value) in kinds):  # bool is no number here
                raise SoupError(
                    f"pantry entry {path}: '{name}' must be {_type_names(kinds)}, got {value!r:.60}; {_DAMAGED}"
                )
        return cls(folder, info)

    def hyperparameters(self) -> dict[str, Any]:
        """The run's TrainingArguments (bookkeeping ones left out), the epoch it had reached, and for an EMA its
        decay."""
        args = {k: v for k, v in self.info["training_args"].items() if k not in BOOKKEEPING_ARGS}
        return args | {"epoch": self.info["epoch"], "ema_decay": self.info.get("ema_decay")}


class Pantry:
    """A folder of ingredients shared by the runs of a sweep (see the module docstring).

    Args:
        path: the folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- writing

    def add(
        self,
        name: str,
        model: PreTrainedModel,
        tokenizer: Any,
        info: dict[str, Any],
        link_from: Path | None = None,
        state_dict: Mapping[str, torch.Tensor] | None = None,
    ) -> Path:
        """Add a model as a new entry named ``name`` (or ``name-2``, ... when taken).

        Args:
            name: the entry's name.
            model: the model, saved with ``save_pretrained`` unless ``link_from`` is given; for a PEFT model (its
                adapter) the config of the model it trains in is written too, which PEFT does not save.
            tokenizer: saved beside it (``None``: none).
            info: the entry's ``ingredient.json`` content.
            link_from: a folder the Trainer has just saved this model to (a ``checkpoint-*`` that
                :func:`holds_model`): its model, config and tokenizer files are hard-linked (copied across file
                systems) instead of written again.
            state_dict: the weights to write instead of the model's own, as ``Trainer.save_model`` passes them
                to ``save_pretrained``: the whole weights of a sharded model
                (:func:`~hf_soups.gather.whole_state`), or averaged ones.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self._temporary()
        if link_from is not None:
            tmp.mkdir()
            for file in sorted(link_from.iterdir()):
                if file.is_file() and not TRAINER_STATE_FILES.match(file.name):
                    _link_or_copy(file, tmp / file.name)
        else:
            model.save_pretrained(tmp, state_dict=None if state_dict is None else dict(state_dict))
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        if hasattr(model, "peft_config") and not (tmp / "config.json").is_file():
            base = plain_model(model)  # what the adapter was trained in (a bare base's task model, its labels)
            base.config.architectures = [type(base).__name__]  # as save_pretrained records it
            base.config.save_pretrained(tmp)
        info = {**info, "created": time.time(), "hf_soups_version": __version__}
        (tmp / ENTRY_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        base = fitted_name(name.replace(os.sep, "_"), len("-999"))  # a long run name fits the file system's limit
        for attempt in range(1, 1000):
            target = self.path / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                os.rename(tmp, target)  # fails when the target exists and is not empty
                return target
            except OSError:
                if not target.exists():
                    raise
        raise SoupError(f"pantry {self.path}: no free entry name for {base!r}")

    def pin_head(self, model: PreTrainedModel, fit: Callable[[], dict[str, torch.Tensor]] | None = None) -> str | None:
        """Load the pantry's start head into ``model`` (a PEFT model: into the head copy it trains), making it first
        when the pantry has none yet.

        The first writer wins, also between processes. Without ``fit`` the model's own (random) head becomes the
        start head; with ``fit`` (e.g. ``lambda: probe_head(model, batches)``) the head it returns does.

        Returns:
            How the start head was made (``"random"`` or ``"probe"``), or ``None`` for a model without a head.

        Raises:
            SoupError: the pantry's head does not fit the model (another model or label count started it).
        """
        names = head_names(model)
        if not names:
            return None
        state = live_state(model)
        pinned = self.start_head(state, names, type(model).__name__, fit)
        with torch.no_grad():
            for name in names:
                state[name].copy_(pinned[name])
        return self.head_mode()

    def start_head(
        self,
        state: Mapping[str, torch.Tensor],
        names: set[str],
        model_name: str,
        fit: Callable[[], dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The pantry's start head, written first when it has none (see :meth:`pin_head`), checked against a model.

        Args:
            state: the model's whole weights by the plain model's names (:func:`~hf_soups.probe.live_state`, or a
                sharded model's :func:`~hf_soups.gather.whole_state`).
            names: its head's names (:func:`~hf_soups.probe.head_names`).
            model_name: how errors name the model.
            fit: makes the head to write (default: the head in ``state``).

        Raises:
            SoupError: the pantry's head does not fit the model.
        """
        path = self.path / HEAD_FILE
        if not path.is_file():
            mode = "random" if fit is None else "probe"
            head = {n: state[n].detach().to("cpu").contiguous() for n in names} if fit is None else fit()
            self.path.mkdir(parents=True, exist_ok=True)
            tmp = self._temporary(".safetensors")
            save_file(head, tmp, metadata={"format": "pt", "start_head": mode})
            try:
                os.link(tmp, path)  # atomic create-if-absent
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        pinned, _ = read_start_head(path)
        for name in sorted(names | set(pinned)):
            if name not in pinned or name not in names or pinned[name].shape != state[name].shape:
                raise SoupError(
                    f"pantry {self.path}: pinned head tensor '{name}' in {HEAD_FILE} does not fit "
                    f"{model_name} (another model or label count started this pantry)"
                )
        return pinned

    def _temporary(self, suffix: str = "") -> Path:
        """A new temporary name in the pantry, ``.tmp-HOST-PID-RANDOM`` (HOST: 8 hex digits of this machine's
        name), once the temporaries of writers that are gone are removed (:meth:`remove_stale_temporaries`)."""
        self.remove_stale_temporaries()
        return self.path / f".tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex}{suffix}"

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the temporary entries and start heads that killed writers left (``Pantry.add`` interrupted by a
        SIGKILL, a lost node): those written on this machine by a process that has ended, and any untouched for
        :data:`STALE_AFTER` seconds (another machine's, or a name without its writer). Only names of the form this
        class writes are looked at; nothing else in the pantry is touched.

        Returns:
            What was removed.
        """
        removed = []
        for candidate in self.path.glob(".tmp-*"):
            match = _TEMPORARY.fullmatch(candidate.name)
            if match is None or candidate.is_symlink():
                continue
            mine_and_ended = match["host"] == _HOST and not pid_alive(int(match["pid"]))
            if mine_and_ended or time.time() - _last_touched(candidate) > STALE_AFTER:
                if candidate.is_dir():
                    shutil.rmtree(candidate, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):  # gone meanwhile, or not ours to delete after all
                        candidate.unlink()
                removed.append(candidate)
        return removed

    def head_mode(self) -> str | None:
        """How the pantry's start head was made: ``"random"``, ``"probe"``, or ``None`` when it has none."""
        if not (self.path / HEAD_FILE).exists():
            return None
        return read_start_head(self.path / HEAD_FILE)[1].get("start_head", "random")

    def start_model(self) -> tuple[str, Path | None]:
        """The weights every run started from: the pretrained model the entries record, and the start head file
        when the pantry pinned one (Model Stock's θ₀).

        Raises:
            SoupError: no entries, entries that record no start model or different ones.
        """
        models = {e.info.get("start_model") for e in self.entries()}
        if len(models) != 1 or None in models:
            raise SoupError(
                f"pantry {self.path}: its entries record {'no' if None in models or not models else 'different'} "
                "start models; give the base model explicitly (base=...)"
            )
        head = self.path / HEAD_FILE
        return models.pop(), head if head.is_file() else None

    # -- reading

    def entries(self, kind: str | None = None) -> list[PantryEntry]:
        """The complete entries (of one ``kind`` when given), in the order they were added."""
        if not self.path.is_dir():
            return []
        entries = [
            PantryEntry.read(folder)
            for folder in sorted(self.path.iterdir())
            if not folder.name.startswith(".") and (folder / ENTRY_FILE).is_file()
        ]
        entries.sort(key=lambda e: (e.info["created"], e.name))
        return [e for e in entries if kind is None or e.info["kind"] == kind]

    def select(self, which: str = "final", entries: list[PantryEntry] | None = None) -> list[PantryEntry]:
        """The entries a soup takes: ``"final"`` (each run's final model), ``"all"`` (every checkpoint along each
        run, and its final model where no checkpoint was saved at the same step), ``"last:K"`` (each run's last K
        of those), ``"ema:D"`` (each run's final EMA of decay D, ``SoupCallback(ema=...)``), or several joined by
        ``+`` (``"final+ema:0.999"``, in the pantry's order).

        Raises:
            SoupError: an unknown choice.
        """
        entries = self.entries() if entries is None else entries
        if "+" in which:
            chosen = {entry.path for part in which.split("+") for entry in self.select(part, entries)}
            return [entry for entry in entries if entry.path in chosen]  # in the pantry's order
        if which == "final":
            return [e for e in entries if e.info["kind"] == "final"]
        if which.startswith("ema:"):
            return self._emas(which, entries)
        match = re.fullmatch(r"all|last:([1-9]\d*)", which)
        if match is None:
            raise SoupError(
                f"pantry entries {which!r}: choose 'final', 'all', 'last:K' (K ≥ 1) or 'ema:DECAY', or join them "
                "with '+' (final+ema:0.999)"
            )
        runs: dict[str, list[PantryEntry]] = {}
        for entry in entries:
            if entry.info["kind"] == "ema":
                continue
            runs.setdefault(entry.info["run_name"], []).append(entry)
        chosen = []
        for run in runs.values():
            steps = {e.info["step"] for e in run if e.info["kind"] == "checkpoint"}
            trajectory = sorted(
                (e for e in run if e.info["kind"] == "checkpoint" or e.info["step"] not in steps),
                key=lambda e: e.info["step"],
            )
            chosen.extend(trajectory if match.group(1) is None else trajectory[-int(match.group(1)) :])
        return chosen

    def _emas(self, which: str, entries: list[PantryEntry]) -> list[PantryEntry]:
        """Each run's final EMA of the decay ``which`` names (``ema:0.999``).

        Raises:
            SoupError: a decay that is not a number in (0, 1), or one no entry was averaged with.
        """
        try:
            decay = check_decay(float(which.removeprefix("ema:")))
        except ValueError:
            decay = check_decay(which.removeprefix("ema:"))
        emas = [e for e in entries if e.info["kind"] == "ema" and e.info.get("ema_of") == "final"]
        chosen = [e for e in emas if e.info.get("ema_decay") == decay]
        if not chosen:
            kept = sorted({ema_label(e.info["ema_decay"]) for e in emas})
            raise SoupError(
                f"pantry {self.path}: no entry is an EMA of decay {decay:g} ({which!r}); "
                + (f"it holds {', '.join(kept)}" if kept else "train with SoupCallback(ema=(...)) to keep EMAs")
            )
        return chosen

    def run_averages(
        self, k: int, entries: list[PantryEntry] | None = None, progress: bool = False
    ) -> list[Ingredient]:
        """Each run's average of its last ``k`` checkpoints (LAWA / SWA-style), as one ingredient per run.

        The averages are merged once into ``<pantry>/.averages/<run>.last<k>`` (hidden: not entries themselves)
        and reused by later calls; each records the hyperparameters that differ between the runs.

        Raises:
            SoupError: as :meth:`ingredients`, or ``k`` < 1.

        Example:
            >>> greedy_soup(Pantry("pantry").run_averages(2), "rte", "soup")  # doctest: +SKIP
        """
        if k < 1:
            raise SoupError(f"pantry {self.path}: average the last k ≥ 1 checkpoints of each run, not {k}")
        chosen = self.select(f"last:{k}", entries)
        check_same_start(chosen)
        check_heldout(chosen)
        runs: dict[str, list[PantryEntry]] = {}
        for entry in chosen:
            runs.setdefault(entry.info["run_name"], []).append(entry)
        last = [group[-1] for group in runs.values()]
        differing = differing_hyperparameters(last) if len(last) > 1 else []
        folders = []
        for run, group in runs.items():
            folder = self.path / ".averages" / (fitted_name(run, len(f".last{k}")) + f".last{k}")
            made_of = [str(e.path) for e in group]
            if not folder.is_dir() or [i.spec for i in SoupRecord.load(folder).ingredients] != made_of:
                folder.parent.mkdir(parents=True, exist_ok=True)  # new, or the run's checkpoints changed since
                merge_models(made_of, folder, allow_single=True, progress=progress, overwrite=folder.is_dir())
            folders.append(folder)
        ingredients = resolve_ingredients(folders)
        head = self.head_mode()
        for ingredient, entry, group in zip(ingredients, last, runs.values(), strict=True):
            ingredient.hyperparameters = {k: entry.hyperparameters().get(k) for k in differing} | {
                "averaged_checkpoints": [e.info["step"] for e in group]
            }
            ingredient.start_head = head
            ingredient.start_model = start_model(entry)
        return ingredients

    def ingredients(self, entries: list[PantryEntry] | None = None) -> list[Ingredient]:
        """The entries (default: all of them) as ingredients, after checking they share one start; each records
        the hyperparameters that differ between them and the pantry's start head.

        Raises:
            SoupError: no entries, or two entries that started from different weights.
        """
        entries = self.entries() if entries is None else entries
        if not entries:
            raise SoupError(f"pantry {self.path}: no ingredients yet (train with SoupCallback first)")
        check_same_start(entries)
        check_heldout(entries)
        differing = differing_hyperparameters(entries)
        ingredients = resolve_ingredients([e.path for e in entries])
        head = self.head_mode()
        for ingredient, entry in zip(ingredients, entries, strict=True):
            ingredient.spec = str(entry.path)
            ingredient.hyperparameters = {k: entry.hyperparameters().get(k) for k in differing}
            ingredient.start_head = head
            ingredient.start_model = start_model(entry)
        return ingredients


def holds_model(folder: Path) -> bool:
    """Whether a folder (a Trainer's ``checkpoint-*``) holds a whole model's weights as ``from_pretrained`` reads
    them (or a PEFT adapter), not only a sharded checkpoint (FSDP's ``SHARDED_STATE_DICT``, DeepSpeed's
    ``global_step*``)."""
    return any((folder / name).is_file() for layout in WEIGHT_LAYOUTS for name in layout) or is_adapter(folder)


def _last_touched(path: Path) -> float:
    """The latest modification time of ``path`` and, for a folder, of what it holds (a file being written)."""
    try:
        children = list(path.iterdir()) if path.is_dir() else []
        return max(p.stat().st_mtime for p in [path, *children])
    except OSError:  # gone meanwhile: its writer finished
        return time.time()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _type_names(kinds: tuple[type | None, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", dict: "a JSON object", None: "null"}
    return " or ".join(names[kind] for kind in kinds)


def start_model(entry: PantryEntry) -> str | None:
    """The pretrained model an entry's run started from, as it records it (``model.name_or_path``): a Hub id, or a
    local folder by its absolute path; ``None`` when it records none."""
    name = entry.info.get("start_model")
    return str(Path(name).resolve()) if name and Path(name).is_dir() else name


def differing_hyperparameters(entries: Iterable[PantryEntry]) -> list[str]:
    """The hyperparameter names whose values are not the same in every entry, sorted."""
    params = [entry.hyperparameters() for entry in entries]
    keys = set().union(*params)
    return sorted(k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params}) > 1)


def check_same_start(entries: list[PantryEntry]) -> None:
    """Refuse entries that started from different weights (a soup averages fine-tunings of one start).

    Raises:
        SoupError: naming the two entries and, when only the heads differ, how to pin the head.
    """
    first = entries[0]
    for entry in entries[1:]:
        a, b = first.info["start"], entry.info["start"]
        if a["weights"] == b["weights"]:
            continue
        where = f"pantry entries '{first.name}' and '{entry.name}'"
        if a["body"] == b["body"]:
            raise SoupError(
                f"{where} start from different classifier heads (a new head is initialised at random from the seed "
                "in force when the model is created), so they make no soup. Pin the head: "
                "SoupCallback(pin_head=True) saves the first run's initial head in the pantry and loads it in every "
                "later run; retrain into a new pantry with it"
            )
        raise SoupError(f"{where} start from different pretrained weights; a soup needs one starting model")


def check_heldout(entries: list[PantryEntry], rule: dict[str, Any] | None = None) -> None:
    """Refuse entries trained under different held-out rules (the rows their training data left out, recorded by
    ``SoupCallback``), or, given ``rule``, under another rule than the one the soup is selected on, or beside
    held-out rows whose content (:func:`~hf_soups.evaluation.data.content_digest`) has changed since.

    Raises:
        SoupError: naming the entry and both rules (``None``: trained on the whole train split).
    """
    expected = entries[0].info.get("heldout") if rule is None else rule
    for entry in entries:
        found = entry.info.get("heldout")
        if found == expected:
            continue
        if found is not None and expected is not None and _without_content(found) == _without_content(expected):
            if "content" not in found:  # written before rules recorded the rows' content: checked by position only
                logger.warning(
                    "pantry entry '%s' records its held-out rows by position only (an older hf-soups): "
                    "rows reordered or relabelled since it trained would go unnoticed",
                    entry.name,
                )
                continue
            raise SoupError(
                f"pantry entry '{entry.name}' was trained leaving out held-out rows whose text or labels differ from "
                f"the rows the soup is selected on now ({_rule_text(expected)}; content digest "
                f"{str(found.get('content'))[:12]} then, {str(expected.get('content'))[:12]} now): the data changed "
                "since training (rows reordered, edited or relabelled); select on the data the runs were trained "
                "beside, or retrain"
            )
        raise SoupError(
            f"pantry entry '{entry.name}' was trained under the held-out rule {_rule_text(found)}, but the soup "
            f"is selected on {_rule_text(expected)}: a run must not train on the rows it is selected on, and one "
            "pantry holds runs of one rule; retrain it with the same held-out rows (SoupCallback(heldout=...), "
            "hf_soups.evaluation.hold_out) or select on another split"
        )


def _without_content(rule: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in rule.items() if key not in ("columns", "content")}


def _rule_text(rule: dict[str, Any] | None) -> str:
    if rule is None:
        return "none (it trained on the whole train split)"
    return (
        f"{rule.get('task') or 'dataset'} {rule['split']} (seed {rule['seed']}, fraction {rule['fraction']}, "
        f"{rule['rows']} rows, digest {rule['digest'][:12]})"
    )


__all__ = [
    "Pantry",
    "PantryEntry",
    "check_heldout",
    "check_same_start",
    "differing_hyperparameters",
    "fingerprint",
    "holds_model",
]
