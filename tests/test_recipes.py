"""Recipes: greedy with known answers, resume, re-cooking, learned weights, the GLUE front end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import GLUE_DIR, ROWS, BiasJudge, accelerate_launch, needs_glue
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from hf_soups import SoupError, bagged_soup, greedy_soup, learned_soup, replay_recipe, uniform_soup
from hf_soups.cli import main
from hf_soups.evaluation import EvalResult
from hf_soups.evaluation.scoring import Precision
from hf_soups.ingredients import MergePlan
from hf_soups.recipes.kitchen import Kitchen, mean_device
from hf_soups.record import SoupRecord
from hf_soups.soups import run_in_kitchen


def with_bias(folders, biases):
    for folder, bias in zip(folders, biases, strict=True):
        state = load_file(folder / "model.safetensors")
        state["classifier.bias"] = torch.tensor(bias)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folders


def sha(folder):
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def kept(report):
    return [Path(i.spec).name for i in report.record.ingredients if i.kept]


def test_greedy_keeps_what_helps_and_rejects_a_bad_ingredient(make_ingredients, tmp_path):
    folders = with_bias(make_ingredients(4), [[0.3, 0.0], [5.0, 5.0], [0.0, -0.32], [0.0, 0.2]])
    report = greedy_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "soup", progress=False)
    # selection order: ing3 (0.8), ing0 (0.7), ing2 (0.68), ing1 (0.0); ing3+ing0 → bias (0.15, 0.1): 0.75 < 0.8,
    # rejected; ing3+ing2 → (0, -0.06): 0.94, kept; with ing1 the bias explodes
    trajectory = report.record.recipe.trajectory
    assert [Path(t["spec"]).name for t in trajectory] == ["ing3", "ing0", "ing2", "ing1"]
    assert [t["kept"] for t in trajectory] == [True, False, True, False]
    assert kept(report) == ["ing2", "ing3"]
    assert report.record.results[0].name == "best individual"
    greedy = next(r for r in report.record.results if r.name == "greedy")
    assert greedy.scores["select"]["accuracy"] >= report.record.results[0].scores["select"]["accuracy"]


@pytest.mark.parametrize(
    ("biases", "rule", "min_gain", "members"),
    [
        # a copy of the best scores the same: strict (the authors' >) drops it, ties (the paper's ≥) keeps it
        ([[0.2, 0.0], [5.0, 5.0], [0.2, 0.0]], "strict", 0.0, ["ing0"]),
        ([[0.2, 0.0], [5.0, 5.0], [0.2, 0.0]], "ties", 0.0, ["ing0", "ing2"]),
        # ing1 (0.8) first; with ing0 (0.6) the mean bias is 0.1: 0.9, a gain of 0.1
        ([[0.4, 0.0], [-0.2, 0.0]], "strict", 0.05, ["ing0", "ing1"]),
        ([[0.4, 0.0], [-0.2, 0.0]], "strict", 0.15, ["ing1"]),
        ([[0.4, 0.0], [-0.2, 0.0]], "ties", 0.15, ["ing1"]),
    ],
)
def test_greedy_rule_decides_ties_and_small_gains(make_ingredients, biases, rule, min_gain, members):
    folders = with_bias(make_ingredients(len(biases)), biases)
    report = greedy_soup(folders, judge=BiasJudge(), greedy_rule=rule, min_gain=min_gain, progress=False)
    assert kept(report) == members
    assert report.record.recipe.options == {"greedy_rule": rule, "min_gain": min_gain}


def test_greedy_is_strict_by_default(make_ingredients):
    folders = with_bias(make_ingredients(3), [[0.2, 0.0], [5.0, 5.0], [0.2, 0.0]])
    assert kept(greedy_soup(folders, judge=BiasJudge(), progress=False)) == ["ing0"]


def test_greedy_resumes_only_under_the_rule_it_started_with(make_ingredients, tmp_path):
    folders = with_bias(make_ingredients(4), [[0.1, 0], [-0.1, 0], [0.3, 0.3], [0.02, 0]])
    with pytest.raises(KeyboardInterrupt):
        greedy_soup(folders, judge=BiasJudge(interrupt_after=6), output_dir=tmp_path / "soup", progress=False)
    with pytest.raises(SoupError, match="made with the greedy rule .*'strict'.*, not .*'ties'"):
        greedy_soup(
            folders, judge=BiasJudge(), output_dir=tmp_path / "soup", resume=True, greedy_rule="ties", progress=False
        )


def test_bagged_greedy_keeps_what_most_bags_keep_for_the_cost_of_one_greedy_pass(make_ingredients, tmp_path):

    # as greedy: ing3 (0.8) first; ing0 lowers every resample's score, ing2 raises it, ing1 ruins it
    folders = with_bias(make_ingredients(4), [[0.3, 0.0], [5.0, 5.0], [0.0, -0.32], [0.0, 0.2]])
    greedy_judge, bagged_judge = BiasJudge(), BiasJudge()
    greedy = greedy_soup(folders, judge=greedy_judge, progress=False)
    bagged = bagged_soup(folders, judge=bagged_judge, output_dir=tmp_path / "soup", bags=8, bag_seed=3, progress=False)
    assert kept(bagged) == kept(greedy) == ["ing2", "ing3"]
    options = bagged.record.recipe.options
    assert options == {
        "greedy_rule": "strict",
        "min_gain": 0.0,
        "bags": 8,
        "bag_seed": 3,
        "votes": [0, 0, 8, 8],
        "evaluations": 3,
    }
    assert bagged_judge.calls == greedy_judge.calls  # cached predictions: not 8 greedy passes
    assert [r.name for r in bagged.record.results] == [
        "best individual",
        "bagged",
        "uniform",
        "ensemble",
        "ensemble (greedy)",
    ]
    recipe = yaml.safe_load((tmp_path / "soup" / "recipe.yaml").read_text())
    assert recipe["recipe"] == "bagged" and recipe["options"] == {
        "greedy_rule": "strict",
        "min_gain": 0.0,
        "bags": 8,
        "bag_seed": 3,
    }
    again = replay_recipe(tmp_path / "soup" / "recipe.yaml", tmp_path / "again")
    assert sha(again) == sha(tmp_path / "soup")
    assert SoupRecord.load(again).recipe.options["bags"] == 8


def test_recipes_cooked_in_one_kitchen_taste_the_ingredients_once(make_ingredients):
    from hf_soups.recipes import make_kitchen

    folders = with_bias(make_ingredients(4), [[0.3, 0.0], [5.0, 5.0], [0.0, -0.32], [0.0, 0.2]])
    judge = BiasJudge()
    kitchen = make_kitchen(folders, judge=judge, progress=False)
    greedy = run_in_kitchen(kitchen, "greedy")
    assert judge.calls == 4 + 1 + 3 + 1  # tastings, the uniform soup, three candidates, the greedy soup
    bagged = run_in_kitchen(kitchen, "bagged", options={"bags": 4})
    assert judge.calls == 9 + 3 + 1  # no tasting again: the candidates and the bagged soup
    assert [r.scores for r in bagged.record.results if r.name == "uniform"] == [
        r.scores for r in greedy.record.results if r.name == "uniform"
    ]


@pytest.mark.parametrize(
    "options", [{"bags": 0}, {"bags": 2.5}, {"min_gain": -0.1}, {"min_gain": float("nan")}, {"greedy_rule": "loose"}]
)
def test_bagged_refuses_bad_options(make_ingredients, options):
    from hf_soups.soups import run_recipe

    name = next(iter(options))
    with pytest.raises(SoupError, match=name):
        run_recipe("bagged", make_ingredients(2), judge=BiasJudge(), options=options, progress=False)


def test_greedy_reads_each_ingredient_at_most_twice(make_ingredients):
    from hf_soups.ingredients import resolve_ingredients

    ingredients = resolve_ingredients(with_bias(make_ingredients(4), [[0.1, 0], [0.2, 0], [0.3, 0], [0.4, 0]]))
    greedy_soup(ingredients, judge=BiasJudge(), progress=False)
    assert [i.reads for i in ingredients] == [2, 2, 2, 2]


class Bf16Judge(BiasJudge):
    """BiasJudge on a bf16 scoring model, as the judges on a GPU score: candidates are cast, the mean stays fp32."""

    def precision(self, text_to_text):
        return Precision(torch.bfloat16)


@pytest.mark.parametrize("judge", [BiasJudge, Bf16Judge])
def test_greedy_soup_equals_merge_of_its_members_bit_for_bit(make_ingredients, tmp_path, judge):
    from hf_soups import merge_models

    folders = with_bias(make_ingredients(3), [[0.1, 0.0], [-0.1, 0.0], [0.05, 0.0]])
    report = greedy_soup(folders, judge=judge(), output_dir=tmp_path / "soup", progress=False)
    assert report.model.dtype == (torch.bfloat16 if judge is Bf16Judge else torch.float32)
    order = [folders[int(Path(t["spec"]).name[-1])] for t in report.record.recipe.trajectory if t["kept"]]
    assert len(order) >= 2
    merged = merge_models(order, tmp_path / "merged", progress=False)
    assert sha(merged) == sha(tmp_path / "soup")


@pytest.mark.slow
def test_greedy_moves_no_whole_model_between_host_and_device(make_ingredients, tmp_path, monkeypatch):
    """The scoring model is built where it is scored and never moved: not for a candidate, not to score it."""
    from helpers import write_rte
    from transformers import PreTrainedModel

    folders = make_ingredients(4)
    write_rte(tmp_path / "glue", 24)
    moves = []
    for method in ("to", "cpu", "cuda"):
        original = getattr(torch.nn.Module, method)

        def counted(self, *args, original=original, **kwargs):
            if isinstance(self, PreTrainedModel):
                moves.append(type(self).__name__)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, method, counted)
    report = greedy_soup(
        folders,
        "rte",
        glue_dir=tmp_path / "glue",
        select_split="validation:select",
        report_split="validation:report",
        batch_size=4,
        progress=False,
    )
    assert len(report.record.recipe.trajectory) == 4
    assert len(moves) <= 1, moves


def test_greedy_state_holds_no_weights(make_ingredients, tmp_path):
    folders = with_bias(make_ingredients(4), [[0.1, 0], [-0.1, 0], [0.3, 0.3], [0.02, 0]])
    with pytest.raises(KeyboardInterrupt):  # 4 tastings, the uniform soup, 2 candidates (one kept), then Ctrl-C
        greedy_soup(folders, judge=BiasJudge(interrupt_after=7), output_dir=tmp_path / "soup", progress=False)
    state = tmp_path / "soup.greedy-state"
    assert json.loads((state / "state.json").read_text())["members"]
    assert sorted(f.name.split("-")[0] for f in state.iterdir()) == ["state.json", "tastings"]  # no mean: members


def test_interrupted_greedy_resumes_to_the_same_soup(make_ingredients, tmp_path):
    folders = with_bias(make_ingredients(5), [[0.1, 0], [-0.1, 0], [0.3, 0.3], [0.02, 0], [-0.05, 0.1]])
    clean = greedy_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "clean", progress=False)
    with pytest.raises(KeyboardInterrupt):
        # 5 tastings and the uniform soup, then Ctrl-C while the second greedy candidate is scored
        greedy_soup(folders, judge=BiasJudge(interrupt_after=7), output_dir=tmp_path / "soup", progress=False)
    assert not (tmp_path / "soup").exists()
    state = json.loads((tmp_path / "soup.greedy-state" / "state.json").read_text())
    assert 0 < state["step"] < len(folders)
    judge = BiasJudge()
    resumed = greedy_soup(folders, judge=judge, output_dir=tmp_path / "soup", resume=True, progress=False)
    # no re-tasting: the remaining candidates, then the greedy soup for the table (the uniform's scores are saved)
    assert judge.calls == len(folders) - state["step"] + 1
    assert kept(resumed) == kept(clean)
    assert sha(tmp_path / "soup") == sha(tmp_path / "clean")
    assert not (tmp_path / "soup.greedy-state").exists()


def test_resume_state_of_other_ingredients_is_refused(make_ingredients, tmp_path):
    folders = with_bias(make_ingredients(3), [[0.1, 0], [-0.1, 0], [0.3, 0.3]])
    with pytest.raises(KeyboardInterrupt):
        greedy_soup(folders, judge=BiasJudge(interrupt_after=4), output_dir=tmp_path / "soup", progress=False)
    with pytest.raises(SoupError, match="--resume: the state .* is for ingredients"):
        greedy_soup(folders[:2], judge=BiasJudge(), output_dir=tmp_path / "soup", resume=True, progress=False)


class HalfJudge(BiasJudge):
    """BiasJudge with half the right answers: the same ingredients, other predictions."""

    def score(self, model, split, return_predictions=False):
        result = super().score(model, split, return_predictions)
        result.predictions = result.predictions * (np.arange(ROWS) % 2)
        result.logits = np.stack([1 - result.predictions, result.predictions], axis=1).astype(float)
        result.metrics = {"accuracy": self.main_metric(result.predictions, result.labels)}
        return result


def test_a_fresh_run_never_reuses_an_older_state(make_ingredients, tmp_path):
    folders = with_bias(make_ingredients(4), [[0.1, 0], [-0.1, 0], [0.3, 0.3], [0.02, 0]])
    clean = greedy_soup(folders, judge=HalfJudge(), output_dir=tmp_path / "clean", progress=False)
    for judge in (BiasJudge(interrupt_after=6), HalfJudge(interrupt_after=6)):  # the second run is not resumed
        with pytest.raises(KeyboardInterrupt):
            greedy_soup(folders, judge=judge, output_dir=tmp_path / "soup", progress=False)
    resumed = greedy_soup(folders, judge=HalfJudge(), output_dir=tmp_path / "soup", resume=True, progress=False)
    assert resumed.record.results == clean.record.results
    assert [i.scores for i in resumed.record.ingredients] == [i.scores for i in clean.record.ingredients]
    assert sha(tmp_path / "soup") == sha(tmp_path / "clean")


def _break_state(folder, how):
    state = json.loads((folder / "state.json").read_text())
    arrays = folder / state["files"]["arrays"]
    if how == "truncated":
        (folder / "state.json").write_text(json.dumps(state)[:100])
    elif how == "step":
        state["step"] = "two"
    elif how == "order":
        state["order"] = [0, 0, 1]
    elif how == "no arrays":
        arrays.unlink()
    elif how == "other arrays":
        np.savez(arrays, nothing=np.zeros(1))
    elif how == "members":
        state["members"] = [state["order"][-1]]  # a member greedy has not reached
    elif how == "fields":
        state["tastings"] = state["tastings"][:1]
    if how in ("step", "order", "members", "fields"):
        (folder / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("how", ["truncated", "step", "order", "no arrays", "other arrays", "members", "fields"])
def test_a_broken_greedy_state_is_refused_by_name(make_ingredients, tmp_path, how):
    folders = with_bias(make_ingredients(3), [[0.1, 0], [-0.1, 0], [0.3, 0.3]])
    with pytest.raises(KeyboardInterrupt):
        greedy_soup(folders, judge=BiasJudge(interrupt_after=5), output_dir=tmp_path / "soup", progress=False)
    _break_state(tmp_path / "soup.greedy-state", how)
    with pytest.raises(SoupError, match=r"--resume: .*soup.greedy-state"):
        greedy_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "soup", resume=True, progress=False)
    assert not (tmp_path / "soup").exists()


def test_recipe_file_recooks_bit_for_bit(make_ingredients, tmp_path):
    folders = with_bias(make_ingredients(3), [[0.1, 0.0], [-0.1, 0.0], [0.05, 0.0]])
    report = greedy_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "soup", progress=False)
    recipe = yaml.safe_load((tmp_path / "soup" / "recipe.yaml").read_text())
    assert recipe["recipe"] == "greedy" and [Path(m["ingredient"]).name for m in recipe["mix"]] == ["ing2", "ing1"]
    assert sorted(kept(report)) == ["ing1", "ing2"]
    assert main(["cook", str(tmp_path / "soup" / "recipe.yaml"), "-o", str(tmp_path / "again")]) == 0
    assert sha(tmp_path / "again") == sha(tmp_path / "soup")


def test_recooking_a_changed_ingredient_is_refused(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    uniform_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "soup", progress=False)
    with_bias(folders[1:], [[0.7, 0.7]])
    with pytest.raises(SoupError, match="has changed since the recipe was written"):
        replay_recipe(tmp_path / "soup", tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_a_recipe_cooks_from_anywhere_with_its_ingredients(make_ingredients, tmp_path, monkeypatch):
    folders = make_ingredients(2)
    uniform_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "soup", progress=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    for folder in [*folders, tmp_path / "soup"]:
        folder.rename(moved / folder.name)
    monkeypatch.chdir(moved / "ing0")  # neither where it was made nor the recipe's folder
    assert sha(replay_recipe(moved / "soup" / "recipe.yaml", tmp_path / "again")) == sha(moved / "soup")
    recipe = yaml.safe_load((tmp_path / "again" / "recipe.yaml").read_text())
    assert [m["ingredient"] for m in recipe["mix"]] == [str(Path("..") / "moved" / f"ing{i}") for i in range(2)]


def test_cooking_over_an_ingredient_is_refused(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    uniform_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "soup", progress=False)
    before = (folders[0] / "model.safetensors").read_bytes()
    for output in (folders[0], tmp_path):
        with pytest.raises(SoupError, match="a soup is never written over its ingredients"):
            replay_recipe(tmp_path / "soup", output, overwrite=True)
    assert (folders[0] / "model.safetensors").read_bytes() == before


def _edit(entry_number, **changes):
    def edit(recipe):
        if entry_number is None:
            recipe.update(changes)
        else:
            recipe["mix"][entry_number].update(changes)
            for key, value in changes.items():
                if value is None:
                    del recipe["mix"][entry_number][key]

    return edit


def _partial_layers(recipe):
    recipe["mix"][0].pop("weight")
    recipe["mix"][0]["layer_weights"] = {"classifier.bias": 1.0}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda r: [r["mix"][0].update(weight=-1), r["mix"][1].update(weight=2)],
            r"weights: ingredient '.*ing0': must be ≥ 0",
        ),
        (_edit(0, weight=float("nan")), r"weights: ingredient '.*ing0': must be a finite number"),
        (lambda r: [m.update(weight=0) for m in r["mix"]], "positive, finite sum"),
        (_edit(0, weight="heavy"), "mix entry 1 .*weight is not a number"),
        (_partial_layers, "layer weights do not match the soup's tensors"),
        (_edit(None, dtype=["fp16"]), "`dtype` must be a string"),
        (_edit(0, ingredient=["a"]), "mix entry 1: `ingredient` must be"),
        (_edit(1, sha256=None), "mix entry 2 .*needs `sha256`"),
        (_edit(None, mix={"ingredient": "a"}), "needs a non-empty `mix` list"),
    ],
)
def test_hand_edited_recipes_are_checked(make_ingredients, tmp_path, edit, message):
    folders = make_ingredients(2)
    uniform_soup(folders, judge=BiasJudge(), output_dir=tmp_path / "soup", progress=False)
    path = tmp_path / "soup" / "recipe.yaml"
    recipe = yaml.safe_load(path.read_text())
    edit(recipe)
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SoupError, match=message):
        replay_recipe(path, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_scoring_without_a_tokenizer_is_refused(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    for folder in folders:
        for file in folder.glob("tokenizer*"):
            file.unlink()
    with pytest.raises(SoupError, match=f"ingredient '{folders[0]}': no tokenizer files to score with"):
        uniform_soup(folders, "rte", tmp_path / "soup", glue_dir=GLUE_DIR, progress=False)
    assert not (tmp_path / "soup").exists()


def test_unreadable_recipe_file(tmp_path):
    (tmp_path / "recipe.yaml").write_text("mix: [unclosed")
    with pytest.raises(SoupError, match="recipe file .* cannot be read"):
        replay_recipe(tmp_path / "recipe.yaml", tmp_path / "out")


def test_greedy_needs_two_ingredients(make_ingredients):
    with pytest.raises(SoupError, match="at least two") as error:
        greedy_soup(make_ingredients(1), judge=BiasJudge(), progress=False)
    assert "allow_single" not in str(error.value)  # recipes take no such option; the merge command does
    assert "hf-soups merge --allow-single" in str(error.value)


def test_soup_command_on_a_folder_without_a_model_fails_before_loading_anything(tmp_path, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a tokenizer was loaded")

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", no_loading)
    empty = tmp_path / "pantry"
    empty.mkdir()
    assert main(["soup", "--task", "rte", str(empty), str(empty), "-o", str(tmp_path / "soup")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "soup").exists()


class AgreementJudge(BiasJudge):
    """Scores agreement with a teacher model's predictions on fixed random inputs; trains on the same inputs."""

    def __init__(self, teacher, vocab=49, rows=64):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.inputs = {"input_ids": torch.randint(5, vocab, (rows, 12), generator=generator)}
        with torch.no_grad():
            self.labels = teacher(**self.inputs).logits.argmax(-1)

    def score(self, model, split, return_predictions=False):
        with torch.no_grad():
            logits = model.eval()(**self.inputs).logits
        predictions, labels = logits.argmax(-1).numpy(), self.labels.numpy()
        return EvalResult(
            "toy",
            split,
            {"accuracy": self.main_metric(predictions, labels)},
            "accuracy",
            len(labels),
            {},
            predictions,
            logits.numpy(),
            labels,
        )

    def train_batches(self, model):
        yield self.inputs, self.labels

    def loss(self, logits, labels):
        return torch.nn.functional.cross_entropy(logits, labels)


