"""Run independent jobs side by side in fresh worker processes (the demo's and reproduce's cells and exports)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def job_count(jobs: int | None, n_calls: int) -> int:
    """How many workers to start: `jobs` (default one per core), never more than there are calls, at least one."""
    return max(1, min(jobs or (os.cpu_count() or 1), n_calls))


def thread_plan(jobs: int, threads: int) -> tuple[int, str]:
    """Torch threads per job when `jobs` share `threads` (at least one), and the plan in words for the log."""
    job_threads = max(1, threads // jobs)
    words = (
        f"{jobs} job{'s' if jobs > 1 else ''} x {job_threads} torch thread{'s' if job_threads > 1 else ''} "
        f"for training and export, {threads} for the bench"
    )
    return job_threads, words


def in_parallel(jobs: int, calls: list[tuple[Callable[..., Any], tuple]], on_done: Callable[[int, Any], None]) -> None:
    """Run `calls` (function, args) in `jobs` fresh worker processes (spawned: no torch/TF state is shared), or here
    when `jobs` is 1; `on_done(index, result)` in completion order. A worker's error is raised here.

    List the longest calls first: the workers take them in order, so the last call to finish is a short one."""
    if jobs <= 1:
        for i, (fn, args) in enumerate(calls):
            on_done(i, fn(*args))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *args): i for i, (fn, args) in enumerate(calls)}
        for future in as_completed(futures):
            on_done(futures[future], future.result())
