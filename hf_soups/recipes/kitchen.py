"""What every recipe shares: validated ingredients, one model to score weights in, the tasting pass, the results.

A :class:`Kitchen` holds one model built from the first ingredient's config, once, on the judge's device and in its
scoring precision (a bf16 model on a GPU with bf16; see :func:`~hf_soups.recipes.judge.scoring_target`), without
initialising its weights: every tensor is set from an ingredient or a soup before anything is scored. Scoring a set
of weights means copying them into that model's parameters where it is; the model never moves. The fp32 running
means the recipes combine weights in live beside it on the device when they fit (:meth:`Kitchen.new_mean`),
else on the host, so forming a candidate soup moves no whole model between host and device: each ingredient read
crosses to the device once. The *tasting* pass reads every ingredient once, scores it on the selection and report
splits, and adds it to the uniform soup on the way.

Memory: the scoring model and one fp32 mean on the device (or the model there and the mean on the host); on the
host, the tensors being read and, where the model is not fp32 beside the mean, the ingredient being tried (kept to
add it to the mean without reading it a third time). Under ``accelerate launch`` every process holds its own
model and mean, on its own device: host memory per process does not grow with the number of processes.

Example:
    >>> judge = GlueJudge("rte", tokenizer, glue_dir="glue")  # doctest: +SKIP
    >>> kitchen = Kitchen(["runs/a", "runs/b", "runs/c"], judge)  # doctest: +SKIP
    >>> tastings, uniform = kitchen.tastings()  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers.initialization import no_init_weights
from transformers.modeling_utils import local_torch_dtype

from hf_soups.errors import SoupError
from hf_soups.evaluation import EvalResult
from hf_soups.evaluation.models import is_text_to_text
from hf_soups.hashing import HashCache
from hf_soups.ingredients import (
    CheckpointChoice,
    Ingredient,
    MergePlan,
    check_distinct,
    resolve_ingredients,
    validate_ingredients,
)
from hf_soups.mean import RunningMean, SoupWeights
from hf_soups.recipes.judge import SPLITS, Judge, scoring_target
from hf_soups.record import SoupResult
from hf_soups.stats import format_gain, paired_bootstrap

MEAN_SHARE = 0.5  # the fp32 mean goes on a GPU when it takes at most this share of the memory free there


@dataclass
class ModelScores:
    """One model's scores: an ingredient's, or a soup's (``name`` is the ingredient spec or the recipe)."""

    name: str
    select: EvalResult
    report: EvalResult
    members: list[str] | None = None  # an ensemble's members (ingredient specs)

    def scores(self) -> dict[str, dict[str, float]]:
        return {"select": self.select.metrics, "report": self.report.metrics}


