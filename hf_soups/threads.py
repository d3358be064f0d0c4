"""How many torch threads the element-wise work of a soup (the running mean, Model Stock) computes on.

The average is memory-bound: one thread is as fast as two, and beside another busy process torch's default pool
spin-waits on its barriers (several times slower). So a merge computes on :data:`MERGE_THREADS` unless the user
chose otherwise (``threads=`` / ``--threads``, ``OMP_NUM_THREADS``, ``torch.set_num_threads``), and
:func:`compute_threads` gives the caller back their setting afterwards. A chosen count is bounded by the CPUs this
process may run on: torch cannot start 100,000 threads.

Example:
    >>> mean, tensor = torch.zeros(3), torch.ones(3)
    >>> with compute_threads() as threads:
    ...     _ = mean.lerp_(tensor, 0.5)
    >>> mean.tolist()  # computed on MERGE_THREADS threads (unless the user chose), the caller's setting back after
    [0.5, 0.5, 0.5]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from hf_soups.errors import SoupError
from hf_soups.tensorfile import cpu_count

# torch threads for a merge's element-wise work (1 MiB lerps, memory-bound). Measured (2 cores, 8 BERT-base inputs,
# benchmarks/RESULTS.md): add_all takes 0.38-0.44 s on one thread and 0.38-0.39 s on two, for twice the CPU time; and
# wherever another process keeps the cores busy, a pool of two spin-waits on its barriers: once 11 s, and 8x the
# whole merge beside a training job.
MERGE_THREADS = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # the environment variables torch sizes its pool by
_TORCH_THREADS = torch.get_num_threads()  # torch's setting when hf_soups was imported: a later change is the user's


def merge_threads(threads: int | None = None) -> int:
    """The number of torch threads a merge computes with.

    ``threads`` when given; else the user's own setting where they made one (``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` set, or ``torch.set_num_threads`` called after hf_soups was imported); else
    ``MERGE_THREADS``.

    Raises:
        SoupError: ``threads`` is not a positive integer, or is more than the CPUs this process may run on.

    Example:
        >>> merge_threads(1)
        1
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SoupError(f"threads: must be a positive integer, got {threads!r}")
        if threads > cpu_count():
            raise SoupError(f"threads: {threads} is more than the {cpu_count()} CPUs this process may run on")
        return threads
    current = torch.get_num_threads()
    if current != _TORCH_THREADS or any(os.environ.get(name) for name in THREAD_VARIABLES):
        return current
    return MERGE_THREADS


@contextlib.contextmanager
def compute_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with torch set to :func:`merge_threads` threads, then give the caller back their setting.

    Example:
        >>> mean, tensor = torch.zeros(3), torch.ones(3)
        >>> with compute_threads(1) as chosen:
        ...     _ = mean.lerp_(tensor, 0.5)
        >>> chosen, mean.tolist()
        (1, [0.5, 0.5, 0.5])
    """
    chosen, before = merge_threads(threads), torch.get_num_threads()
    if chosen != before:
        torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
