"""The `hf-soups` command line: exit codes, one-line errors, help."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_rte

from hf_soups.card import is_generated
from hf_soups.cli import build_parser, main


def test_merge_command(make_ingredients, tmp_path, capsys):
    folders = make_ingredients(2)
    assert (
        main(["merge", *map(str, folders), "-o", str(tmp_path / "soup"), "--weights", "3,1", "--dtype", "bf16"]) == 0
    )
    assert (tmp_path / "soup" / "model.safetensors").exists()
    assert "soup written to" in capsys.readouterr().out


def test_merge_writes_its_recipe_and_card_and_cooks_again(make_ingredients, tmp_path):
    """A merge is a soup too: ``hf-soups cook`` re-cooks it bit for bit from its recipe.yaml."""
    folders = make_ingredients(3)
    soup, again = tmp_path / "soup", tmp_path / "again"
    assert main(["merge", *map(str, folders), "-o", str(soup), "--weights", "3,1,0.5", "--dtype", "fp16"]) == 0
    assert is_generated((soup / "README.md").read_text()) and "hf-soups merge" in (soup / "README.md").read_text()
    assert main(["cook", str(soup), "-o", str(again)]) == 0
    assert (again / "model.safetensors").read_bytes() == (soup / "model.safetensors").read_bytes()


def test_bad_input_is_one_line_and_exit_2(make_ingredients, tmp_path):
    folders = make_ingredients(1)
    result = subprocess.run(
        [sys.executable, "-m", "hf_soups.cli", "merge", str(folders[0]), "-o", str(tmp_path / "soup")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "hf-soups merge: error: only one ingredient" in result.stderr
    assert not (tmp_path / "soup").exists()


def test_help_explains_every_option():
    # `python -m hf_soups`, the command as `hf-soups` runs it, whatever is on PATH
    result = subprocess.run([sys.executable, "-m", "hf_soups", "merge", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in [
        "--output",
        "--weights",
        "--dtype",
        "--overwrite",
        "--allow-single",
        "--checkpoints",
        "--max-shard-size",
    ]:
        assert option in result.stdout
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command, parser in subparsers.choices.items():
        for action in parser._actions:
            assert action.help, f"hf-soups {command} {'/'.join(action.option_strings) or action.dest}: no help"


def test_package_exports_resolve_lazily():
    import hf_soups

    assert set(hf_soups.__all__) == {"__version__", *hf_soups._EXPORTS}
    assert all(callable(getattr(hf_soups, name)) for name in hf_soups._EXPORTS)
    check = (
        "import sys, hf_soups, hf_soups.cli; hf_soups.cli.build_parser(); "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert done.stdout.strip() == "[]"  # neither `import hf_soups` nor `hf-soups --help` loads torch


def test_renamed_names_warn_and_do_what_their_new_names_do(make_ingredients, tmp_path):
    """Each name that issue 31 gave a single meaning still works, with a FutureWarning naming its successor."""
    from helpers import BiasJudge

    import hf_soups
    from hf_soups.recipes import Kitchen
    from hf_soups.soups import cook_recipe

    folders = make_ingredients(2)
    ingredients = hf_soups.resolve_ingredients(folders)
    with pytest.warns(FutureWarning, match="call hf_soups.validate_ingredients"):
        assert hf_soups.validate(ingredients) == hf_soups.validate_ingredients(ingredients)
    kitchen = Kitchen(folders, BiasJudge(), progress=False)
    with pytest.warns(FutureWarning, match="call Kitchen.tastings"):
        assert kitchen.tasted() is kitchen.tastings()
    with pytest.warns(FutureWarning, match="call Kitchen.taste_ingredients"):
        assert kitchen.taste_all(uniform=False)[1] is None
    with pytest.warns(FutureWarning, match="call run_in_kitchen"):
        cook_recipe(kitchen, "uniform", tmp_path / "soup")
    with pytest.warns(FutureWarning, match="call hf_soups.replay_recipe"):
        again = hf_soups.cook(tmp_path / "soup", tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tmp_path / "soup" / "model.safetensors").read_bytes()
    callback = hf_soups.SoupCallback(tmp_path / "pantry")
    with pytest.warns(FutureWarning, match="call SoupCallback.make_soup"):
        with pytest.raises(hf_soups.SoupError, match="make_soup: give the Trainer"):
            callback.cook()


def test_version_comes_from_the_package_metadata():
    import importlib.metadata

    import hf_soups

    assert hf_soups.__version__ == importlib.metadata.version("hf-soups")


@pytest.mark.slow
def test_a_log_file_holds_the_results_table_on_lines_of_its_own(make_ingredients, tmp_path):
    # progress bars on stderr end with a carriage return, not a new line: in one file with stdout, the table's
    # first line followed a bar's
    write_rte(tmp_path / "glue", 20)
    write_rte(tmp_path / "glue", 50, seed=1, file="train.tsv")
    folders = make_ingredients(2)
    log = tmp_path / "log"
    with log.open("w") as file:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "hf_soups.cli",
                "soup",
                *map(str, folders),
                "--task",
                "rte",
                "--glue-dir",
                str(tmp_path / "glue"),
                "-o",
                str(tmp_path / "soup"),
            ],
            stdout=file,
            stderr=subprocess.STDOUT,
            check=True,
        )
    lines = log.read_bytes().decode().split("\n")  # a carriage return is not a line end here
    assert any(line.startswith("model ") and "select accuracy" in line for line in lines), lines[-12:]


def test_no_parser_of_the_command_line_or_the_examples_takes_an_abbreviated_flag(capsys):
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert all(not parser.allow_abbrev for parser in subparsers.choices.values())
    examples = Path(__file__).resolve().parents[1] / "examples" / "glue"
    for script, argv in [
        (
            "run_glue_sweep.py",
            ["--model-name-or-path", "m", "--task", "rte", "--output-dir", "o", "--learning-rate", "1"],
        ),
        ("soup_from_hub.py", ["a", "--task", "rte", "--output-dir", "soup", "--over"]),
    ]:
        spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), examples / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(SystemExit) as exit:
            module.parse_args(argv)
        assert exit.value.code == 2 and "unrecognized arguments: --" in capsys.readouterr().err, script
