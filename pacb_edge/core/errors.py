"""The project's own exception types.

A `PacbEdgeError` is a user error (bad input, missing file, unreachable device): the CLI prints its message on one
line and exits with code 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PacbEdgeError(Exception):
    """A user error with a one-line explanation."""

    exit_code = 1
