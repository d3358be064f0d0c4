"""The soup model card: metadata, body, round trip through ModelCard.load, plain merges."""

from __future__ import annotations

import ast
import importlib.resources
import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import BiasJudge
from huggingface_hub import ModelCard

from hf_soups import uniform_soup
from hf_soups.atomic_folder import TMP_SUFFIX
from hf_soups.card import build_card, common_license, is_generated, write_card
from hf_soups.cli import main
from hf_soups.errors import SoupError
from hf_soups.record import IngredientRecord, RecipeRecord, SoupRecord, SoupResult

SHA = "0123456789abcdef0123456789abcdef01234567"


def soup_record(
    licenses: tuple[str | None, ...] = (None, None, None), folders: list[Path] | None = None
) -> SoupRecord:
    ingredients = []
    for i, _ in enumerate(licenses):
        common = dict(
            weight=0.5 if i < 2 else 0.0,
            kept=i < 2,
            hyperparameters={"learning_rate": 2e-5 * (i + 1)},
            scores={"select": {"accuracy": 0.6 + i / 100}},
        )
        if folders:
            ingredients.append(IngredientRecord(spec=str(folders[i]), source="local", **common))
        else:
            ingredients.append(
                IngredientRecord(
                    spec=f"me/bert-rte@lr{i}", source="hub", repo_id="me/bert-rte", revision=SHA, **common
                )
            )
    return SoupRecord(
        hf_soups_version="0.1.0",
        dtype="float32",
        ingredients=ingredients,
        base_model="google-bert/bert-base-uncased",
        model_type="bert",
        architecture="BertForSequenceClassification",
        recipe=RecipeRecord(
            name="greedy",
            task="rte",
            metric="accuracy",
            select_split="validation:select",
            report_split="validation:report",
            split_rule={"seed": 0, "rows": {"select": 138, "report": 139}},
            trajectory=[
                {"spec": "me/bert-rte@lr1", "score": 0.61, "kept": True},
                {"spec": "me/bert-rte@lr0", "score": 0.62, "kept": True},
            ],
        ),
        results=[
            SoupResult("best individual", {"select": {"accuracy": 0.61}, "report": {"accuracy": 0.63}}),
            SoupResult(
                "uniform",
                {"select": {"accuracy": 0.62}, "report": {"accuracy": 0.635}},
                {"delta": 0.004, "low": -0.008, "high": 0.016, "resamples": 1000},
            ),
            SoupResult(
                "greedy",
                {"select": {"accuracy": 0.64}, "report": {"accuracy": 0.652}},
                {"delta": 0.022, "low": 0.005, "high": 0.039, "resamples": 1000},
            ),
        ],
    )


def test_template_is_package_data():
    assert (importlib.resources.files("hf_soups.model_cards") / "soup_card.md.j2").is_file()


def test_card_metadata_and_body(tmp_path):
    soup = tmp_path / "soup"
    soup.mkdir()
    soup_record().save(soup)
    (soup / "greedy_trajectory.png").write_bytes(b"png")
    (soup / "vocab.txt").write_text("[PAD]\n")

    card = build_card(soup, repo_id="me/rte-soup")
    data = card.data
    assert data.library_name == "transformers" and data.base_model == "google-bert/bert-base-uncased"
    assert data.tags == ["model-soup", "merge", "hf-soups", "rte"]
    assert data.datasets == ["nyu-mll/glue"] and data.pipeline_tag == "text-classification"
    assert data.license is None  # the ingredients' cards are not known here
    [result] = data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_split) == ("accuracy", 0.652, "validation")
    assert (result.dataset_type, result.dataset_config, data.model_name) == ("nyu-mll/glue", "rte", "me/rte-soup")

    text = card.text
    assert "arXiv:2203.05482" in text
    assert (
        f"| 3 | [me/bert-rte@lr2](https://huggingface.co/me/bert-rte/tree/{SHA}) | `{SHA[:12]}` | "
        "learning_rate=6e-05 | 62.0 | no | 0 |" in text
    )
    assert "| uniform | 62.0 | 63.5 | +0.4 (95% CI −0.8 … +1.6) |" in text
    assert "**uniform**: the 95% interval of the gain contains 0" in text
    assert "**greedy**: better than the best individual model" in text
    assert "`validation:select` (138 examples)" in text and "(n = 139)" in text
    assert "the `model-index` metadata gives them under GLUE's `validation` split" in text  # the slice: in the text
    assert "![Greedy soup trajectory: held-out score after each candidate](greedy_trajectory.png)" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("me/rte-soup")' in text
    assert 'AutoTokenizer.from_pretrained("me/rte-soup")' in text
    assert "hf-soups cook recipe.yaml -o soup" in text
    assert "The scores come from 138 selection" in text and "GLUE test set" in text
    assert "| 1 | `me/bert-rte@lr1` | 61.0 | yes |" in text  # points, as in the results table (was 0.61)


