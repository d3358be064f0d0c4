"""Model Stock against mergekit's ``model_stock``: the same tensors, to 1e-6, on tiny models built from config.

Writes a tiny BERT classifier (the base θ₀) and ``--count`` fine-tuned-looking copies of it (seeded noise on every
float tensor, plus a shared drift so the task vectors agree), runs ``hf_soups``' Model Stock and ``mergekit-yaml``
with ``merge_method: model_stock`` (mergekit lives in its own venv, see ``benchmarks/setup_mergekit.sh``; it is never
a dependency), and prints the largest absolute difference per tensor group.

Usage:
    bash benchmarks/setup_mergekit.sh
    python benchmarks/stock_vs_mergekit.py --mergekit benchmarks/.venv-mergekit/bin/mergekit-yaml --workdir /tmp/stock
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from hf_soups.ingredients import resolve_ingredients, validate_ingredients
from hf_soups.recipes.stock import StockBase, stock_soup_tensors


def make_models(workdir: Path, count: int) -> tuple[Path, list[Path]]:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    base = BertForSequenceClassification(config)
    base.save_pretrained(workdir / "base")
    drift = {name: torch.randn_like(p) * 0.02 for name, p in base.named_parameters()}
    folders = []
    for i in range(count):
        model = BertForSequenceClassification.from_pretrained(workdir / "base")
        generator = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.add_(drift[name] + torch.randn(param.shape, generator=generator) * 0.02)
        model.save_pretrained(workdir / f"ft{i}")
        folders.append(workdir / f"ft{i}")
    return workdir / "base", folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mergekit", required=True, help="path to mergekit-yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stock-vs-mergekit"))
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    base, folders = make_models(args.workdir, args.count)
    config = args.workdir / "model_stock.yml"
    config.write_text(
        "merge_method: model_stock\ndtype: float32\n"
        f"base_model: {base}\nmodels:\n" + "".join(f"  - model: {folder}\n" for folder in folders)
    )
    out = args.workdir / "mergekit"
    subprocess.run([args.mergekit, str(config), str(out), "--quiet", "--no-write-model-card"], check=True)
    theirs = {}
    for file in sorted(out.glob("*.safetensors")):
        theirs |= load_file(file)
    ingredients = resolve_ingredients(folders)
    ours, _, _ = stock_soup_tensors(ingredients, validate_ingredients(ingredients), StockBase.resolve(base))
    worst = 0.0
    print("| tensor | max abs difference |\n|---|---:|")
    for name, tensor in ours.tensors.items():
        if not tensor.is_floating_point():
            continue
        difference = float((tensor - theirs[name].float()).abs().max())
        worst = max(worst, difference)
        print(f"| {name} | {difference:.2e} |")
    print(
        f"\n{len(ours.tensors)} tensors, {args.count} ingredients: largest difference {worst:.2e} "
        f"({'within' if worst <= 1e-6 else 'NOT within'} 1e-6)"
    )


if __name__ == "__main__":
    main()