@pytest.mark.parametrize("granularity", ["ingredient", "layer"])
def test_learned_weights_sum_to_one_and_beat_uniform(make_ingredients, tmp_path, granularity):
    from transformers import AutoModelForSequenceClassification

    folders = make_ingredients(3)
    big = make_ingredients(
        2, name="far", initializer_range=0.5
    )  # far from the teacher: they pull the uniform soup away
    teacher = AutoModelForSequenceClassification.from_pretrained(folders[0])
    kitchen = Kitchen(folders[:1] + big, AgreementJudge(teacher), progress=False)
    options = {"granularity": granularity, "epochs": 30, "lr": 0.2}
    report = run_in_kitchen(kitchen, "learned", tmp_path / "soup", options=options)
    weights = [i.weight for i in report.record.ingredients]
    assert sum(weights) == pytest.approx(1.0)
    scores = {r.name: r.scores["select"]["accuracy"] for r in report.record.results}
    assert scores["learned"] >= scores["uniform"]
    recipe = yaml.safe_load((tmp_path / "soup" / "recipe.yaml").read_text())
    if granularity == "ingredient":
        assert weights[0] > 1 / 3  # it learned to lean on the teacher
    else:
        per_tensor = [entry["layer_weights"] for entry in recipe["mix"]]
        assert all(sum(w[name] for w in per_tensor) == pytest.approx(1.0) for name in per_tensor[0])
    assert sha(replay_recipe(tmp_path / "soup", tmp_path / "again")) == sha(tmp_path / "soup")