@pytest.mark.parametrize(
    ("local", "stock_base", "downloadable"),
    [
        (False, None, True),
        (True, None, False),
        (False, {"ingredient": f"me/bert@{SHA}", "head": None}, True),
        (False, {"ingredient": "../base", "head": None}, False),
        (False, {"ingredient": f"me/bert@{SHA}", "head": "../pantry/start-head.safetensors"}, False),
    ],
)
def test_the_recook_snippet_downloads_the_recipe_only_when_it_names_no_local_file(
    tmp_path, local, stock_base, downloadable
):
    soup = tmp_path / "soup"
    soup.mkdir()
    record = soup_record(folders=[tmp_path / f"run{i}" for i in range(3)] if local else None)
    if stock_base:
        record.recipe.name, record.recipe.options = "stock", {"base": stock_base, "uniform_tensors": [], "clamped": 0}
    record.save(soup)
    text = build_card(soup, repo_id="me/rte-soup").text
    assert ("hf download me/rte-soup recipe.yaml" in text) is downloadable
    assert ("hf-soups cook soup/recipe.yaml -o soup-again" in text) is not downloadable
    assert ("local ones by the sha256 of their weight files" in text) is not downloadable
    assert "every ingredient is pinned to a commit" not in text


def test_a_recipe_soups_card_names_its_folder_not_the_temporary_one_it_was_written_in(make_ingredients, tmp_path):
    uniform_soup(make_ingredients(2), judge=BiasJudge(), output_dir=tmp_path / "my-soup", progress=False)
    text = (tmp_path / "my-soup" / "README.md").read_text()
    assert "hf-soups cook my-soup/recipe.yaml -o my-soup-again" in text and TMP_SUFFIX not in text
    assert 'from_pretrained("my-soup")' in text and is_generated(text)


def test_a_merges_card_names_its_folder_not_the_temporary_one_it_was_written_in(make_ingredients, tmp_path):
    assert main(["merge", *map(str, make_ingredients(2)), "-o", str(tmp_path / "my-merge")]) == 0
    text = (tmp_path / "my-merge" / "README.md").read_text()
    assert text.split("---\n")[2].lstrip().startswith("# my-merge\n") and TMP_SUFFIX not in text
    assert 'from_pretrained("my-merge")  # this folder, or the Hub repo it is uploaded to' in text


@pytest.mark.parametrize("recipe", [False, True])
def test_folder_names_with_line_breaks_keep_the_card_whole_and_its_snippets_runnable(
    make_ingredients, tmp_path, recipe
):
    """A folder name with a line break (or a quote) is one line in the heading and one quoted word in each snippet,
    which bash and Python read back as the name."""
    [first, second] = make_ingredients(2)
    ingredient, soup = second.rename(tmp_path / "lr\n2e-5 'b'"), tmp_path / 'my\n"soup"'
    if recipe:
        uniform_soup([first, ingredient], judge=BiasJudge(), output_dir=soup, progress=False)
    else:
        assert main(["merge", str(first), str(ingredient), "-o", str(soup)]) == 0
    body = (soup / "README.md").read_text().split("---\n")[2]
    assert '\n# my "soup"\n' in body
    snippets = dict(re.findall(r"```(python|bash)\n(.*?)```", body, flags=re.DOTALL))
    calls = [
        ast.literal_eval(node.args[0])
        for node in ast.walk(ast.parse(snippets["python"]))
        if isinstance(node, ast.Call) and node.args
    ]
    assert calls == [soup.name, soup.name]
    [command] = snippets["bash"].splitlines()
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, check=True).stdout
    expected = (
        ["hf-soups", "cook", f"{soup.name}/recipe.yaml", "-o", f"{soup.name}-again"]
        if recipe
        else ["hf-soups", "merge", first.name, ingredient.name, "--weights", "0.5,0.5", "-o", "soup"]
    )
    assert words.decode().split("\0")[:-1] == expected


def test_a_card_for_no_repo_yet_names_no_repo_in_its_snippets(tmp_path):
    """Written before the repo is known (uploaded later with `hf upload`, say), the card names the folder only where a
    folder is meant: the pinned recipe is cooked from the folder's own copy, not downloaded from a made-up repo."""
    soup = tmp_path / "rte-soup"
    soup.mkdir()
    soup_record().save(soup)
    text = build_card(soup).text
    assert "hf download" not in text and "hf-soups cook rte-soup/recipe.yaml -o rte-soup-again" in text
    assert 'from_pretrained("rte-soup")  # this folder, or the Hub repo it is uploaded to' in text
    pushed = build_card(soup, repo_id="me/rte-soup").text
    assert "hf download me/rte-soup recipe.yaml --local-dir ." in pushed and "# this folder" not in pushed


