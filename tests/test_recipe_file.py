"""Reading recipe.yaml: bounded in size, values and nesting, so a hostile or broken file is refused in seconds."""

from __future__ import annotations

import pytest

import hf_soups.recipe_file as recipe_file
from hf_soups.errors import SoupError
from hf_soups.recipe_file import read_recipe


def test_a_recipe_of_more_values_than_the_limit_is_refused_while_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_file, "MAX_RECIPE_VALUES", 1000)
    entries = [f"- {{ingredient: run{i}, sha256: {{model.safetensors: '{i}'}}, weight: 1}}" for i in range(2000)]
    path = tmp_path / "recipe.yaml"
    path.write_text("mix:\n" + "\n".join(entries) + "\n")
    with pytest.raises(SoupError, match="recipe file .*: cannot be read \\(more than 1000 values, more than a recipe"):
        read_recipe(path)
    path.write_text("mix:\n" + "\n".join(entries[:100]) + "\n")
    assert len(read_recipe(path)["mix"]) == 100  # 100 entries of 9 values each: within the limit


@pytest.mark.slow
def test_the_limits_leave_room_for_a_large_per_tensor_recipe(tmp_path):
    tensors = [f"encoder.layer.{n // 16}.weight{n % 16}" for n in range(400)]
    weights = "".join(f"    {name}: 0.5\n" for name in tensors)
    entry = "- ingredient: run{i}\n  sha256: {{model.safetensors: '{i}'}}\n  layer_weights:\n" + weights
    path = tmp_path / "recipe.yaml"
    path.write_text("mix:\n" + "".join(entry.format(i=i) for i in range(100)))
    assert path.stat().st_size < recipe_file.MAX_RECIPE_BYTES
    assert len(read_recipe(path)["mix"]) == 100  # 16 s on a busy 2-core machine
