"""Merge speed and memory: hf_soups against the I/O floor and mergekit's `linear` merge, side by side in one run,
on a quiet machine and beside a CPU-bound job.

N checkpoints of BERT-base shape (built from config, 110M parameters, fp32) are written once; then, for each N and
each condition, child processes run in turn, each timed (wall) and measured (max RSS, which counts memory-mapped
input pages):

- floor: a Python process that imports torch and safetensors, reads every input file once with plain reads and
  writes one output file of the soup's size;
- hf_soups, through both fronts: ``merge_models(paths, out, threads=...)`` in Python and ``hf-soups merge`` (``python
  -m hf_soups.cli merge``: the command's own imports included), for each ``--threads`` setting (``auto``: hf_soups'
  own choice; ``torch``: torch's default thread count, what hf_soups used before it chose; or a number), first with
  an empty sha256 cache (every input is hashed while it streams: sha256 runs at about 1.2 GB/s on one core, slower
  than reading from the page cache, and the model class is built once to learn which stored tensors
  ``from_pretrained`` ignores: transformers' modeling code is imported), then again with the digests and those rules
  cached (keyed by size, mtime and inode; by config and transformers version), the case of every later merge or
  recipe over the same files. Both write the same soup folder (weights, ``soup.json``, ``recipe.yaml``, card);
- mergekit (optional): ``mergekit-yaml`` with a ``linear`` merge of the same inputs (its own venv, see
  ``benchmarks/setup_mergekit.sh``), with its default threads.

Conditions: ``quiet``, and ``busy``: a CPU-bound job (``--busy-job``: a MiniLM-sized BERT training-step loop, or a
matmul loop, each on torch's default threads, or on ``--busy-threads``) runs in a child process started before,
and kept running through, that condition's runs, the same job beside every tool. That is the case of a sweep cooked
while other runs train.
The conditions alternate within every repeat, so that other load on the machine falls on both alike.

Every run reads from a warm page cache (the floor runs first and warms it). The table gives ratios, which are what
is comparable on a noisy machine. ``--layers`` makes the checkpoints shallower than BERT-base's 12 layers (same
width), for a quick run on a small machine.

Usage:
    python benchmarks/merge_speed.py --workdir /tmp/merge-bench --counts 2 8 --repeats 2 --threads auto torch \\
        --conditions quiet busy --mergekit benchmarks/.venv-mergekit/bin/mergekit-yaml
    python benchmarks/merge_speed.py --counts 8 --repeats 2 --threads auto --conditions quiet --layers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = """
import sys, torch, safetensors
paths, out = sys.argv[1:-1], sys.argv[-1]
buffer = bytearray(64 << 20)
for path in paths:
    with open(path, "rb") as f:
        while f.readinto(buffer):
            pass
size = __import__("os").path.getsize(paths[0])
with open(out, "wb") as f:
    for start in range(0, size, len(buffer)):
        f.write(memoryview(buffer)[: min(len(buffer), size - start)])
"""

HF_SOUPS = """
import sys, torch
from hf_soups import merge_models
setting, paths, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
threads = None if setting == "auto" else torch.get_num_threads() if setting == "torch" else int(setting)
merge_models(paths, out, progress=False, threads=threads)
"""
FRONTS = ("merge_models", "hf-soups merge")


def hf_soups_command(front: str, setting: str, dirs: list[str], out: Path) -> list[str]:
    """The child process that merges ``dirs`` into ``out`` through ``front`` with the ``--threads`` ``setting``."""
    if front == "merge_models":
        return [sys.executable, "-c", HF_SOUPS, setting, *dirs, str(out)]
    if setting == "torch":
        setting = subprocess.check_output([sys.executable, "-c", "import torch; print(torch.get_num_threads())"])
    threads = [] if setting == "auto" else ["--threads", str(int(setting))]
    return [sys.executable, "-m", "hf_soups.cli", "merge", *dirs, "-o", str(out), *threads]


# CPU-bound jobs started beside the merge (each on torch's default threads, as a user's job would be).
BUSY_JOBS = {
    "train": """
