"""Merge speed and memory: hf_soups against the I/O floor and mergekit's `linear` merge, side by side in one run.

N checkpoints of BERT-base shape (built from config, 110M parameters, fp32) are written once; then, for each N,
three child processes run in turn, each timed (wall) and measured (max RSS, which counts memory-mapped input pages):

- floor: a Python process that imports torch and safetensors, reads every input file once with plain reads and
  writes one output file of the soup's size;
- hf_soups: ``merge_models(paths, out)``, first with an empty sha256 cache (every input is hashed while it streams:
  sha256 runs at about 1.2 GB/s on one core here, slower than reading from the page cache), then again with the
  digests cached (keyed by size, mtime and inode), the case of every later merge or recipe over the same files;
- mergekit (optional): ``mergekit-yaml`` with a ``linear`` merge of the same inputs (its own venv, see
  ``benchmarks/setup_mergekit.sh``).

Every run reads from a warm page cache (the floor runs first and warms it). The table gives ratios, which are what
is comparable on a noisy machine.

Usage:
    python benchmarks/merge_speed.py --workdir /tmp/merge-bench --counts 2 4 8 16 \\
        --mergekit benchmarks/.venv-mergekit/bin/mergekit-yaml
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
import sys
from hf_soups import merge_models
merge_models(sys.argv[1:-1], sys.argv[-1], progress=False)
"""


def make_checkpoints(workdir: Path, count: int) -> list[Path]:
    """Write the checkpoints (run in a child process: a parent holding a model would inflate every later child's
    max RSS, which Linux counts from the fork)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folders = [workdir / f"ckpt{i}" for i in range(count)]
    if all((f / "model.safetensors").exists() for f in folders):
        return folders
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig())  # BERT-base shape
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
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def mergekit_command(mergekit: str, folders: list[Path], out: Path, config: Path) -> list[str]:
    lines = ["merge_method: linear", "dtype: float32", "models:"]
    for folder in folders:
        lines += [f"  - model: {folder}", "    parameters:", "      weight: 1.0"]
    config.write_text("\n".join(lines) + "\n")
    return [mergekit, str(config), str(out), "--quiet", "--no-write-model-card", "--lazy-unpickle"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hf-soups-merge-bench")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool per N (the median is shown)")
    parser.add_argument("--mergekit", help="path to mergekit-yaml (see benchmarks/setup_mergekit.sh)")
    parser.add_argument("--make-checkpoints", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.make_checkpoints:
        make_checkpoints(args.workdir, args.make_checkpoints)
        return
    count = max(args.counts)
    subprocess.run([sys.executable, __file__, "--make-checkpoints", str(count), "--workdir", str(args.workdir)], check=True)
    folders = [args.workdir / f"ckpt{i}" for i in range(count)]
    checkpoint = (folders[0] / "model.safetensors").stat().st_size
    print(f"checkpoint: BERT-base shape, fp32, {checkpoint / 1e6:.0f} MB; medians of {args.repeats} runs per cell")
    print("| N | floor s | hf_soups, hashing s | ratio to floor | hf_soups, cached hashes s | ratio to floor | "
          "peak RSS / checkpoint | mergekit s | hf_soups (hashing) / mergekit | mergekit RSS / checkpoint |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in args.counts:
        inputs = [str(f / "model.safetensors") for f in folders[:count]]
        dirs = [str(f) for f in folders[:count]]
        cache = args.workdir / f"sha256-{count}.json"
        env = {**os.environ, "HF_SOUPS_HASH_CACHE": str(cache)}
        runs: dict[str, list[tuple[float, int]]] = {"floor": [], "cold": [], "warm": [], "mergekit": []}
        for _ in range(args.repeats):
            out = args.workdir / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            runs["floor"].append(measure([sys.executable, "-c", FLOOR, *inputs, str(out / "floor.bin")]))
            cache.unlink(missing_ok=True)
            runs["cold"].append(measure([sys.executable, "-c", HF_SOUPS, *dirs, str(out / "cold")], env))
            runs["warm"].append(measure([sys.executable, "-c", HF_SOUPS, *dirs, str(out / "warm")], env))
            if args.mergekit:
                command = mergekit_command(args.mergekit, folders[:count], out / "mergekit", args.workdir / "linear.yml")
                runs["mergekit"].append(measure(command))
        wall = {name: statistics.median(w for w, _ in cells) for name, cells in runs.items() if cells}
        rss = {name: statistics.median(r for _, r in cells) for name, cells in runs.items() if cells}
        row = (
            f"| {count} | {wall['floor']:.2f} | {wall['cold']:.2f} | {wall['cold'] / wall['floor']:.2f} | "
            f"{wall['warm']:.2f} | {wall['warm'] / wall['floor']:.2f} | {max(rss['cold'], rss['warm']) / checkpoint:.2f} |"
        )
        if "mergekit" in wall:
            row += f" {wall['mergekit']:.2f} | {wall['cold'] / wall['mergekit']:.2f} | {rss['mergekit'] / checkpoint:.2f} |"
        else:
            row += " – | – | – |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
