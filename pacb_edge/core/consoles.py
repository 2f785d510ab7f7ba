"""The one place that owns the terminal consoles (rich), shared by the CLI and the progress bars."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator

from rich.console import Console


@functools.cache
def stdout_console() -> Console:
    return Console()


@functools.cache
def stderr_console() -> Console:
    return Console(stderr=True)


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Show a long step (an upload, an engine build, an on-device run) on stderr while it runs: a spinner on a
    terminal, else a line when it starts; then one line with its time (or that it failed)."""
    console = stderr_console()
    t0 = time.perf_counter()
    ok = False
    try:
        if console.is_terminal:
            with console.status(f"{message} ..."):
                yield
        else:
            console.print(f"{message} ...", highlight=False, soft_wrap=True)
            yield
        ok = True
    finally:
        took = time.perf_counter() - t0
        console.print(f"{message}: {'done' if ok else 'failed'} in {took:.1f} s", highlight=False, soft_wrap=True)
