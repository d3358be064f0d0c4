"""Diagnostics, report: a diagnosis as plain text (:func:`format_report`) and as PNG plots.

:func:`plot_cosines` draws the task-vector cosine heatmaps (overall and per layer group), :func:`plot_interpolation`
the interpolation curves; both make a matplotlib ``Figure`` (no pyplot: the user's backend is left alone).

Example:
    >>> print(format_report(diagnose(["runs/a", "runs/b"])))  # doctest: +SKIP
    >>> plot_cosines(diagnosis.weights, "cosine_heatmap.png")  # doctest: +SKIP
    PosixPath('cosine_heatmap.png')
"""

from __future__ import annotations

from pathlib import Path

from hf_soups.diagnostics.landscape import Landscape
from hf_soups.diagnostics.task_vectors import WeightSpace
from hf_soups.diagnostics.verdicts import Diagnosis


def format_report(diagnosis: Diagnosis) -> str:
    """The diagnosis as plain text: verdicts, findings, the overall cosine matrix and the interpolation curves."""
    lines = []
    if diagnosis.weights is not None:
        lines.append(f"centre: {diagnosis.weights.centre}")
        if diagnosis.weights.base is None:
            lines.append(
                "  (task vectors from the mean sum to zero: their cosines show which ingredients deviate "
                "together, -1 for two; give --base for cosines of true task vectors)"
            )
    width = max(len("ingredient"), *(len(v.spec) for v in diagnosis.verdicts)) + 2
    lines += ["", f"{'ingredient':<{width}}verdict"]
    for verdict in diagnosis.verdicts:
        lines.append(f"{verdict.spec:<{width}}{verdict.verdict}")
        lines += [f"{'':<{width}}  - {reason}" for reason in verdict.reasons]
        if verdict.verdict != "soup-compatible":
            lines.append(f"{'':<{width}}  → {verdict.suggestion}")
    lines += ["", "findings:", *(f"  - {f}" for f in diagnosis.findings)]
    weights = diagnosis.weights
    if weights is not None:
        overall = weights.overall
        lines += ["", "task-vector cosines (all tensors) and relative distance from the centre:"]
        for i, spec in enumerate(weights.specs):
            cells = " ".join(f"{c:+.2f}" for c in overall.cosines[i])
            lines.append(f"  {i:>2} {cells}   ‖τ‖/‖θ₀‖ {overall.relative_norms[i]:.3g}   {spec}")
    if diagnosis.landscape is not None:
        land = diagnosis.landscape
        lines += ["", f"{land.metric} on {land.split} from the best ingredient {land.best} (α = 0) to each other:"]
        for curve in land.curves:
            cells = " ".join(f"{s:.3f}" for s in curve.scores)
            lines.append(f"  {cells}   barrier {curve.barrier:+.3f}   {curve.partner}")
    return "\n".join(lines)


def plot_cosines(weights: WeightSpace, path: str | Path) -> Path:
    """Save a heatmap of the pairwise task-vector cosines, overall and per layer group, as a PNG."""
    from matplotlib.figure import Figure

    panels = {"all tensors": weights.overall, **weights.groups}
    n = len(weights.specs)
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.2 * columns + 1, 3.0 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    image = None
    for ax, (name, sums) in zip(axes.flat, panels.items(), strict=False):
        image = ax.imshow(sums.cosines, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(n), [str(i) for i in range(n)], fontsize=7)
        ax.set_yticks(range(n), [str(i) for i in range(n)], fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    figure.colorbar(image, ax=axes, shrink=0.8, label="task-vector cosine")
    figure.suptitle(
        f"centre: {weights.centre}\n" + "; ".join(f"{i}: {Path(s).name}" for i, s in enumerate(weights.specs)),
        fontsize=8,
    )
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_interpolation(landscape: Landscape, path: str | Path) -> Path:
    """Save the interpolation curves (score against α, best ingredient at α = 0) as a PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for curve in landscape.curves:
        ax.plot(
            curve.alphas, curve.scores, marker="o", label=f"{Path(curve.partner).name} (barrier {curve.barrier:+.3f})"
        )
    ax.set_xlabel(f"α (0: best, {Path(landscape.best).name}; 1: partner)")
    ax.set_ylabel(f"{landscape.metric} on {landscape.split}")
    ax.set_title(f"{landscape.task}: linear interpolation from the best ingredient")
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return Path(path)
