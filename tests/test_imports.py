"""The package's import graph has no cycle and no arrow from a lower layer to a higher one.

Every module under ``hf_soups/`` is parsed with ``ast``; each ``import`` counts, wherever it stands (inside a
function, under ``if TYPE_CHECKING``). :data:`LAYERS` declares the layering, lowest first: a module may import
modules of its own layer (without a cycle) and of the layers below it, never of a layer above. A new module must be
given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_soups"

# Layer name → its modules, lowest layer first. ``name`` covers the module and its submodules; ``name.*`` only the
# submodules (their package's ``__init__`` can sit higher). The most specific entry wins.
LAYERS: dict[str, list[str]] = {
    "foundations": [
        "hf_soups.errors",
        "hf_soups.version",
        "hf_soups.dtypes",
        "hf_soups.file_names",
        "hf_soups.hashing",
        "hf_soups.record",
        "hf_soups.stats",
        "hf_soups.validation",
        "hf_soups.options",
        "hf_soups.tensorfile",
        "hf_soups.threads",
    ],
    "ingredients": ["hf_soups.ingredient", "hf_soups.adapters", "hf_soups.ingredients", "hf_soups.recipe_data"],
    "merge": [
        "hf_soups.mean",
        "hf_soups.atomic_folder",
        "hf_soups.model_folder",
        "hf_soups.adapter_soup",
        "hf_soups.soup_record",
    ],
    "evaluation": ["hf_soups.evaluation"],
    "recipes": ["hf_soups.recipes", "hf_soups.gather", "hf_soups.probe", "hf_soups.ema", "hf_soups.diagnostics"],
    "outputs": ["hf_soups.plots", "hf_soups.card", "hf_soups.recipe_file", "hf_soups.soup_folder", "hf_soups.hub"],
    # merge_models, and the pantry whose run averages it writes, come after the soup folder's writer
    "fronts": [
        "hf_soups",
        "hf_soups.merge",
        "hf_soups.pantry",
        "hf_soups.replay",
        "hf_soups.soups",
        "hf_soups.callback",
        "hf_soups.cli",
        "hf_soups.commands",
        "hf_soups.testing",
    ],
}


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under ``package`` (a package by its ``__init__``)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules that the module ``name`` (at ``path``) imports, at any depth of its code.

    ``from package import name`` counts as importing the submodule ``package.name`` when there is one, else the
    package. Importing a submodule also imports its packages (Python runs a package's ``__init__`` first), except
    the root package (whose names load lazily) and the packages ``name`` itself is in.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of an attribute path: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
            parent = target.rpartition(".")[0]
            while parent.count(".") and not (name == parent or name.startswith(parent + ".")):
                found.add(parent)
                parent = parent.rpartition(".")[0]
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports(name, path, set(modules)) for name, path in modules.items()}


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module``'s most specific entry, ``None`` when no entry covers it."""
    best: tuple[int, int] | None = None  # (specificity, layer index)
    for index, entries in enumerate(LAYERS.values()):
        for entry in entries:
            if entry.endswith(".*"):
                covers = module.startswith(entry[:-1])
            else:
                covers = module == entry or module.startswith(entry + ".")
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a → b"`` for each import of a module of a higher layer (or of the package ``__init__``)."""
    return sorted(
        f"{source} → {target}"
        for source, targets in graph.items()
        for target in targets
        if target == "hf_soups" or layer_of(target) > layer_of(source)  # type: ignore[operator]
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    assert [name for name in module_names() if layer_of(name) is None] == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_import_runs_up_the_layers():
    assert upward_imports(import_graph()) == []


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / "hf_soups" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "hf_soups"


def test_the_checks_see_function_level_and_relative_imports(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "def f():\n    from hf_soups.merge import merge_models\n",
            "merge.py": "from .errors import SoupError\nfrom hf_soups import __version__\n",
            "recipes/__init__.py": "",
            "recipes/greedy.py": "from hf_soups.recipes import kitchen\n",
            "recipes/kitchen.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import greedy\n",
            "plots.py": "from hf_soups.recipes.kitchen import Kitchen\n",
        },
    )
    modules = module_names(package)
    graph = {name: imports(name, path, set(modules)) for name, path in modules.items()}
    assert graph["hf_soups.errors"] == {"hf_soups.merge"}
    assert graph["hf_soups.merge"] == {"hf_soups.errors", "hf_soups"}
    assert graph["hf_soups.recipes.greedy"] == {"hf_soups.recipes.kitchen"}
    assert graph["hf_soups.plots"] == {"hf_soups.recipes.kitchen", "hf_soups.recipes"}  # its package's __init__ too
    assert cycles(graph) == [
        ["hf_soups.errors", "hf_soups.merge"],
        ["hf_soups.recipes.greedy", "hf_soups.recipes.kitchen"],
    ]
    assert upward_imports(graph) == ["hf_soups.errors → hf_soups.merge", "hf_soups.merge → hf_soups"]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("hf_soups.recipes", "recipes"),
        ("hf_soups.recipes.greedy", "recipes"),
        ("hf_soups.soups", "fronts"),
        ("hf_soups.evaluation.data", "evaluation"),
        ("hf_soups.diagnostics.report", "recipes"),
        ("hf_soups.evaluation.dataset", "evaluation"),
        ("hf_soups.recipes.dataset_judge", "recipes"),
    ],
)
def test_the_most_specific_entry_places_a_module(module, layer):
    assert list(LAYERS)[layer_of(module)] == layer  # type: ignore[index]
