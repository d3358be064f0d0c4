"""The greedy soup (Wortsman et al. 2022, Recipe 1): add ingredients best first, keep each one only if the soup's
selection score rises (``greedy_rule="strict"``, the authors' code, the default) or does not drop (``"ties"``, the
paper's ≥ as printed), by more than ``min_gain``.

Each ingredient is read at most twice: once in the tasting pass (scored alone, and added to the uniform soup on the
way) and once in the greedy pass, where the candidate soup (the running mean with the candidate added) is written
straight into the scoring model's parameters, on its device (see :mod:`hf_soups.recipes.kitchen`): no whole model
moves between host and device for a candidate. Memory is the fp32 running mean beside the model being scored.
After every step a state folder (``<output>.greedy-state``) records the members and the trajectory, not the
weights: an interrupted run continues with ``resume=True``, rebuilds the members' mean from their files with the
same arithmetic (bit for bit; the members are read once more) and ends with the same members and bit-identical
weights. The state writes the tastings once and a small ``state.json`` a step, not a model.

Example:
    >>> from hf_soups import greedy_soup
    >>> report = greedy_soup(["runs/a", "runs/b", "runs/c"], "rte", "soup", glue_dir="glue_data")  # doctest: +SKIP
    >>> print(report.table)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_soups.errors import SoupError
from hf_soups.evaluation import EvalResult
from hf_soups.hashing import file_sha256
from hf_soups.options import CookOptions, GreedyOptions, ResumeOptions
from hf_soups.recipes.judge import SPLITS
from hf_soups.recipes.kitchen import Kitchen, ModelScores
from hf_soups.recipes.report import SoupReport, is_main_process, soup_report
from hf_soups.recipes.selection import greedy_order, joins, selection_rule

STATE_FILE = "state.json"


def cook_greedy(
    kitchen: Kitchen,
    ensemble: bool = CookOptions.ensemble,
    greedy_rule: str = GreedyOptions.greedy_rule,
    min_gain: float = GreedyOptions.min_gain,
    resume: bool = ResumeOptions.resume,
    state_dir: str | Path | None = None,
) -> SoupReport:
    """Run the greedy recipe in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see :func:`hf_soups.greedy_soup`).

    Args:
        kitchen: the ingredients, the judge and the scoring model.
        ensemble: also score the logit-ensemble baselines (every ingredient's, and the greedy ensemble's under the
            same rule).
        greedy_rule / min_gain: when a candidate joins (see :func:`~hf_soups.recipes.selection.joins`).
        resume: continue from the state in ``state_dir``.
        state_dir: where the state is saved after every step (``None``: nowhere); the report lists it in
            ``scratch``, so it is removed once the soup folder is written.

    Raises:
        SoupError: fewer than two ingredients, a bad rule, a state to resume that does not fit this run.
    """
    if len(kitchen.ingredients) < 2:
        raise SoupError("greedy soup: needs at least two ingredients")
    rule = selection_rule(greedy_rule, min_gain)
    state_dir = Path(state_dir) if state_dir is not None else None
    state = GreedyState.load(state_dir, kitchen, rule) if resume and state_dir is not None else None
    if state is None:
        if state_dir is not None and is_main_process():
            (state_dir / STATE_FILE).unlink(missing_ok=True)  # a fresh run never resumes into an older state
        tastings, uniform = kitchen.tastings()
        state = GreedyState(tastings=tastings, uniform=uniform, order=greedy_order(tastings), rule=rule)
        state.save(state_dir, kitchen)
    mean = kitchen.new_mean()
    for index in state.members:  # resumed: the members' mean, added in the order greedy added them (bit for bit)
        mean.add(kitchen.ingredients[index])
    steps = tqdm(state.order, desc="greedy soup", initial=state.step, disable=not kitchen.progress)
    for index in state.order[state.step :]:
        ingredient, alone = kitchen.ingredients[index], state.tastings[index].select.main
        if not state.members:
            mean.add(ingredient)
            kept, score = True, alone
        else:
            candidate = mean.candidate(ingredient, kitchen.parameters())
            score = kitchen.judge.score(kitchen.model, "select").main
            kept = joins(score, state.score, **rule)
            if kept:
                mean.accept(candidate)
        if kept:
            state.members.append(index)
            state.score = score
        state.trajectory.append(
            {
                "spec": ingredient.spec,
                "ingredient_score": alone,
                "score": score,
                "kept": kept,
                "soup_score": state.score,
            }
        )
        state.step += 1
        state.save(state_dir, kitchen)
        steps.update()
    steps.close()
    soup = mean.soup()  # the members, in the order they joined
    report = soup_report(
        kitchen,
        "greedy",
        soup,
        state.tastings,
        uniform=state.uniform,
        ensemble=ensemble,
        rule=rule,
        trajectory=state.trajectory,
        options=rule,
    )
    report.scratch = [state_dir] if state_dir is not None else []
    return report


class GreedyState:
    """Where a greedy run stands: the tastings (the uniform soup's last), the order, the members so far and the
    trajectory (the members' mean is rebuilt from them). ``run`` names this run's files, so no file of another run
    is ever taken for its own."""

    def __init__(
        self,
        tastings: list[ModelScores],
        uniform: ModelScores,
        order: list[int],
        rule: dict[str, Any],
        run: str | None = None,
    ) -> None:
        self.tastings = tastings
        self.uniform = uniform
        self.order = order
        self.rule = rule
        self.run = run or secrets.token_hex(8)
        self.step = 0
        self.members: list[int] = []
        self.score = -np.inf
        self.trajectory: list[dict[str, Any]] = []
        self.hashes: dict[str, str] = {}

    def save(self, folder: Path | None, kitchen: Kitchen) -> None:
        """Write the state (main process only); ``state.json`` is written last, naming its files with their sha256."""
        if folder is None or not is_main_process():
            return
        folder.mkdir(parents=True, exist_ok=True)
        files = {"arrays": f"tastings-{self.run}.npz"}
        tastings = [*self.tastings, self.uniform]
        if files["arrays"] not in self.hashes:
            _atomic(folder / files["arrays"], lambda p: np.savez(p, **_arrays(tastings)), suffix=".npz")
            self.hashes = {files["arrays"]: file_sha256(folder / files["arrays"])}
        data = {
            "run": self.run,
            "ingredients": [{"spec": i.spec, "sha256": dict(i.sha256)} for i in kitchen.ingredients],
            "splits": kitchen.judge.split_names,
            "task": kitchen.judge.task,
            "files": files,
            "sha256": {name: self.hashes[name] for name in files.values()},
            "rule": self.rule,
            "order": self.order,
            "step": self.step,
            "members": self.members,
            "score": self.score,
            "trajectory": self.trajectory,
            "tastings": [{"name": t.name, **{s: getattr(t, s).to_dict() for s in SPLITS}} for t in tastings],
        }
        _atomic(folder / STATE_FILE, lambda p: Path(p).write_text(json.dumps(data)))
        for old in folder.glob("tastings*.npz"):
            if old.name not in files.values():
                old.unlink()

    @classmethod
    def load(cls, folder: Path, kitchen: Kitchen, rule: dict[str, Any]) -> GreedyState | None:
        """The saved state, after checking all of it against this run; ``None`` if there is none.

        Raises:
            SoupError: the state was made with other ingredients, weights or splits, or it is damaged (a file
                missing, changed or not of this state, a field of the wrong kind).
        """
        if not (folder / STATE_FILE).is_file():
            return None
        try:
            return cls._load(folder, kitchen, rule)
        except SoupError:
            raise
        except Exception as err:  # noqa: BLE001 (a hand-broken or half-copied state: any of JSON, numpy, safetensors may object)
            raise SoupError(
                f"--resume: the state in {folder} is damaged ({type(err).__name__}: {err}); remove it to start afresh"
            ) from None

    @classmethod
    def _load(cls, folder: Path, kitchen: Kitchen, rule: dict[str, Any]) -> GreedyState:
        data = json.loads((folder / STATE_FILE).read_text())
        saved = [entry["spec"] for entry in data["ingredients"]]
        if saved != [i.spec for i in kitchen.ingredients]:
            raise SoupError(f"--resume: the state in {folder} is for ingredients {saved}, not the ones given")
        for entry, ingredient in zip(data["ingredients"], kitchen.ingredients, strict=True):
            if entry["sha256"] != _file_hashes(ingredient, kitchen):
                raise SoupError(f"--resume: {ingredient.label} has changed since the state in {folder} was saved")
        if data["splits"] != kitchen.judge.split_names or data["task"] != kitchen.judge.task:
            raise SoupError(f"--resume: the state in {folder} was made on {data['task']} {data['splits']}")
        if data.get("rule") != rule:
            raise SoupError(
                f"--resume: the state in {folder} was made with the greedy rule {data.get('rule')}, not {rule}"
            )
        for name in data["files"].values():
            if Path(name).name != name or file_sha256(folder / name) != data["sha256"][name]:
                raise SoupError(f"--resume: {folder / name} is not the file the state in {folder} saved (sha256)")
        count, step, members = len(kitchen.ingredients), data["step"], data["members"]
        if sorted(data["order"]) != list(range(count)) or not 0 <= step <= count or len(data["trajectory"]) != step:
            raise ValueError("order, step and trajectory do not fit together")
        if not set(members) <= set(data["order"][:step]) or len(data["tastings"]) != count + 1:
            raise ValueError("members or tastings do not fit the order")
        arrays = np.load(folder / data["files"]["arrays"])
        tastings = [
            ModelScores(t["name"], *(_result(t[s], arrays, i, s) for s in SPLITS))
            for i, t in enumerate(data["tastings"])
        ]
        state = cls(tastings[:-1], tastings[-1], data["order"], rule, run=data["run"])
        state.step, state.members, state.score = step, members, float(data["score"])
        state.trajectory = data["trajectory"]
        state.hashes = {data["files"]["arrays"]: data["sha256"][data["files"]["arrays"]]}
        return state


def _file_hashes(ingredient: Any, kitchen: Kitchen) -> dict[str, str]:
    """sha256 of the ingredient's weight files: known ones from the Hub or the hash cache, the others hashed now."""
    for file in ingredient.weight_files:
        if file.name not in ingredient.sha256:
            known = kitchen.hash_cache.get(file)
            if known is None:
                known = file_sha256(file)
            ingredient.sha256[file.name] = known
    return dict(ingredient.sha256)


def _arrays(tastings: list[ModelScores]) -> dict[str, np.ndarray]:
    arrays = {}
    for i, tasting in enumerate(tastings):
        for split in SPLITS:
            result = getattr(tasting, split)
            for kind in ("predictions", "logits", "labels"):
                arrays[f"{i}.{split}.{kind}"] = getattr(result, kind)
    return arrays


def _result(data: dict[str, Any], arrays: Any, index: int, split: str) -> EvalResult:
    result = EvalResult(
        task=data["task"],
        split=data["split"],
        metrics=data["metrics"],
        main_metric=data["main_metric"],
        num_examples=data["num_examples"],
        split_rule=data["split_rule"],
    )
    for kind in ("predictions", "logits", "labels"):
        setattr(result, kind, arrays[f"{index}.{split}.{kind}"])
    if (
        not isinstance(result.metrics.get(result.main_metric), float | int)
        or len(result.labels) != result.num_examples
    ):
        raise ValueError(f"tasting {index} ({split}) does not fit its arrays")
    return result


def _atomic(path: Path, write: Any, suffix: str = "") -> None:
    """Write through a temporary file renamed into place, so a kill never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    write(str(tmp))
    os.replace(tmp, path)