def test_a_mean_goes_beside_a_gpu_model_only_where_every_copy_a_recipe_holds_fits(monkeypatch):
    plan = MergePlan({"w": (1000,)}, {"w": [torch.bfloat16]})  # 4,000 bytes of fp32 mean
    monkeypatch.setattr("torch.cuda.mem_get_info", lambda device: (40_000, 80_000))  # half of it: room for 5
    gpu = torch.device("cuda", 0)
    assert [mean_device(gpu, plan, copies) for copies in (1, 5, 6)] == [gpu, gpu, torch.device("cpu")]
    assert mean_device(torch.device("cpu"), plan, 100) == torch.device("cpu")


def test_learned_soup_fails_clearly_when_it_cannot_fit(make_ingredients, monkeypatch):
    monkeypatch.setattr("os.sysconf", lambda name: 1)
    with pytest.raises(SoupError, match="learned soup: needs about .* memory"):
        learned_soup(make_ingredients(2), judge=BiasJudge(), progress=False)


@pytest.mark.slow
@needs_glue
def test_soup_command_on_rte_end_to_end(make_ingredients, tmp_path, capsys):
    folders = make_ingredients(3)
    out = tmp_path / "soup"
    argv = [
        "soup",
        "--recipe",
        "greedy",
        "--task",
        "rte",
        *map(str, folders),
        "-o",
        str(out),
        "--glue-dir",
        str(GLUE_DIR),
        "--ensemble",
        "--batch-size",
        "64",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    for row in ["best individual", "greedy", "uniform", "ensemble", "95% CI"]:
        assert row in table
    record = json.loads((out / "soup.json").read_text())
    # selected on RTE's train:heldout (10% of 2,490 rows), reported on the whole validation split
    assert (record["recipe"]["select_split"], record["recipe"]["report_split"]) == ("train:heldout", "validation")
    assert record["recipe"]["split_rule"]["rows"] == {"select": 249, "report": 277}
    assert record["recipe"]["options"] == {"greedy_rule": "strict", "min_gain": 0.0}
    card = ModelCard.load(out / "README.md")
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}  # the model-index reports its split
    assert "`train:heldout`" in card.text and yaml.safe_load((out / "recipe.yaml").read_text())["select_split"] == (
        "train:heldout"
    )
    assert {r["name"] for r in record["results"]} == {
        "best individual",
        "greedy",
        "uniform",
        "ensemble",
        "ensemble (greedy)",
    }
    assert all(r["gain"] is None or r["gain"]["resamples"] >= 1000 for r in record["results"])
    for name in ["recipe.yaml", "README.md", "greedy_trajectory.png", "ingredients_vs_soups.png", "model.safetensors"]:
        assert (out / name).is_file(), name
    assert "model-soup" in (out / "README.md").read_text()