import torch
from transformers import BertConfig, BertForSequenceClassification
torch.manual_seed(0)
config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
model = BertForSequenceClassification(config)  # all-MiniLM-L6-v2's shape
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
ids, labels = torch.randint(1000, 20000, (16, 128)), torch.randint(0, 2, (16,))
while True:
    model(input_ids=ids, labels=labels).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""",
    "matmul": """
import torch
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
""",
}
BUSY_WARMUP_S = 5.0  # let the job build its model and reach its steady loop before the first timed run


def checkpoint_folders(workdir: Path, count: int, layers: int) -> list[Path]:
    return [workdir / (f"ckpt{i}" if layers == 12 else f"ckpt{i}-{layers}layers") for i in range(count)]


def make_checkpoints(workdir: Path, count: int, layers: int) -> list[Path]:
    """Write the checkpoints (run in a child process: a parent holding a model would inflate every later child's
    max RSS, which Linux counts from the fork)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folders = checkpoint_folders(workdir, count, layers)
    if all((f / "model.safetensors").exists() for f in folders):
        return folders
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_hidden_layers=layers))  # BERT-base shape (12 layers)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for i, folder in enumerate(folders):
        if (folder / "model.safetensors").exists():
            continue
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(base[name] + 1e-3 * torch.randn(param.shape, generator=generator))
        model.save_pretrained(folder)
    return folders


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and max RSS (bytes) of a child process."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a progress bar never fills it and blocks
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise RuntimeError(f"{command[:3]} failed: {stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def mergekit_command(mergekit: str, folders: list[Path], out: Path, config: Path) -> list[str]:
    lines = ["merge_method: linear", "dtype: float32", "models:"]
    for folder in folders:
        lines += [f"  - model: {folder}", "    parameters:", "      weight: 1.0"]
    config.write_text("\n".join(lines) + "\n")
    return [mergekit, str(config), str(out), "--quiet", "--no-write-model-card", "--lazy-unpickle"]


def start_busy(job: str | None, threads: int | None = None) -> subprocess.Popen | None:
    """Start the CPU-bound job (``None``: a quiet machine) on ``threads`` torch threads (default: torch's) and give it
    time to reach its loop."""
    if job is None:
        return None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    process = subprocess.Popen([sys.executable, "-c", BUSY_JOBS[job]], stdout=subprocess.DEVNULL, env=env)
    time.sleep(BUSY_WARMUP_S)
    if process.poll() is not None:
        raise RuntimeError(f"the busy job '{job}' exited with status {process.returncode}")
    return process


def stop_busy(process: subprocess.Popen | None) -> None:
    if process is not None:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hf-soups-merge-bench")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool per cell (the median is shown)")
    parser.add_argument(
        "--threads",
        nargs="+",
        default=["auto", "torch"],
        help="hf_soups thread settings: auto (its choice), torch (torch's default) or a number",
    )
    parser.add_argument("--conditions", nargs="+", choices=["quiet", "busy"], default=["quiet", "busy"])
    parser.add_argument("--busy-job", choices=sorted(BUSY_JOBS), default="train")
    parser.add_argument(
        "--busy-threads",
        type=int,
        help="the busy job's torch threads (default: torch's default, "
        "every CPU; fewer leave cores free, as a GPU training job's CPU side does)",
    )
    parser.add_argument("--mergekit", help="path to mergekit-yaml (see benchmarks/setup_mergekit.sh)")
    parser.add_argument("--layers", type=int, default=12, help="encoder layers of the checkpoints (BERT-base: 12)")
    parser.add_argument("--make-checkpoints", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.make_checkpoints:
        make_checkpoints(args.workdir, args.make_checkpoints, args.layers)
        return
    count = max(args.counts)
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--make-checkpoints",
            str(count),
            "--workdir",
            str(args.workdir),
            "--layers",
            str(args.layers),
        ],
        check=True,
    )
    folders = checkpoint_folders(args.workdir, count, args.layers)
    checkpoint = (folders[0] / "model.safetensors").stat().st_size
    shape = "BERT-base shape" if args.layers == 12 else f"BERT-base width, {args.layers} layers"
    print(
        f"checkpoint: {shape}, fp32, {checkpoint / 1e6:.0f} MB; medians of {args.repeats} runs per cell; "
        f"{os.cpu_count()} CPUs; busy job: {args.busy_job} on {args.busy_threads or 'default'} threads"
    )
    print(
        "| N | beside | front | hf_soups threads | floor s | first merge s | ×floor | cached hashes s | ×floor | "
        "cached ×quiet | floor ×quiet | mergekit s | first ×mergekit | cached ×mergekit | "
        "peak RSS / checkpoint: first | cached |"
    )
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    beside = f"a {args.busy_job} job" + (
        f" ({args.busy_threads} thread{'s' * (args.busy_threads > 1)})" if args.busy_threads else ""
    )
    for count in args.counts:
        inputs = [str(f / "model.safetensors") for f in folders[:count]]
        dirs = [str(f) for f in folders[:count]]
        cache = args.workdir / f"sha256-{count}.json"
        env = {**os.environ, "HF_SOUPS_HASH_CACHE": str(cache)}
        runs: dict[str, dict[str, list[tuple[float, int]]]] = {condition: {} for condition in args.conditions}
        for _ in range(args.repeats):  # the conditions alternate, so that other load on the machine falls on both
            for condition in args.conditions:
                cells = runs[condition]
                busy = start_busy(args.busy_job if condition == "busy" else None, args.busy_threads)
                try:
                    out = args.workdir / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    floor = [sys.executable, "-c", FLOOR, *inputs, str(out / "floor.bin")]
                    cells.setdefault("floor", []).append(measure(floor))
                    for setting in args.threads:
                        for front in FRONTS:
                            cache.unlink(missing_ok=True)  # the first merge: no hash known, nor the model's
                            cache.with_name("load_rules.json").unlink(missing_ok=True)  # loading rules (ingredient)
                            for stage in ("cold", "warm"):
                                folder = out / f"{stage}-{setting}-{FRONTS.index(front)}"
                                command = hf_soups_command(front, setting, dirs, folder)
                                cells.setdefault(f"{stage} {setting} {front}", []).append(measure(command, env))
                    if args.mergekit:
                        command = mergekit_command(
                            args.mergekit, folders[:count], out / "mergekit", args.workdir / "linear.yml"
                        )
                        cells.setdefault("mergekit", []).append(measure(command))
                finally:
                    stop_busy(busy)
        wall = {c: {name: statistics.median(w for w, _ in cell) for name, cell in runs[c].items()} for c in runs}
        rss = {c: {name: statistics.median(r for _, r in cell) for name, cell in runs[c].items()} for c in runs}
        for condition in args.conditions:
            times = wall[condition]
            for setting, front in ((setting, front) for setting in args.threads for front in FRONTS):
                cold, warm = times[f"cold {setting} {front}"], times[f"warm {setting} {front}"]
                row = (
                    f"| {count} | {beside if condition == 'busy' else 'nothing'} | {front} | {setting} | "
                    f"{times['floor']:.2f} | {cold:.2f} | {cold / times['floor']:.2f} | "
                    f"{warm:.2f} | {warm / times['floor']:.2f} | "
                    + (
                        f"{warm / wall['quiet'][f'warm {setting} {front}']:.2f} | "
                        f"{times['floor'] / wall['quiet']['floor']:.2f} | "
                        if "quiet" in wall
                        else "– | – | "
                    )
                )
                if "mergekit" in times:
                    row += (
                        f"{times['mergekit']:.2f} | {cold / times['mergekit']:.2f} | {warm / times['mergekit']:.2f} | "
                    )
                else:
                    row += "– | – | – | "
                row += (
                    " | ".join(
                        f"{rss[condition][f'{stage} {setting} {front}'] / checkpoint:.2f}"
                        for stage in ("cold", "warm")
                    )
                    + " |"
                )
                print(row, flush=True)
        if args.mergekit:
            print(
                f"(N = {count}: mergekit max RSS / checkpoint {rss[args.conditions[0]]['mergekit'] / checkpoint:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
