"""The model card of a soup: ``huggingface_hub.ModelCard`` metadata plus a body rendered from ``soup_card.md.j2``.

Everything comes from ``soup.json`` (:class:`~hf_soups.record.SoupRecord`) and, when a folder is given, from what lies
in it (``greedy_trajectory.png``, tokenizer files, ``recipe.yaml``). The metadata carries ``library_name``,
``base_model``, tags, ``datasets``, ``pipeline_tag``, the license when every kept ingredient's own card names the same
one, and a ``model-index`` with one eval result per metric of the soup on the report split. A plain merge (no recipe,
no results) gets a card without results that says so.

Split sizes are read from ``recipe.split_rule["rows"]`` (``{"select": 138, "report": 139}``) when present.

Example:
    >>> card = build_card("my-soup", repo_id="me/bert-rte-soup")  # doctest: +SKIP
    >>> card.data.eval_results[0].metric_value                     # doctest: +SKIP
    0.6594
    >>> write_card("my-soup")                                      # doctest: +SKIP
    PosixPath('my-soup/README.md')
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, try_to_load_from_cache

from hf_soups import __version__
from hf_soups.errors import SoupError
from hf_soups.stats import within_noise
from hf_soups.record import SOUP_FILE, IngredientRecord, SoupRecord, SoupResult

TEMPLATE = "soup_card.md.j2"
CARD_FILE = "README.md"
TRAJECTORY_PLOT = "greedy_trajectory.png"
GLUE_DATASET = "nyu-mll/glue"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
# Architecture suffix → (pipeline tag, Auto class of the usage snippet). T5 "ForConditionalGeneration" is text2text.
HEADS: dict[str, tuple[str, str]] = {
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForConditionalGeneration": ("text2text-generation", "AutoModelForSeq2SeqLM"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForQuestionAnswering": ("question-answering", "AutoModelForQuestionAnswering"),
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
    "ForMaskedLM": ("fill-mask", "AutoModelForMaskedLM"),
}
# Results table order; rows with other names follow in their record order.
RESULT_ORDER = ["best individual", "uniform", "greedy", "learned", "ensemble"]
SPLITS = ("select", "report")


def build_card(soup: str | Path | SoupRecord, repo_id: str | None = None) -> ModelCard:
    """Build the model card of a soup.

    Args:
        soup: a soup folder (holding ``soup.json``) or its record. With a record, nothing is known of the folder's
            files: no plot, no tokenizer line in the snippet.
        repo_id: the Hub repo the soup goes to (names the model in ``model-index`` and the usage snippet); default:
            the folder name.

    Returns:
        A :class:`huggingface_hub.ModelCard`; ``str(card)`` is the ``README.md`` text.

    Raises:
        SoupError: ``soup.json`` is missing or unreadable.

    Example:
        >>> card = build_card("my-soup", repo_id="me/bert-rte-soup")  # doctest: +SKIP
        >>> card.data.tags                                             # doctest: +SKIP
        ['model-soup', 'merge', 'hf-soups', 'rte']
    """
    folder = None if isinstance(soup, SoupRecord) else Path(soup)
    record = soup if isinstance(soup, SoupRecord) else _load_record(Path(soup))
    name = repo_id or (folder.resolve().name if folder else "model-soup")
    pipeline_tag, auto_class = _head(record.architecture)
    recipe = record.recipe
    task = recipe.task if recipe else None
    metrics = _metrics(record)
    soup_row = next((r for r in record.results if recipe and r.name == recipe.name), None)
    eval_results = _eval_results(record, soup_row, pipeline_tag)
    data = ModelCardData(
        model_name=name if eval_results else None,
        library_name="transformers",
        base_model=record.base_model,
        license=common_license(record),
        pipeline_tag=pipeline_tag,
        tags=["model-soup", "merge", "hf-soups", *([task] if task else [])],
        datasets=[GLUE_DATASET] if task else None,
        eval_results=eval_results or None,
    )
    sizes = (recipe.split_rule.get("rows") or {}) if recipe else {}
    with importlib.resources.as_file(importlib.resources.files("hf_soups.model_cards") / TEMPLATE) as template:
        return ModelCard.from_template(
            data,
            template_path=str(template),
            model_name=name,
            repo_id=repo_id or name,
            version=__version__,
            record=record,
            recipe=recipe,
            kept=sum(i.kept for i in record.ingredients),
            adapters=sum(i.adapter is not None for i in record.ingredients),
            start_heads=sorted({i.start_head for i in record.ingredients if i.start_head}),
            stock=recipe.options if recipe and recipe.name == "stock" else None,
            ingredients=[_ingredient_row(i, recipe.metric if recipe else None) for i in record.ingredients],
            split_rule=_yaml(recipe.split_rule) if recipe and recipe.split_rule else None,
            options=_yaml({k: v for k, v in recipe.options.items() if k != "ratios"}) if recipe and recipe.options else None,
            metrics=metrics,
            sizes={split: sizes.get(split) for split in SPLITS} if isinstance(sizes, dict) else {},
            results=[_result_row(r, metrics) for r in _ordered(record.results)],
            verdicts=[_verdict(r) for r in _ordered(record.results) if r.gain],
            plot=TRAJECTORY_PLOT if folder and (folder / TRAJECTORY_PLOT).is_file() else None,
            auto_class=auto_class,
            has_tokenizer=bool(folder and any((folder / f).is_file() for f in TOKENIZER_FILES)),
            merge_command=_merge_command(record),
        )


def write_card(soup_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write the card of the soup in ``soup_dir`` to ``soup_dir/README.md`` (replacing any) and return its path.

    Example:
        >>> write_card("my-soup", repo_id="me/bert-rte-soup")  # doctest: +SKIP
        PosixPath('my-soup/README.md')
    """
    path = Path(soup_dir) / CARD_FILE
    build_card(soup_dir, repo_id=repo_id).save(path)
    return path