@needs_glue
@pytest.mark.parametrize(
    ("select", "report"),
    [
        ("validation", "validation"),
        ("validation:select", "validation"),
        ("train:heldout", "train"),
        ("train:heldout", "train:heldout"),
        ("validation:report", "validation:report"),
    ],
)
def test_a_selection_split_that_overlaps_the_report_split_is_refused(make_ingredients, select, report):
    with pytest.raises(SoupError, match=f"select_split '{select}' overlaps report_split '{report}'"):
        uniform_soup(
            make_ingredients(2), "rte", glue_dir=GLUE_DIR, select_split=select, report_split=report, progress=False
        )


@pytest.mark.slow
def test_two_process_greedy_equals_one_process(make_ingredients, tmp_path):
    import subprocess

    from helpers import write_rte

    import hf_soups.cli

    write_rte(tmp_path / "glue", 41)  # odd, so the two processes get uneven batches
    write_rte(tmp_path / "glue", 100, seed=1, file="train.tsv")  # the 10 held-out rows it is selected on
    folders = make_ingredients(3)
    args = ["soup", "--task", "rte", *map(str, folders), "--glue-dir", str(tmp_path / "glue"), "--batch-size", "4"]
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    launch, env = accelerate_launch(2)
    launch = [*launch, hf_soups.cli.__file__]
    done = subprocess.run(
        [*launch, *args, "-o", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("soup written to") == 1  # only the main process writes and prints
    for bar in ("tasting ingredients", "greedy soup"):  # and draws the progress bars
        assert done.stderr.count(f"{bar}:   0%") == 1, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "soup.json").read_text()) for name in ("one", "two"))
    assert [i["kept"] for i in one["ingredients"]] == [i["kept"] for i in two["ingredients"]]
    assert one["results"] == two["results"]
    assert one["recipe"]["trajectory"] == two["recipe"]["trajectory"]
    assert sha(tmp_path / "one") == sha(tmp_path / "two")


