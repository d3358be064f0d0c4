"""What a soup records of its ingredients in ``soup.json``: each one's origin, file hashes and normalised weight,
and the base model they were fine-tuned from (:func:`soup_record`).

Example:
    >>> # runs/lr2e-5, runs/lr3e-5: two fine-tuned runs of one base (tiny ones: see hf_soups.merge's example)
    >>> from hf_soups import resolve_ingredients
    >>> record = soup_record(resolve_ingredients(["runs/lr2e-5", "runs/lr3e-5"]), [2.0, 1.0])
    >>> [(i.spec, i.weight) for i in record.ingredients]
    [('runs/lr2e-5', 0.6666666666666666), ('runs/lr3e-5', 0.3333333333333333)]
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_soups.adapters import AdapterIngredient
from hf_soups.ingredient import Ingredient
from hf_soups.record import SoupRecord
from hf_soups.version import __version__


def base_model(ingredients: Sequence[Ingredient]) -> str | None:
    """What a soup was fine-tuned from, when known: its adapters' base, else the pretrained model every ingredient
    records (a pantry's entries); a Hub id, or a local folder by its absolute path (the card names it only by a Hub
    id, :func:`hf_soups.card.hub_id`)."""
    bases = [i.base for i in ingredients if isinstance(i, AdapterIngredient) and i.base]
    if bases:
        return bases[0].repo_id or str(bases[0].path.resolve())
    starts = {i.start_model for i in ingredients}
    return starts.pop() if len(starts) == 1 else None


def soup_record(ingredients: Sequence[Ingredient], weights: Sequence[float]) -> SoupRecord:
    """The ``soup.json`` record of a soup: each ingredient's origin, file hashes and normalised weight (its
    ``dtype`` is filled in when the weights are written)."""
    total = sum(weights)
    config = ingredients[0].config
    return SoupRecord(
        hf_soups_version=__version__,
        dtype="",
        base_model=base_model(ingredients),
        model_type=config.get("model_type"),
        architecture=(config.get("architectures") or [None])[0],
        ingredients=[i.record(weight=w / total, kept=w > 0) for i, w in zip(ingredients, weights, strict=True)],
    )
