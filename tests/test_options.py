"""Options declared once: the flags, the Python API and the callback take their defaults from hf_soups.options."""

import dataclasses
import inspect

import pytest

from hf_soups import SoupError
from hf_soups.callback import OPTION_GROUPS, SoupCallback
from hf_soups.cli import build_parser
from hf_soups.merge import merge_models
from hf_soups.options import (
    CollectOptions,
    CookOptions,
    FisherOptions,
    JudgeOptions,
    LearnedOptions,
    MergeOptions,
    PublishOptions,
    PushOptions,
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
        if field.metadata.get("callback_only") or f"--{field.name}" in ARGV[command]:
            continue
        parsed = getattr(args, field.name)
        assert api[field.name] == field.default, field.name
        # a string default goes through its check (--max-shard-size 50GB is 50 * 10**9 bytes)
        check = field.metadata.get("check")
        assert parsed == (check(field.default, field.name) if check and field.default is not None else field.default)


def test_the_ensemble_default_is_one_value_in_the_cli_the_api_and_the_callback(tmp_path):
    assert build_parser().parse_args(ARGV["soup"]).ensemble is True
    assert build_parser().parse_args([*ARGV["soup"], "--no-ensemble"]).ensemble is False
    assert defaults(run_recipe)["ensemble"] is True
    assert SoupCallback(tmp_path / "pantry").cooking.ensemble is True


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
        ("diagnose", JudgeOptions, ("task",)),
        ("merge", PushOptions, ("push_to_hub", "private", "token", "license")),
        ("soup", PushOptions, ("push_to_hub", "private", "token", "license")),
        ("push", PushOptions, ("private", "token", "license")),
    ],
)
def test_shared_flags_come_from_one_declaration(command, options, names):
    actions = {action.dest: action for action in subcommand(command)._actions}
    for field in dataclasses.fields(options):
        if field.name in names:
            action = actions[field.name]
            assert action.help == field.metadata["help"], (command, field.name)
            assert action.required is (field.default is dataclasses.MISSING), (command, field.name)


def test_the_callbacks_options_are_the_flags_declarations_or_callback_only():
    """Every field of the callback's option objects is an ``hf-soups soup`` flag made from the same declaration
    (same help, same default), or marked callback-only (a dataset object, a Hub token, when to cook) and so made
    into no command's flag (``merge --checkpoints`` is MergeOptions' own field)."""
    assert set(OPTION_GROUPS.values()) == {CollectOptions, CookOptions, JudgeOptions, PublishOptions}
    soup = {action.dest: action for action in subcommand("soup")._actions}
    commands = build_parser()._subparsers._group_actions[0].choices
    every_flag = {(action.dest, action.help) for command in commands.values() for action in command._actions}
    for options in OPTION_GROUPS.values():
        for field in dataclasses.fields(options):
            if field.metadata.get("callback_only"):
                assert (field.name, field.metadata["help"]) not in every_flag, field.name
            else:
                assert soup[field.name].help == field.metadata["help"], field.name
                assert soup[field.name].default == field.default, field.name


@pytest.mark.parametrize(
    ("flat", "grouped"),
    [
        ({}, {}),
        (
            {"checkpoints": True, "pin_head": "probe", "ema": [0.99, 0.999]},
            {"collect": CollectOptions(checkpoints=True, pin_head="probe", ema=(0.99, 0.999))},
        ),
        (
            {"recipe": "bagged", "ensemble": False, "cook_on_end": True, "sweep_size": 3, "entries": "last:2"},
            {
                "cooking": CookOptions(
                    recipe="bagged", ensemble=False, cook_on_end=True, sweep_size=3, entries="last:2"
                )
            },
        ),
        (
            {"task": "rte", "glue_dir": "glue", "select_split": "validation:select", "batch_size": 8, "seed": 2},
            {
                "judge": JudgeOptions(
                    task="rte", glue_dir="glue", select_split="validation:select", batch_size=8, seed=2
                )
            },
        ),
        (
            {"output_dir": "soup", "push_to_hub": True, "hub_model_id": "me/soup", "license": "mit"},
            {"publish": PublishOptions(output_dir="soup", push_to_hub=True, hub_model_id="me/soup", license="mit")},
        ),
    ],
)
def test_flat_keywords_and_grouped_objects_make_the_same_callback(tmp_path, flat, grouped):
    by_keyword, by_object = SoupCallback(tmp_path / "pantry", **flat), SoupCallback(tmp_path / "pantry", **grouped)
    for group in OPTION_GROUPS:
        assert getattr(by_keyword, group) == getattr(by_object, group), group
    assert by_keyword.pantry.path == by_object.pantry.path


def test_an_option_given_alone_and_in_its_object_is_refused(tmp_path):
    with pytest.raises(SoupError, match=r"^SoupCallback: task= is a field of judge=JudgeOptions\(...\), given too"):
        SoupCallback(tmp_path / "pantry", judge=JudgeOptions(glue_dir="glue"), task="rte")
    with pytest.raises(SoupError, match=r"^SoupCallback: unknown option 'pinhead' \(not a field of CollectOptions"):
        SoupCallback(tmp_path / "pantry", pinhead=True)
    with pytest.raises(SoupError, match=r"^SoupCallback\(collect=...\): must be a CollectOptions, not dict$"):
        SoupCallback(tmp_path / "pantry", collect={"pin_head": True})
    assert not (tmp_path / "pantry").exists()