@pytest.mark.slow
def test_greedy_killed_mid_run_resumes_from_its_state(make_ingredients, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from helpers import write_rte

    write_rte(tmp_path / "glue", 40)
    write_rte(tmp_path / "glue", 100, seed=1, file="train.tsv")
    folders = make_ingredients(4)
    args = [
        sys.executable,
        "-m",
        "hf_soups.cli",
        "soup",
        "--task",
        "rte",
        *map(str, folders),
        "--glue-dir",
        str(tmp_path / "glue"),
    ]
    assert subprocess.run([*args, "-o", str(tmp_path / "clean")], capture_output=True).returncode == 0
    process = subprocess.Popen([*args, "-o", str(tmp_path / "soup")], stderr=subprocess.DEVNULL)
    state_file = tmp_path / "soup.greedy-state" / "state.json"
    deadline = time.monotonic() + 120
    while not (state_file.exists() and json.loads(state_file.read_text())["step"] >= 1):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "soup").exists()
    assert subprocess.run([*args, "-o", str(tmp_path / "soup"), "--resume"], capture_output=True).returncode == 0
    clean, resumed = (json.loads((tmp_path / name / "soup.json").read_text()) for name in ("clean", "soup"))
    assert [i["kept"] for i in clean["ingredients"]] == [i["kept"] for i in resumed["ingredients"]]
    assert sha(tmp_path / "soup") == sha(tmp_path / "clean")


def test_existing_output_folder_is_refused_before_any_work(make_ingredients, tmp_path):
    (tmp_path / "soup").mkdir()
    judge = BiasJudge()
    with pytest.raises(SoupError, match="exists"):
        greedy_soup(make_ingredients(2), judge=judge, output_dir=tmp_path / "soup", progress=False)
    assert judge.calls == 0