def test_a_card_judged_on_the_trainers_eval_dataset_says_so_and_is_titled_by_its_folder(tmp_path):
    soup = tmp_path / "mrpc" / "soup"  # SoupCallback's default: <Trainer output_dir>/soup
    soup.mkdir(parents=True)
    record = soup_record()
    record.recipe.task, record.recipe.select_split, record.recipe.report_split = (
        None,
        "eval_dataset:select",
        "eval_dataset:report",
    )
    record.recipe.split_rule = {"source": "Trainer eval_dataset", "seed": 0, "rows": {"select": 20, "report": 21}}
    record.save(soup)
    card = build_card(soup)
    assert card.data.to_dict()["model-index"] == [{"name": "mrpc-soup", "results": []}]
    assert card.data.datasets is None and "rte" not in card.data.tags
    text = ModelCard(str(card)).text
    assert text.lstrip().startswith("# mrpc-soup\n") and "GLUE" not in text
    assert "chosen by accuracy on `eval_dataset:select`" in text and "`eval_dataset:report` (n = 21)" in text
    assert "Not measured: data other than `eval_dataset:select` and `eval_dataset:report`" in text


def test_written_card_loads_back_with_the_same_metadata(tmp_path):
    soup_record().save(tmp_path)
    built = build_card(tmp_path, repo_id="me/rte-soup")
    path = write_card(tmp_path, repo_id="me/rte-soup")
    assert path == tmp_path / "README.md"
    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == built.data.to_dict()
    assert loaded.data.eval_results == built.data.eval_results


def test_plain_merge_card_degrades_gracefully(tmp_path):
    record = SoupRecord(
        hf_soups_version="0.1.0",
        dtype="bfloat16",
        architecture="T5ForConditionalGeneration",
        ingredients=[
            IngredientRecord(spec="runs/a", source="local", weight=0.5),
            IngredientRecord(spec="me/t5@v1", source="hub", repo_id="me/t5", revision=SHA, weight=0.5),
        ],
    )
    card = build_card(record)
    assert card.data.pipeline_tag == "text2text-generation"
    assert card.data.eval_results is None and card.data.datasets is None
    assert card.data.tags == ["model-soup", "merge", "hf-soups"]
    assert "no evaluation was run" in card.text and "## Results" not in card.text
    assert f"hf-soups merge runs/a me/t5@{SHA} --weights 0.5,0.5 -o soup" in card.text
    assert "AutoModelForSeq2SeqLM" in card.text
    ModelCard(str(card))  # the metadata parses


def test_license_only_when_all_kept_ingredients_agree(tmp_path):
    folders = []
    for i, license in enumerate(["apache-2.0", "apache-2.0", "mit"]):
        folder = tmp_path / f"ing{i}"
        folder.mkdir()
        (folder / "README.md").write_text(f"---\nlicense: {license}\n---\n# ingredient\n")
        folders.append(folder)
    record = soup_record(folders=folders)  # the third ingredient (mit) is not kept
    assert common_license(record) == "apache-2.0"
    record.ingredients[2].kept = True
    assert common_license(record) is None
    (folders[0] / "README.md").unlink()
    record.ingredients[2].kept = False
    assert common_license(record) is None


@pytest.mark.parametrize(
    ("where", "stated", "given", "expected"),
    [
        ("card", "apache-2.0", None, "apache-2.0"),
        ("config", "mit", None, "mit"),
        ("stock base", "apache-2.0", None, "apache-2.0"),
        (None, None, "cc-by-4.0", "cc-by-4.0"),  # the base states none: license= names it
        ("card", "apache-2.0", "mit", "mit"),  # given, it is what the card states
        (None, None, None, None),
    ],
)
def test_the_card_carries_the_base_models_license_else_the_one_given(tmp_path, where, stated, given, expected):
    base = tmp_path / "base"
    base.mkdir()
    config = {"model_type": "bert", **({"license": stated} if where == "config" else {})}
    (base / "config.json").write_text(json.dumps(config))
    if where in ("card", "stock base"):
        (base / "README.md").write_text(f"---\nlicense: {stated}\n---\n# base\n")
    record = soup_record()
    record.base_model = None if where == "stock base" else str(base)
    if where == "stock base":
        record.recipe.name, record.recipe.options = "stock", {"base": {"ingredient": str(base), "head": None}}
    card = build_card(record, license=given)
    assert card.data.license == expected and ModelCard(str(card)).data.license == expected