class Kitchen:
    """Ingredients, a judge and one model whose parameters take whatever weights are to be scored.

    Args:
        ingredients: specs or resolved ingredients (see :func:`~hf_soups.ingredients.resolve_ingredients`).
        judge: scores models on the selection and report splits.
        checkpoints: which ``checkpoint-*`` of Trainer output folders to take.
        token: Hub token.
        progress: progress bars (drawn by the main process only: under ``accelerate launch`` every process cooks).
        plan: the ingredients' :func:`~hf_soups.ingredients.validate_ingredients` plan, when already made.

    Attributes:
        model: the scoring model, on ``device``, its float weights in ``precision.dtype``.
        device / precision: where and how the judge scores (:func:`~hf_soups.recipes.judge.scoring_target`).
        mean_device: where :meth:`new_mean` keeps a running mean.
    """

    def __init__(
        self,
        ingredients: Sequence[str | Path | Ingredient],
        judge: Judge,
        checkpoints: CheckpointChoice | None = None,
        token: str | bool | None = None,
        progress: bool = True,
        plan: MergePlan | None = None,
    ) -> None:
        self.ingredients = resolve_ingredients(ingredients, checkpoints=checkpoints, token=token)
        check_distinct(self.ingredients)
        self.plan = plan or validate_ingredients(self.ingredients)
        self.judge = judge
        self.progress = progress and PartialState().is_main_process
        self.hash_cache = HashCache()
        config, model_class = model_config(self.ingredients[0])
        self.text_to_text = is_text_to_text(model_class, config)
        self.device, self.precision = scoring_target(judge, self.text_to_text)
        self.model = build_model(config, model_class, self.device, self.precision.dtype)
        self._check_model_coverage()
        state = self.model.state_dict(keep_vars=True)
        self._params = {name: state[name].data for name in self.plan.shapes}
        self.mean_device = mean_device(self.device, self.plan)
        self._tasted: tuple[list[ModelScores], ModelScores] | None = None

    def _check_model_coverage(self) -> None:
        state = self.model.state_dict(keep_vars=True)
        missing = sorted(set(self.plan.shapes) - set(state))
        if missing:
            raise SoupError(
                f"{self.ingredients[0].label}: tensor '{missing[0]}' is not a parameter of {type(self.model).__name__}"
            )
        wrong = next((n for n, shape in self.plan.shapes.items() if tuple(state[n].shape) != shape), None)
        if wrong is not None:
            raise SoupError(
                f"{self.ingredients[0].label}: tensor '{wrong}' has shape {list(self.plan.shapes[wrong])}, "
                f"its config.json builds {list(state[wrong].shape)}"
            )
        loaded = {state[name].data_ptr() for name in self.plan.shapes}
        untied = sorted(name for name in set(state) - set(self.plan.shapes) if state[name].data_ptr() not in loaded)
        if untied:
            raise SoupError(
                f"{self.ingredients[0].label}: the checkpoints have no tensor '{untied[0]}' "
                f"that {type(self.model).__name__} needs"
            )

    def parameters(self) -> dict[str, torch.Tensor]:
        """The model's tensors the soup sets, by name, where the model is (write weights into them to score them)."""
        return self._params

    def new_mean(self, copies: int = 1) -> RunningMean:
        """An empty fp32 running mean, beside the model when it fits: on :attr:`mean_device`, or, for a recipe that
        will hold up to ``copies`` such means at once (bagged greedy's :meth:`~hf_soups.mean.RunningMean.copy`),
        where that many fit (see :func:`mean_device`)."""
        device = self.mean_device if copies == 1 else mean_device(self.device, self.plan, copies)
        return RunningMean(self.plan, self.hash_cache, device=device)

    def load(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy ``(name, tensor)`` into the model, where it is."""
        with torch.no_grad():
            for name, tensor in tensors:
                self._params[name].copy_(tensor)

    def score(self, name: str, predictions: bool = True) -> ModelScores:
        """Score the weights now in the model on both splits."""
        select, report = (self.judge.score(self.model, split, return_predictions=predictions) for split in SPLITS)
        return ModelScores(name, select, report)

    def taste_ingredients(self, uniform: bool = True) -> tuple[list[ModelScores], SoupWeights | None]:
        """A tasting pass: read each ingredient once, score it on both splits and (optionally) add it to the uniform
        soup. Each call reads and scores every ingredient again; recipes share one pass through :meth:`tastings`.

        Returns:
            The tastings in ingredient order, and the uniform soup (``None`` unless ``uniform``).
        """
        mean = self.new_mean() if uniform else None
        tastings = []
        for ingredient in tqdm(self.ingredients, desc="tasting ingredients", disable=not self.progress):
            if mean is not None:
                mean.add(ingredient, into=self._params)
            else:
                self.load(ingredient.tensors(self.hash_cache))
            tastings.append(self.score(ingredient.spec))
        return tastings, None if mean is None else mean.soup()

    def tastings(self) -> tuple[list[ModelScores], ModelScores]:
        """Every ingredient's scores and the uniform soup's, from one :meth:`taste_ingredients` pass per kitchen:
        recipes cooked in the same kitchen (greedy, bagged, learned, stock) share them instead of reading and scoring
        every ingredient again. The uniform soup's weights are not kept (one model of memory less).

        Example:
            >>> tastings, uniform = kitchen.tastings()  # doctest: +SKIP
            >>> uniform.report.main  # doctest: +SKIP
            0.684
        """
        if self._tasted is None:
            tastings, soup = self.taste_ingredients()
            self._tasted = tastings, self.score_soup(soup, "uniform")
        return self._tasted

    def taste_all(self, uniform: bool = True) -> tuple[list[ModelScores], SoupWeights | None]:
        """Deprecated name of :meth:`taste_ingredients`."""
        _renamed("Kitchen.taste_all", "Kitchen.taste_ingredients (a tasting pass)")
        return self.taste_ingredients(uniform)

    def tasted(self) -> tuple[list[ModelScores], ModelScores]:
        """Deprecated name of :meth:`tastings`."""
        _renamed("Kitchen.tasted", "Kitchen.tastings (the pass recipes share)")
        return self.tastings()

    def score_soup(self, soup: SoupWeights, name: str) -> ModelScores:
        """Load a soup's weights into the model and score it."""
        self.load(soup.tensors.items())
        return self.score(name)

    def ensemble(self, tastings: Sequence[ModelScores]) -> ModelScores:
        """The logit-ensemble baseline of the given ingredients (N× the inference cost; not a soup)."""
        select, report = (self.judge.ensemble([getattr(t, split) for t in tastings]) for split in SPLITS)
        return ModelScores("ensemble", select, report)


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed: call {new}", FutureWarning, stacklevel=3)


def model_config(ingredient: Ingredient) -> tuple[transformers.PretrainedConfig, type[transformers.PreTrainedModel]]:
    """The ingredient's config and the transformers class its ``architectures`` names.

    Raises:
        SoupError: a ``model_type`` or architecture transformers does not know.
    """
    if ingredient.config.get("model_type") not in transformers.CONFIG_MAPPING:
        raise SoupError(
            f"{ingredient.label}: config.json model_type {ingredient.config.get('model_type')!r} "
            "is not one transformers knows"
        )
    config = transformers.CONFIG_MAPPING[ingredient.config["model_type"]].from_dict(ingredient.config)
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture or "", None)
    if model_class is None:
        raise SoupError(f"{ingredient.label}: config.json names no architecture transformers knows ({architecture!r})")
    return config, model_class


