"""Soup folders written through temporary folders: names derived from the output's fit the file system."""

from __future__ import annotations

import os

import pytest
from helpers import BiasJudge

from hf_soups import greedy_soup
from hf_soups.atomic_folder import NAME_MAX, TMP_ROOM, fitted_name, remove_stale_temporaries
from hf_soups.cli import main


def test_fitted_names_stay_within_the_limit_and_apart():
    assert fitted_name("soup", room=40) == "soup"
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    assert fitted_name(long_a, 40) != fitted_name(long_b, 40)
    assert all(len(fitted_name(name, 40).encode()) == NAME_MAX - 40 for name in (long_a, long_b))
    assert len(fitted_name("é" * 200, 13).encode()) <= NAME_MAX - 13  # cut between characters, not inside one


def test_an_output_folder_of_the_longest_name_is_written(make_ingredients, tmp_path, capsys):
    folders = make_ingredients(2)
    longest = tmp_path / ("s" * NAME_MAX)
    assert main(["merge", *map(str, folders), "-o", str(longest)]) == 0, capsys.readouterr().err
    assert (longest / "model.safetensors").is_file() and (longest / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_a_killed_writes_temporary_folder_of_a_long_name_is_removed(tmp_path):
    target = tmp_path / ("s" * NAME_MAX)
    dead = tmp_path / f".{fitted_name(target.name, TMP_ROOM)}.{2**22 + 1}.abcdefgh.hf-soups-tmp"  # a PID past pid_max
    dead.mkdir()
    assert remove_stale_temporaries(target) == [dead] and not dead.exists()
    alive = tmp_path / f".{fitted_name(target.name, TMP_ROOM)}.{os.getpid()}.abcdefgh.hf-soups-tmp"
    alive.mkdir()
    assert remove_stale_temporaries(target) == [] and alive.exists()


def test_greedys_state_folder_beside_an_output_of_the_longest_name_fits_and_resumes(make_ingredients, tmp_path):
    folders = make_ingredients(3)
    output = tmp_path / ("s" * NAME_MAX)
    with pytest.raises(KeyboardInterrupt):  # 3 tastings, the uniform soup, one candidate, then Ctrl-C
        greedy_soup(folders, judge=BiasJudge(interrupt_after=5), output_dir=output, progress=False)
    [state] = [p for p in tmp_path.iterdir() if p.name.endswith(".greedy-state")]
    assert (state / "state.json").is_file() and len(state.name) == NAME_MAX
    greedy_soup(folders, judge=BiasJudge(), output_dir=output, resume=True, progress=False)
    assert (output / "recipe.yaml").is_file() and not state.exists()