@pytest.mark.parametrize(
    ("where", "expected"), [("local", None), ("hub cache", "me/bert-base"), ("hub", "me/bert-base")]
)
def test_the_card_names_a_base_by_its_hub_id_never_by_a_local_path(tmp_path, where, expected):
    base = tmp_path / ("models--me--bert-base/snapshots/" + SHA if where == "hub cache" else "bert-base")
    base.mkdir(parents=True)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    record = soup_record(folders=[tmp_path / f"run{i}" for i in range(3)])
    record.base_model = "me/bert-base" if where == "hub" else str(base)
    card = build_card(record)
    assert card.data.base_model == expected and ModelCard(str(card)).data.base_model == expected
    assert card.data.license == (None if where == "hub" else "apache-2.0")  # a Hub base's card: not in the cache here
    text = str(card)
    assert str(tmp_path) not in text
    named = "[me/bert-base](https://huggingface.co/me/bert-base)" if expected else "`bert-base` (local)"
    assert f"fine-tuned checkpoints of {named}," in text.replace("\n", " ")


def test_missing_record(tmp_path):
    with pytest.raises(SoupError, match="no soup.json"):
        build_card(tmp_path)


def test_card_publishes_no_local_paths(tmp_path):
    folders = [tmp_path / "home" / "me" / f"run{i}" for i in range(3)]
    record = soup_record(folders=folders)
    record.recipe.split_rule["select"] = {"source": f"local:{tmp_path / 'glue'}", "seed": 0}
    record.recipe.options = {"cooked_from": str(tmp_path / "old" / "recipe.yaml")}
    record.recipe.trajectory = [{"spec": str(folders[1]), "score": 0.61, "kept": True}]
    record.results = []
    text = str(build_card(record))
    assert str(tmp_path) not in text
    assert "| 1 | `run0` (local) |" in text and "| `run1` |" in text
    assert "source: local:glue" in text and "cooked_from: recipe.yaml" in text
    record.recipe = None
    assert "hf-soups merge run0 run1 --weights" in str(build_card(record))


def test_full_model_soup_of_hub_ingredients_names_them_as_base_models():
    record = soup_record()
    record.base_model = None
    record.ingredients[0].repo_id = "me/bert-rte-seed1"
    data = build_card(record).data
    assert data.base_model == ["me/bert-rte", "me/bert-rte-seed1"]  # the kept ones
    assert data.to_dict()["base_model_relation"] == "merge"
    adapters = soup_record()  # a soup of adapters names their base, as before
    assert build_card(adapters).data.base_model == "google-bert/bert-base-uncased"


def test_written_card_is_stamped_and_edits_are_told_apart(tmp_path):
    soup_record().save(tmp_path)
    text = write_card(tmp_path, repo_id="me/rte-soup").read_text()
    assert is_generated(text)
    assert not is_generated(text.replace("me/rte-soup", "me/other"))
    assert not is_generated("---\nlicense: mit\n---\n# My own card\n")


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the Markdown table under the line starting with ``header`` (``\\|`` kept in cells)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(re.split(r"(?<!\\)\|", line)[1:-1])
    return rows


@pytest.mark.parametrize(
    "name, shown",
    [
        ("run|lr=2e-5", "`run\\|lr=2e-5`"),
        ("run\nlr=2e-5", "`run lr=2e-5`"),
        ("run\r\nlr", "`run lr`"),
        ("run\u2028lr", "`run lr`"),
        ("a|b\n|c", "`a\\|b \\|c`"),
        ("a`b", "``a`b``"),
        ("`run`", "`` `run` ``"),
        ("a``b`", "``` a``b` ```"),
    ],
)
def test_a_folder_name_with_a_pipe_a_newline_or_a_backtick_keeps_its_table_rows_and_code_whole(tmp_path, name, shown):
    folders = [tmp_path / name, tmp_path / "run1", tmp_path / "run2"]
    record = soup_record(folders=folders)
    record.recipe.trajectory = [{"spec": str(folders[0]), "score": 0.61, "kept": True}]
    text = str(build_card(record))
    ingredients = table_rows(text, "| # | Ingredient |")
    trajectory = table_rows(text, "| Step | Candidate |")
    assert len(ingredients) == 2 + 3 and all(len(row) == 7 for row in ingredients)
    assert len(trajectory) == 2 + 1 and all(len(row) == 4 for row in trajectory)
    assert ingredients[2][1] == f" {shown} (local) " and trajectory[2][1] == f" {shown} "


def test_the_card_counts_the_tensors_model_stock_clamped():
    record = soup_record()
    record.recipe.name = "stock"
    record.recipe.options = {"base": {"ingredient": "me/bert", "head": None}, "uniform_tensors": [], "clamped": 3}
    text = str(build_card(record))
    assert "In 3 tensor(s) the task vectors disagree on average (cos θ < 0): cos θ is\nclamped to 0 there" in text
    record.recipe.options["clamped"] = 0
    assert "disagree on average" not in str(build_card(record))