def common_license(record: SoupRecord) -> str | None:
    """The license every kept ingredient's own ``README.md`` names, or ``None`` when one is unknown or they differ.

    Cards are read offline: from a local ingredient folder, or from the local Hub cache at the recorded revision.
    """
    licenses = {_ingredient_license(i) for i in record.ingredients if i.kept}
    return next(iter(licenses)) if len(licenses) == 1 and None not in licenses else None


def _ingredient_license(ingredient: IngredientRecord) -> str | None:
    if ingredient.source == "hub" and ingredient.repo_id:
        cached = try_to_load_from_cache(ingredient.repo_id, CARD_FILE, revision=ingredient.revision)
        path = Path(cached) if isinstance(cached, str) else None
    else:
        path = Path(ingredient.spec) / CARD_FILE
    if path is None or not path.is_file():
        return None
    return ModelCard.load(path, ignore_metadata_errors=True).data.license


def _load_record(folder: Path) -> SoupRecord:
    try:
        return SoupRecord.load(folder)
    except FileNotFoundError:
        raise SoupError(f"soup folder {folder}: no {SOUP_FILE} (is it a folder written by hf-soups?)") from None
    except (ValueError, TypeError, KeyError) as err:
        raise SoupError(f"soup folder {folder}: {SOUP_FILE} is not a valid soup record ({err})") from None


def _head(architecture: str | None) -> tuple[str | None, str]:
    for suffix, head in HEADS.items():
        if architecture and architecture.endswith(suffix):
            return head
    return None, "AutoModel"


def _metrics(record: SoupRecord) -> list[str]:
    """Metric names of the results, the recipe's main metric first."""
    names = [record.recipe.metric] if record.recipe and record.recipe.metric else []
    for result in record.results:
        for scores in result.scores.values():
            names += [m for m in scores if m not in names]
    return names


def _eval_results(record: SoupRecord, soup_row: SoupResult | None, task_type: str | None) -> list[EvalResult]:
    recipe = record.recipe
    if recipe is None or soup_row is None or not recipe.task:
        return []
    return [
        EvalResult(
            task_type=task_type or "text-classification",
            dataset_type=GLUE_DATASET,
            dataset_name=f"GLUE {recipe.task.upper()}",
            dataset_config=recipe.task,
            dataset_split=recipe.report_split or "report",
            metric_type=metric,
            metric_value=value,
        )
        for metric, value in soup_row.scores.get("report", {}).items()
    ]


def _ingredient_row(ingredient: IngredientRecord, metric: str | None) -> dict[str, str]:
    if ingredient.source == "hub" and ingredient.repo_id:
        tree = f"/tree/{ingredient.revision}" if ingredient.revision else ""
        name = f"[{ingredient.spec}](https://huggingface.co/{ingredient.repo_id}{tree})"
    else:
        name = f"`{ingredient.spec}` (local)"
    score = ingredient.scores.get("select", {}).get(metric) if metric else None
    hyper = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in ingredient.hyperparameters.items())
    if ingredient.adapter:
        lora = f"LoRA adapter r={ingredient.adapter.get('r')}, lora_alpha={ingredient.adapter.get('lora_alpha')}"
        hyper = f"{lora}; {hyper}" if hyper else lora
    return {
        "name": name,
        "revision": f"`{ingredient.revision[:12]}`" if ingredient.revision else "—",
        "hyperparameters": hyper or "—",
        "score": _number(score),
        "kept": "yes" if ingredient.kept else "no",
        "weight": f"{ingredient.weight:.3g}",
    }


def _ordered(results: list[SoupResult]) -> list[SoupResult]:
    rank = {name: i for i, name in enumerate(RESULT_ORDER)}
    return sorted(results, key=lambda r: rank.get(r.name, len(rank)))


def _result_row(result: SoupResult, metrics: list[str]) -> dict[str, Any]:
    cells = [_number(result.scores.get(split, {}).get(m)) for m in metrics for split in SPLITS]
    return {"name": result.name, "cells": cells, "gain": format_gain(result.gain) if result.gain else "—"}


def format_gain(gain: dict[str, float]) -> str:
    """A gain in points: ``{"delta": 0.004, "low": -0.008, "high": 0.016}`` → ``"+0.4 (95% CI −0.8 … +1.6)"``."""
    return f"{_signed(gain['delta'])} (95% CI {_signed(gain['low'])} … {_signed(gain['high'])})"


def _verdict(result: SoupResult) -> str:
    gain = result.gain or {}
    if within_noise(gain):
        return (f"**{result.name}**: the 95% interval of the gain contains 0, so on this report split it cannot be "
                "told apart from the best individual model.")
    better = gain["low"] > 0
    return (f"**{result.name}**: {'better' if better else 'worse'} than the best individual model on the report "
            f"split (the whole 95% interval is {'above' if better else 'below'} 0).")


def _merge_command(record: SoupRecord) -> str:
    """The ``hf-soups merge`` call that rebuilds a plain merge from pinned ingredients."""
    specs = [f"{i.repo_id}@{i.revision}" if i.source == "hub" and i.revision else i.spec
             for i in record.ingredients if i.kept]
    weights = ",".join(f"{i.weight:.6g}" for i in record.ingredients if i.kept)
    return f"hf-soups merge {' '.join(specs)} --weights {weights} -o soup"


def _number(value: float | None) -> str:
    """A score in points (×100), as GLUE tables show them."""
    return "—" if value is None else f"{100 * value:.1f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).strip()