def build_model(
    config: transformers.PretrainedConfig,
    model_class: type[transformers.PreTrainedModel],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> transformers.PreTrainedModel:
    """The architecture built straight on ``device`` with ``dtype`` float weights, in eval mode, its weights not
    initialised (no random init: they are set later; buffers computed by the modules themselves, such as position
    ids, are) and tied as the config ties them."""
    with torch.device(device), local_torch_dtype(dtype, model_class.__name__), no_init_weights():
        model = model_class(config)
    model.tie_weights()
    return model.eval()


def mean_device(device: torch.device, plan: MergePlan, copies: int = 1) -> torch.device:
    """Where a kitchen keeps fp32 running means: beside its model, unless the model is on a GPU where ``copies``
    means would take more than :data:`MEAN_SHARE` of the free memory (then on the host)."""
    if device.type != "cuda":
        return device
    need = copies * sum(4 * int(np.prod(shape)) for name, shape in plan.shapes.items() if plan.is_float(name))
    return device if need <= MEAN_SHARE * torch.cuda.mem_get_info(device)[0] else torch.device("cpu")


def best_index(tastings: Sequence[ModelScores]) -> int:
    """The ingredient with the highest selection score (the first one on ties)."""
    return int(np.argmax([t.select.main for t in tastings]))


def results(
    tastings: Sequence[ModelScores], soups: Sequence[ModelScores], judge: Judge, resamples: int = 1000
) -> list[SoupResult]:
    """The results table's rows: the best individual (chosen on the selection split), then each soup or baseline
    with its report-split gain over the best individual and a paired-bootstrap 95% interval."""
    best = tastings[best_index(tastings)]
    rows = [SoupResult("best individual", best.scores())]
    for soup in soups:
        gain = paired_bootstrap(
            judge.main_metric,
            best.report.labels,
            best.report.predictions,
            soup.report.predictions,
            resamples=resamples,
        )
        rows.append(SoupResult(soup.name, soup.scores(), gain, members=soup.members))
    return rows


def format_table(
    tastings: Sequence[ModelScores], rows: Sequence[SoupResult], metric: str, kept: Sequence[bool] | None = None
) -> str:
    """The plain-text results table in points (×100): each ingredient, then each soup, on both splits."""
    lines = [f"{'model':<44} {'select ' + metric:>18} {'report ' + metric:>18}  ", "-" * 100]
    for i, tasting in enumerate(tastings):
        note = "kept" if kept is not None and kept[i] else ""
        lines.append(
            f"{_short(tasting.name):<44} {100 * tasting.select.main:>18.1f} {100 * tasting.report.main:>18.1f}  {note}"
        )
    lines.append("-" * 100)
    for row in rows:
        note = "" if row.gain is None else f"report gain {format_gain(row.gain)}"
        lines.append(
            f"{row.name:<44} {100 * row.scores['select'][metric]:>18.1f} "
            f"{100 * row.scores['report'][metric]:>18.1f}  {note}"
        )
    return "\n".join(lines)


def _short(name: str, width: int = 44) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]
