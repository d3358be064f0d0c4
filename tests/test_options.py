"""Options declared once: the flags, the Python API and the callback take their defaults from hf_soups.options."""

import dataclasses
import inspect

import pytest

from hf_soups.callback import SoupCallback
from hf_soups.cli import build_parser
from hf_soups.merge import merge_models
from hf_soups.options import (
    FisherOptions,
    JudgeOptions,
    LearnedOptions,
    MergeOptions,
    RegMeanOptions,
    ReportFileOptions,
    SoupFolderOptions,
    StatisticsOptions,
)
from hf_soups.recipes import RECIPES, make_kitchen
from hf_soups.recipes.fisher import cook_fisher
from hf_soups.recipes.learned import cook_learned
from hf_soups.recipes.regmean import cook_regmean
from hf_soups.soups import learned_soup, run_recipe

ARGV = {"merge": ["merge", "a", "b", "-o", "out"], "soup": ["soup", "a", "b", "--task", "rte", "-o", "out"]}


def defaults(function):
    return {n: p.default for n, p in inspect.signature(function).parameters.items() if p.default is not p.empty}


@pytest.mark.parametrize(
    ("command", "options", "function"),
    [
        ("merge", MergeOptions, merge_models),
        ("soup", JudgeOptions, make_kitchen),
        ("soup", LearnedOptions, cook_learned),
        ("soup", LearnedOptions, learned_soup),
        ("soup", StatisticsOptions, cook_fisher),
        ("soup", FisherOptions, cook_fisher),
        ("soup", StatisticsOptions, cook_regmean),
        ("soup", RegMeanOptions, cook_regmean),
    ],
)
def test_flags_and_python_api_share_the_defaults(command, options, function, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(ARGV[command])
    api = defaults(function)
    for field in dataclasses.fields(options):
        parsed = getattr(args, field.name)
        assert api[field.name] == field.default, field.name
        # a string default goes through its check (--max-shard-size 50GB is 50 * 10**9 bytes)
        check = field.metadata.get("check")
        assert parsed == (check(field.default, field.name) if check and field.default is not None else field.default)


def test_the_ensemble_default_is_one_value_in_the_cli_the_api_and_the_callback(tmp_path):
    assert build_parser().parse_args(ARGV["soup"]).ensemble is True
    assert build_parser().parse_args([*ARGV["soup"], "--no-ensemble"]).ensemble is False
    assert defaults(run_recipe)["ensemble"] is True
    assert SoupCallback(tmp_path / "pantry").ensemble is True


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_option_is_a_soup_flag(recipe):
    flags = {action.dest for action in subcommand("soup")._actions}
    assert set(RECIPES[recipe].options) <= flags


def test_every_field_has_help():
    from hf_soups import options

    classes = [c for c in vars(options).values() if dataclasses.is_dataclass(c)]
    assert len(classes) >= 6
    assert all(f.metadata.get("help") for c in classes for f in dataclasses.fields(c))


def subcommand(name):
    return build_parser()._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize(
    ("command", "options", "names"),
    [
        ("merge", SoupFolderOptions, ("output",)),
        ("soup", SoupFolderOptions, ("output",)),
        ("cook", SoupFolderOptions, ("output",)),
        ("cook", MergeOptions, ("overwrite",)),
        ("evaluate", JudgeOptions, ("glue_dir", "batch_size")),
        ("evaluate", ReportFileOptions, ("output",)),
        ("diagnose", JudgeOptions, ("glue_dir", "batch_size")),
        ("diagnose", ReportFileOptions, ("output",)),
    ],
)
def test_shared_flags_come_from_one_declaration(command, options, names):
    actions = {action.dest: action for action in subcommand(command)._actions}
    for field in dataclasses.fields(options):
        if field.name in names:
            action = actions[field.name]
            assert action.help == field.metadata["help"], (command, field.name)
            assert action.required is (field.default is dataclasses.MISSING), (command, field.name)
