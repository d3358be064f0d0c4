"""The streaming merge: exact averages, loadable output, ties, shards, dtypes, atomic writes."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, T5ForConditionalGeneration

from hf_soups import merge_into_model, merge_models
from hf_soups.cli import main
from hf_soups.errors import SoupError
from hf_soups.ingredients import resolve_ingredients, validate_ingredients
from hf_soups.mean import RunningMean


def read_soup(folder):
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.mark.parametrize("arch", ["bert", "t5"])
def test_uniform_soup_is_the_mean(make_ingredients, tmp_path, arch):
    folders = make_ingredients(3, arch=arch)
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    inputs = [read_soup(f) for f in folders]
    out = read_soup(soup)
    assert set(out) == set(inputs[0])
    for name, tensor in out.items():
        torch.testing.assert_close(tensor, torch.stack([s[name] for s in inputs]).mean(0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_soup_folder_gets_the_umasks_permissions(make_ingredients, tmp_path, umask):
    folders = make_ingredients(2)
    previous = os.umask(umask)
    try:
        soup = merge_models(folders, tmp_path / "soup", progress=False)
        reference = tmp_path / "made-by-mkdir"
        reference.mkdir()  # what save_pretrained's os.makedirs gives
    finally:
        os.umask(previous)
    assert stat.S_IMODE(soup.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode) == 0o777 & ~umask


def test_weighted_soup(make_ingredients, tmp_path):
    folders = make_ingredients(3)
    soup = merge_models(folders, tmp_path / "soup", weights=[2, 1, 1], progress=False)
    inputs = [read_soup(f) for f in folders]
    for name, tensor in read_soup(soup).items():
        expected = 0.5 * inputs[0][name] + 0.25 * inputs[1][name] + 0.25 * inputs[2][name]
        torch.testing.assert_close(tensor, expected, atol=1e-6, rtol=0)
    record = json.loads((soup / "soup.json").read_text())
    assert [i["weight"] for i in record["ingredients"]] == [0.5, 0.25, 0.25]
    assert all(i["files"] and all(len(sha) == 64 for sha in i["files"].values()) for i in record["ingredients"])


def test_soup_loads_and_gives_the_logits_of_the_in_memory_average(make_ingredients, tmp_path):
    folders = make_ingredients(3)
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    models = [AutoModelForSequenceClassification.from_pretrained(f) for f in folders]
    expected = AutoModelForSequenceClassification.from_pretrained(folders[0])
    expected.load_state_dict(
        {k: torch.stack([m.state_dict()[k] for m in models]).mean(0) for k in models[0].state_dict()}
    )
    loaded = AutoModelForSequenceClassification.from_pretrained(soup)
    tokenizer = AutoTokenizer.from_pretrained(soup)
    batch = tokenizer(["the cat w1 w2", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected.eval()(**batch).logits, atol=1e-6, rtol=0)


def test_merge_into_model_returns_the_soup_merge_models_writes(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    model = merge_into_model(folders, progress=False)
    assert type(model).__name__ == "BertForSequenceClassification"
    written = read_soup(merge_models(folders, tmp_path / "soup", progress=False))
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in written.items())
    with pytest.warns(FutureWarning, match="merge_into_model"):  # the in-memory mode of hf-soups 0.1
        assert type(merge_models(folders, progress=False)).__name__ == "BertForSequenceClassification"


def _folder_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_merge_models_and_the_command_line_write_the_same_folder(make_ingredients, tmp_path, monkeypatch):
    """Weights, soup.json, recipe.yaml and the card: the same files with the same bytes, from either front."""
    ingredients = [str(f) for f in make_ingredients(3)]
    for front in ("python", "cli"):  # folders of one name (the card's title names the soup's parent too)
        (tmp_path / front / "sweep").mkdir(parents=True)
    command = [sys.executable, "-m", "hf_soups.cli", "merge", *ingredients, "-o", "soup", "--weights", "3,1,1"]
    subprocess.run([*command, "--dtype", "bf16"], cwd=tmp_path / "cli" / "sweep", check=True, capture_output=True)
    monkeypatch.chdir(tmp_path / "python" / "sweep")
    merge_models(ingredients, "soup", weights=[3, 1, 1], dtype="bf16", progress=False)
    python, cli = (_folder_bytes(tmp_path / front / "sweep" / "soup") for front in ("python", "cli"))
    assert {"model.safetensors", "soup.json", "recipe.yaml", "README.md", "config.json"} <= set(python)
    assert python.keys() == cli.keys() and all(python[name] == cli[name] for name in python)


# What `hf-soups merge` must not load: the evaluation stack (datasets, scikit-learn, scipy) and the plots' matplotlib.
EVALUATION_STACK = ("datasets", "sklearn", "scipy", "matplotlib")
LOADED = """
import sys
from hf_soups.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(sorted({m.split(".")[0] for m, module in sys.modules.items() if module is not None}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["soup"]])
def test_the_merge_command_loads_no_evaluation_stack(make_ingredients, tmp_path, args):
    if args == ["soup"]:
        args = [*map(str, make_ingredients(2)), "-o", str(tmp_path / "soup")]
    env = {**os.environ, "HF_SOUPS_HASH_CACHE": str(tmp_path / "cache" / "sha256.json")}  # no loading rules known
    command = [sys.executable, "-c", LOADED, "merge", *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    loaded = ast.literal_eval(done.stdout.splitlines()[-1])
    assert "hf_soups" in loaded and [m for m in EVALUATION_STACK if m in loaded] == []
    assert ("torch" in loaded) is (args != ["--help"])


def test_the_merge_command_hides_scipy_only_while_it_merges(make_ingredients, tmp_path, monkeypatch):
    import hf_soups.merge

    during, merge = [], hf_soups.merge.merge_models
    monkeypatch.setattr(
        hf_soups.merge,
        "merge_models",
        lambda *a, **k: during.append(sys.modules.get("scipy", "absent")) or merge(*a, **k),
    )
    folders, scipy = list(map(str, make_ingredients(2))), sys.modules.get("scipy") or types.ModuleType("scipy")
    monkeypatch.delitem(sys.modules, "scipy", raising=False)
    assert main(["merge", *folders, "-o", str(tmp_path / "soup")]) == 0
    assert during == [None] and "scipy" not in sys.modules  # hidden while it merged, then importable again
    monkeypatch.setitem(sys.modules, "scipy", scipy)
    assert main(["merge", *folders, "-o", str(tmp_path / "again")]) == 0
    assert during[1] is scipy and sys.modules["scipy"] is scipy  # one loaded before stays


def test_t5_ties_survive(make_ingredients, tmp_path):
    folders = make_ingredients(2, arch="t5")
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    model = T5ForConditionalGeneration.from_pretrained(soup)
    assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    assert model.encoder.embed_tokens.weight.data_ptr() == model.shared.weight.data_ptr()
    assert "lm_head.weight" not in read_soup(soup)


def test_untied_aliases_in_old_checkpoints_count_as_one_tensor(make_ingredients, tmp_path):
    """A checkpoint storing T5's tied aliases too (as transformers 4 .bin files do) merges with one that doesn't."""
    folders = make_ingredients(2, arch="t5")
    state = read_soup(folders[1])
    state["lm_head.weight"] = state["encoder.embed_tokens.weight"] = state["shared.weight"]
    (folders[1] / "model.safetensors").unlink()
    torch.save({k: v.clone() for k, v in state.items()}, folders[1] / "pytorch_model.bin")
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    expected = (read_soup(folders[0])["shared.weight"] + state["shared.weight"]) / 2
    torch.testing.assert_close(read_soup(soup)["shared.weight"], expected, atol=1e-6, rtol=0)


def test_sharded_input_and_output(make_ingredients, tmp_path):
    folders = make_ingredients(2, save={"max_shard_size": "20KB"})
    assert (folders[0] / "model.safetensors.index.json").exists()
    soup = merge_models(folders, tmp_path / "soup", max_shard_size="20KB", progress=False)
    index = json.loads((soup / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    inputs = [read_soup(f) for f in folders]
    for name, tensor in read_soup(soup).items():
        torch.testing.assert_close(tensor, (inputs[0][name] + inputs[1][name]) / 2, atol=1e-6, rtol=0)
    AutoModelForSequenceClassification.from_pretrained(soup)


def test_bf16_ingredients_accumulate_in_fp32_and_write_bf16(make_ingredients, tmp_path):
    folders = make_ingredients(3, dtype=torch.bfloat16)
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    inputs = [read_soup(f) for f in folders]
    for name, tensor in read_soup(soup).items():
        assert tensor.dtype == torch.bfloat16
        expected = torch.stack([s[name].float() for s in inputs]).mean(0)
        torch.testing.assert_close(tensor.float(), expected, atol=1e-6, rtol=2**-8)  # one bf16 rounding
    assert json.loads((soup / "config.json").read_text())["dtype"] == "bfloat16"


def test_mixed_dtypes_write_fp32_and_dtype_overrides(make_ingredients, tmp_path):
    folders = make_ingredients(1, dtype=torch.float16, name="half") + make_ingredients(1, name="full")
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    assert {t.dtype for t in read_soup(soup).values()} == {torch.float32}
    soup16 = merge_models(folders, tmp_path / "soup16", dtype="bf16", progress=False)
    assert {t.dtype for t in read_soup(soup16).values()} == {torch.bfloat16}


def test_pytorch_bin_ingredients(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    state = read_soup(folders[1])
    (folders[1] / "model.safetensors").unlink()
    torch.save(state, folders[1] / "pytorch_model.bin")
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    first = read_soup(folders[0])
    for name, tensor in read_soup(soup).items():
        torch.testing.assert_close(tensor, (first[name] + state[name]) / 2, atol=1e-6, rtol=0)


def test_integer_buffers_are_copied_when_all_agree(make_ingredients, tmp_path):
    from safetensors.torch import save_file

    folders = make_ingredients(2)
    for folder in folders:
        state = read_soup(folder)
        state["steps"] = torch.tensor([3, 4], dtype=torch.int64)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    soup = merge_models(folders, tmp_path / "soup", progress=False)
    assert torch.equal(read_soup(soup)["steps"], torch.tensor([3, 4]))


def test_running_mean_reads_each_file_once(make_ingredients, monkeypatch):
    """Every weight file is opened for its data exactly once per merge (headers are read separately)."""
    import hf_soups.tensorfile as tensorfile

    folders = make_ingredients(3, save={"max_shard_size": "20KB"})
    ingredients = resolve_ingredients(folders)
    plan = validate_ingredients(ingredients)
    opened = []
    real_stream = tensorfile.stream_tensors

    def counting(path, header, hasher=None):
        opened.append(path)
        yield from real_stream(path, header, hasher)

    monkeypatch.setattr("hf_soups.ingredient.stream_tensors", counting)
    real_reader = tensorfile.RangeReader  # add() reads safetensors in ranges
    reader = lambda path, *args: opened.append(path) or real_reader(path, *args)  # noqa: E731
    monkeypatch.setattr("hf_soups.ingredient.RangeReader", reader)
    mean = RunningMean(plan)
    for ingredient in ingredients:
        mean.add(ingredient, 1.0)
    files = [f for i in ingredients for f in i.weight_files]
    assert sorted(opened) == sorted(files) and len(files) > 3


def test_running_mean_add_all_opens_each_file_once(make_ingredients, monkeypatch):
    import hf_soups.ingredient

    folders = make_ingredients(3, save={"max_shard_size": "20KB"})
    ingredients = resolve_ingredients(folders)
    opened = []
    real_reader = hf_soups.ingredient.RangeReader

    def counting(path, *args):
        opened.append(path)
        return real_reader(path, *args)

    monkeypatch.setattr("hf_soups.ingredient.RangeReader", counting)
    plan = validate_ingredients(ingredients)
    bar = types.SimpleNamespace(n=0)
    bar.update = lambda n=1: setattr(bar, "n", bar.n + n)
    RunningMean(plan).add_all(ingredients, [1.0] * 3, bar)
    assert bar.n == 3 * len(plan.shapes)  # one step per tensor and ingredient
    files = [f for i in ingredients for f in i.weight_files]
    assert sorted(opened) == sorted(files) and len(files) > 3
    assert [i.reads for i in ingredients] == [1, 1, 1]


def test_a_mean_hands_on_its_weights_with_the_mix_and_a_copy_grows_apart(make_ingredients):
    ingredients = resolve_ingredients(make_ingredients(3))
    mean = RunningMean(validate_ingredients(ingredients))
    mean.add_all(ingredients[:2], [2.0, 1.0])
    soup = mean.soup()
    assert soup.mix == [(ingredients[0], 2.0), (ingredients[1], 1.0)] and soup.members == ingredients[:2]
    before = {name: tensor.clone() for name, tensor in soup.tensors.items()}
    grown = mean.copy()
    grown.add(ingredients[2], 3.0)
    assert mean.soup().mix == soup.mix and grown.soup().members == ingredients
    assert all(torch.equal(mean.tensors[n], before[n]) for n in before)  # the copy's tensors are its own
    name = next(n for n in before if soup.plan.is_float(n))
    assert not torch.equal(grown.tensors[name], before[name])


@pytest.mark.parametrize("case", ["uniform", "weighted", "per-tensor", "bf16+fp32", "t5-aliases", "sharded"])
def test_add_all_equals_adding_one_by_one_bit_for_bit(make_ingredients, monkeypatch, case):
    """The tensor-major fast path (pieces of a few elements here) gives the same bits and hashes as add()."""
    import hashlib

    from safetensors.torch import save_file

    monkeypatch.setattr("hf_soups.mean.PIECE", 7)
    if case == "bf16+fp32":
        folders = make_ingredients(2) + make_ingredients(1, dtype=torch.bfloat16, name="half")
    elif case == "t5-aliases":
        folders = make_ingredients(3, arch="t5")
        state = load_file(folders[1] / "model.safetensors")
        state["lm_head.weight"] = state["shared.weight"].clone()  # an old checkpoint storing the tied alias
        save_file(state, folders[1] / "model.safetensors", metadata={"format": "pt"})
    else:
        folders = make_ingredients(3, save={"max_shard_size": "20KB"} if case == "sharded" else None)
    weights = {"weighted": [0.2, 0.0, 0.5]}.get(case, [1.0, 1.0, 1.0])
    one_by_one, all_at_once = resolve_ingredients(folders), resolve_ingredients(folders)
    plan = validate_ingredients(one_by_one)
    if case == "per-tensor":
        weights = [{name: (k + 1) * (j % 3) for j, name in enumerate(plan.shapes)} for k in range(3)]
    expected, got = RunningMean(plan), RunningMean(plan)
    for ingredient, weight in zip(one_by_one, weights, strict=True):
        expected.add(ingredient, weight)
    got.add_all(all_at_once, weights)
    assert got.tensors.keys() == expected.tensors.keys()
    assert all(torch.equal(got.tensors[n], expected.tensors[n]) for n in expected.tensors)
    assert got.totals == expected.totals
    for ingredient in all_at_once:
        assert ingredient.sha256 == {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in ingredient.weight_files
        }


def test_disagreeing_integer_buffers_are_refused(make_ingredients, tmp_path):
    from safetensors.torch import save_file

    folders = make_ingredients(2)
    for i, folder in enumerate(folders):
        state = load_file(folder / "model.safetensors")
        state["steps"] = torch.tensor([i, 4])
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        SoupError, match=r"ingredient '.*ing1': integer tensor 'steps' differs from ingredient '.*ing0'"
    ):
        merge_models(folders, tmp_path / "soup", progress=False)
    assert list(tmp_path.glob("*soup*")) == []


@pytest.mark.parametrize(
    "setting",
    ["ours", "OMP_NUM_THREADS", "torch.set_num_threads", "threads=", "threads= and an error", "--threads"],
)
def test_merge_threads_are_chosen_and_the_callers_are_restored(make_ingredients, tmp_path, monkeypatch, setting):
    """The merge computes on MERGE_THREADS unless the user set torch's threads (environment, torch, or threads=);
    either way the caller's torch setting is back afterwards, also after a failed merge."""
    import hf_soups.mean
    from hf_soups.tensorfile import BackgroundHasher

    folders = make_ingredients(2)
    caller = torch.get_num_threads()
    monkeypatch.setattr("hf_soups.threads._TORCH_THREADS", caller)  # as if hf_soups had just been imported
    monkeypatch.setattr("hf_soups.threads.MERGE_THREADS", caller + 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    kwargs, expected = {}, caller + 1
    if setting == "OMP_NUM_THREADS":
        monkeypatch.setenv("OMP_NUM_THREADS", str(caller))
        expected = caller
    elif setting == "torch.set_num_threads":
        caller = expected = caller + 2
    elif setting.startswith("threads=") or setting == "--threads":
        kwargs, expected = {"threads": caller + 3}, caller + 3
    seen = []

    def spying(workers):
        seen.append((torch.get_num_threads(), workers))
        if setting.endswith("an error"):
            raise SoupError("stop")
        return BackgroundHasher(workers)

    monkeypatch.setattr(hf_soups.mean, "BackgroundHasher", spying)
    monkeypatch.setattr("hf_soups.tensorfile.cpu_count", lambda: 8)
    monkeypatch.setattr("hf_soups.threads.cpu_count", lambda: 8)
    before = torch.get_num_threads()
    torch.set_num_threads(caller)
    try:
        with contextlib.suppress(SoupError) if setting.endswith("an error") else contextlib.nullcontext():
            if setting == "--threads":
                argv = ["merge", *map(str, folders), "-o", str(tmp_path / "soup"), "--threads", str(caller + 3)]
                assert main(argv) == 0
            else:
                merge_models(folders, tmp_path / "soup", progress=False, **kwargs)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen == [(expected, max(1, 8 - expected))]  # sha256 on the CPUs the average leaves
    assert after == caller


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_thread_count_is_refused(make_ingredients, tmp_path, threads):
    with pytest.raises(SoupError, match=r"threads: must be a positive integer, got"):
        merge_models(make_ingredients(2), tmp_path / "soup", progress=False, threads=threads)
    assert not (tmp_path / "soup").exists()


@pytest.mark.parametrize("case", ["one more than the CPUs", "100000"])
def test_more_threads_than_cpus_is_one_message(make_ingredients, tmp_path, capsys, case):
    """``--threads 100000`` once started that many threads and crashed; it is refused before anything is read."""
    from hf_soups.tensorfile import cpu_count

    threads = int(case) if case.isdigit() else cpu_count() + 1
    argv = ["merge", *map(str, make_ingredients(2)), "-o", str(tmp_path / "soup"), "--threads", str(threads)]
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"hf-soups merge: error: threads: {threads} is more than the {cpu_count()} CPUs this process may run on\n"
    )
    assert not (tmp_path / "soup").exists()


def _merge_script(folders, output, signal_after_weights):
    """A merge in a subprocess that sends itself ``signal_after_weights`` once its weights are in its temporary
    folder, before the rest of the soup folder is written: interrupted mid-write without a race against its speed."""
    return [
        sys.executable,
        "-c",
        "import os; from hf_soups import merge_models; import hf_soups.soup_folder as folder; "
        "write = folder.write_recipe; "
        f"folder.write_recipe = lambda *args: (os.kill(os.getpid(), {int(signal_after_weights)}), write(*args)); "
        f"merge_models({[str(f) for f in folders]!r}, {str(output)!r}, max_shard_size='64KB', progress=False)",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_merge_leaves_no_output_and_rerun_succeeds(make_ingredients, tmp_path, sig):
    folders = make_ingredients(2, hidden_size=256, intermediate_size=1024, vocab_size=4000, num_hidden_layers=4)
    output = tmp_path / "soup"
    process = subprocess.run(_merge_script(folders, output, sig), stderr=subprocess.PIPE, timeout=120)
    assert process.returncode == -sig, process.stderr.decode()[-2000:]
    assert not output.exists()
    temporaries = [p for p in tmp_path.iterdir() if p.name.endswith(".hf-soups-tmp")]
    # a Ctrl-C cleans up its temporary folder; a killed merge leaves one, with its weights, to the next run
    assert len(temporaries) == (sig == signal.SIGKILL) and all(any(t.glob("*.safetensors")) for t in temporaries)
    merge_models(folders, output, progress=False)
    AutoModelForSequenceClassification.from_pretrained(output)
    assert not any(p.name.endswith(".hf-soups-tmp") for p in tmp_path.iterdir())  # a killed run's are cleaned up


def _paused_merge(folders, output):
    """A merge subprocess that stopped itself (SIGSTOP) once its weights are in its temporary folder."""
    process = subprocess.Popen(_merge_script(folders, output, signal.SIGSTOP), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return process


def _resume(process):
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.slow
@pytest.mark.parametrize("rival", ["folder", "merge"])
def test_what_appears_at_the_target_during_a_merge_is_never_replaced(make_ingredients, tmp_path, rival):
    folders = make_ingredients(2, hidden_size=256, intermediate_size=1024, vocab_size=4000, num_hidden_layers=4)
    output = tmp_path / "soup"
    process = _paused_merge(folders, output)
    if rival == "folder":
        output.mkdir()
        (output / "theirs.txt").write_text("keep me")
        expected = {"theirs.txt"}
    else:  # a second merge into the same new folder finishes first
        merge_models(folders, output, weights=[3, 1], progress=False)
        expected = {p.name for p in output.iterdir()}
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    returncode, stderr = _resume(process)
    assert returncode != 0 and "appeared while the soup was being made" in stderr
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before and set(before) == expected
    assert not any(p.name.endswith(".hf-soups-tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("where", ["is", "inside", "holds"])
def test_an_output_that_is_inside_or_holds_an_ingredient_is_refused_even_with_overwrite(
    make_ingredients, tmp_path, where
):
    folders = make_ingredients(2)
    output = {"is": folders[0], "inside": folders[0] / "soup", "holds": tmp_path}[where]
    before = {p: p.read_bytes() for f in folders for p in f.iterdir()}
    with pytest.raises(SoupError, match="a soup is never written over its ingredients"):
        merge_models(folders, output, overwrite=True, progress=False)
    assert {p: p.read_bytes() for f in folders for p in f.iterdir()} == before
    assert not (folders[0] / "soup").exists()


def test_stale_temporaries_of_dead_processes_only_are_removed(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".soup.{int(dead.stdout)}.abc.hf-soups-tmp"
    alive = tmp_path / f".soup.{os.getppid()}.abc.hf-soups-tmp"
    other = tmp_path / f".soupe.{int(dead.stdout)}.abc.hf-soups-tmp"  # another target's
    dotted = tmp_path / f".soup.{int(dead.stdout)}.{os.getppid()}.abc.hf-soups-tmp"  # target soup.PID's, alive
    for folder in (stale, alive, other, dotted):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    merge_models(folders, tmp_path / "soup", progress=False)
    assert not stale.exists() and alive.exists() and other.exists() and dotted.exists()


def test_fp16_overflow_is_refused_after_the_cast(make_ingredients, tmp_path):
    from safetensors.torch import save_file

    folders = make_ingredients(2)
    for folder in folders:
        state = load_file(folder / "model.safetensors")
        state["classifier.bias"] = torch.tensor([1e5, 0.0])
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SoupError, match=r"tensor 'classifier.bias': the soup overflows float16 .*bf16 or fp32"):
        merge_models(folders, tmp_path / "soup", dtype="fp16", progress=False)
    assert list(tmp_path.glob("*soup*")) == []
    merge_models(folders, tmp_path / "soup", dtype="bf16", progress=False)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1e308, 1e308], "positive, finite sum"),
        ([-1, 2], r"weights: ingredient '.*ing0': must be ≥ 0"),
        ([float("nan"), 1], r"weights: ingredient '.*ing0': must be a finite number"),
        ([0, 0], "positive, finite sum"),
        ([1], "1 given for 2 ingredients"),
    ],
)
def test_bad_weights_are_refused(make_ingredients, tmp_path, weights, message):
    with pytest.raises(SoupError, match=message):
        merge_models(make_ingredients(2), tmp_path / "soup", weights=weights, progress=False)
    assert not (tmp_path / "soup").exists()


def test_overwrite_replaces_an_existing_soup(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    output = tmp_path / "soup"
    merge_models(folders, output, weights=[1, 0], progress=False)
    merge_models(folders, output, overwrite=True, progress=False)
    assert json.loads((output / "soup.json").read_text())["ingredients"][0]["weight"] == 0.5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_old_soup_that_cannot_move_stays_and_leaves_no_temporary_folder(
    make_ingredients, tmp_path, monkeypatch, capsys
):
    """``-o DIR --overwrite`` where DIR cannot be moved aside (a read-only mount, a mount point): one line, DIR as it
    was, and no empty ``.DIR.PID.*.hf-soups-tmp`` folder beside it."""
    import errno
    from pathlib import Path

    folders = make_ingredients(2)
    output = tmp_path / "soup"
    merge_models(folders, output, weights=[1, 0], progress=False)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    rename = Path.rename

    def read_only(self, target):
        if self == output:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", read_only)
    capsys.readouterr()
    assert main(["merge", *map(str, folders), "-o", str(output), "--overwrite"]) == 2
    assert f"error: output folder {output}: cannot be written (Read-only file system: {output})" in (
        capsys.readouterr().err
    )
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_single_ingredient_copy_when_allowed(make_ingredients, tmp_path):
    folders = make_ingredients(1)
    soup = merge_models(folders, tmp_path / "soup", allow_single=True, progress=False)
    copied, original = read_soup(soup), read_soup(folders[0])
    assert original and copied.keys() == original.keys()  # an empty soup is no copy
    assert all(torch.equal(copied[name], tensor) for name, tensor in original.items())


@pytest.mark.parametrize("command", ["merge", "soup"])
def test_cli_dtype_choices_match_the_merge_registry(command):
    from hf_soups.cli import build_parser
    from hf_soups.model_folder import DTYPES

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    [dtype] = [a for a in subparsers.choices[command]._actions if a.dest == "dtype"]
    assert sorted(dtype.choices) == sorted(DTYPES)
