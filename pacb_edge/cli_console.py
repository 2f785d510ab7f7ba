"""The one place that owns the terminal consoles (rich), shared by the CLI and progress bars."""

from __future__ import annotations

import functools

from rich.console import Console


@functools.cache
def stdout_console() -> Console:
    return Console()


@functools.cache
def stderr_console() -> Console:
    return Console(stderr=True)
