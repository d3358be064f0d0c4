"""``soup.json``: the record a soup folder carries of how it was made.

The merge core writes the ingredients, weights and dtype; recipes add the recipe, the split rule, scores and the
greedy trajectory; saving it records the sha256 of the soup's own weight files beside it; the model card and the Hub
push only read it (the push checks those digests first). Plain dataclasses, written as JSON.

Example:
    >>> # runs/lr2e-5, runs/lr3e-5: two fine-tuned runs of one base (tiny ones: see hf_soups.merge's example)
    >>> from hf_soups import merge_models
    >>> soup = merge_models(["runs/lr2e-5", "runs/lr3e-5"], output_dir="my-soup", weights=[3, 1])
    >>> record = SoupRecord.load("my-soup")
    >>> [(i.spec, i.weight) for i in record.ingredients if i.kept]
    [('runs/lr2e-5', 0.75), ('runs/lr3e-5', 0.25)]
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOUP_FILE = "soup.json"
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.index.json")  # a model folder's weight files and their shard index


@dataclass
class IngredientRecord:
    """Where one ingredient came from and what went into the soup.

    Attributes:
        spec: the string the user gave (``owner/name@rev``, a folder, ...).
        source: ``"hub"`` or ``"local"``.
        repo_id: the Hub repo id, for Hub ingredients.
        revision: the resolved commit sha for Hub ingredients (``None`` for local folders).
        files: weight file name → sha256 of its bytes, hashed while the merge streamed it.
        weight: the ingredient's normalised weight in the soup (0 for an ingredient a recipe did not keep).
        kept: whether the recipe kept it.
        hyperparameters: what is known of how it was trained (learning rate, epochs, seed, ...).
        scores: split name → metric name → value, filled by recipes.
        adapter: for PEFT adapters, ``{"type": "lora", "r": 8, "lora_alpha": 16, "base": "..."}``.
        start_head: for pantry entries with a pinned start head, how it was made (``"random"`` or ``"probe"``).
    """

    spec: str
    source: str
    repo_id: str | None = None
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    weight: float = 0.0
    kept: bool = True
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    adapter: dict[str, Any] | None = None
    start_head: str | None = None


@dataclass
class SoupResult:
    """One row of the results table: an individual model, a soup or the ensemble baseline.

    Attributes:
        name: ``"best individual"``, ``"uniform"``, ``"greedy"``, ``"learned"``, ``"ensemble"``,
            ``"ensemble (greedy)"``.
        scores: split name (``"select"``/``"report"``) → metric name → value.
        gain: on the report split, this row's main metric minus the best individual's, with its paired-bootstrap
            95% interval: ``{"delta": 0.4, "low": -0.8, "high": 1.6, "resamples": 1000}``.
        members: an ensemble's members (ingredient specs), for the greedy ensemble ``"ensemble (greedy)"``.
    """

    name: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    gain: dict[str, float] | None = None
    members: list[str] | None = None


@dataclass
class RecipeRecord:
    """How the soup was chosen.

    Attributes:
        name: the recipe (``"uniform"``, ``"greedy"``, ``"learned"``).
        task: the GLUE task name (``"rte"``), or ``None`` for a plain merge.
        metric: the main metric selection used (``"accuracy"``).
        select_split / report_split: split specs, e.g. ``"validation:select"``.
        split_rule: what reproduces the splits (seed, fraction, sizes).
        trajectory: greedy steps: ``{"spec", "score", "kept"}`` after each candidate.
        options: anything else the recipe needs to be re-cooked (learned: granularity, epochs, lr).
    """

    name: str
    task: str | None = None
    metric: str | None = None
    select_split: str | None = None
    report_split: str | None = None
    split_rule: dict[str, Any] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SoupRecord:
    """Everything ``soup.json`` holds.

    ``adapter`` is set when the soup was written as a PEFT adapter: ``{"type": "lora", "output": "exact" or "svd",
    "r": 16, "relative_error": 0.02, "max_module_relative_error": 0.05}`` (errors of the truncated SVD, 0 if exact).
    ``files`` maps each of the soup's own weight files (shard index included, :func:`weight_digests`) to its sha256,
    recorded by :meth:`save`; ``None`` in a record written before hf-soups recorded them.
    """

    hf_soups_version: str
    dtype: str
    ingredients: list[IngredientRecord]
    base_model: str | None = None
    model_type: str | None = None
    architecture: str | None = None
    recipe: RecipeRecord | None = None
    results: list[SoupResult] = field(default_factory=list)
    adapter: dict[str, Any] | None = None
    files: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SoupRecord:
        data = dict(data)
        data["ingredients"] = [IngredientRecord(**i) for i in data["ingredients"]]
        data["recipe"] = RecipeRecord(**data["recipe"]) if data.get("recipe") else None
        data["results"] = [SoupResult(**r) for r in data.get("results", [])]
        return cls(**data)

    def save(self, folder: str | Path) -> Path:
        """Write ``soup.json`` into ``folder``, the soup folder, recording in :attr:`files` the sha256 of the weight
        files it holds."""
        self.files = weight_digests(folder)
        path = Path(folder) / SOUP_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> SoupRecord:
        return cls.from_dict(json.loads((Path(folder) / SOUP_FILE).read_text()))


def weight_digests(folder: str | Path) -> dict[str, str]:
    """Name → sha256 of each weight file (:data:`WEIGHT_FILES`) at the top of ``folder``.

    Example:
        >>> weight_digests("my-soup")  # doctest: +SKIP
        {'model.safetensors': '5d41402abc4b2a76b9719d911017c592...'}
    """
    digests = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in WEIGHT_FILES):
            with path.open("rb") as file:
                digests[path.name] = hashlib.file_digest(file, "sha256").hexdigest()
    return digests
