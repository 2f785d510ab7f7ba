"""Option files for `pacb-edge train --config FILE`: TOML or YAML in, TOML out (each run directory's config.toml).

A file holds the command's options as `name = value`, named as on the command line (`train-limit` or `train_limit`).
Options given on the command line win over the file's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_NAME = "config.toml"


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The options in a TOML (.toml) or YAML (.yaml, .yml) file, keys with `_` for `-`; one-line errors."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise PacbEdgeError(f"{path}: a config file is .toml, .yaml or .yml")
    try:
        text = path.read_text()
    except OSError as e:
        raise PacbEdgeError(f"cannot read config {path}: {e.strerror or e}") from None
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError: both say where
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PacbEdgeError(f"{path} is not valid {suffix.lstrip('.').upper()}: {first}") from None
    if not isinstance(data, dict):
        raise PacbEdgeError(f"{path}: expected `option = value` lines, got a {type(data).__name__}")
    nested = sorted(k for k, v in data.items() if isinstance(v, dict))
    if nested:
        raise PacbEdgeError(f"{path}: option {nested[0]!r} is a table; options are plain `name = value`")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def write_config(path: str | os.PathLike, options: dict[str, Any], command: str) -> Path:
    """Write `options` as TOML (None left out, paths as strings), headed by the command that gave them."""
    import tomli_w

    values = {
        k.replace("_", "-"): (str(v) if isinstance(v, os.PathLike) else v) for k, v in options.items() if v is not None
    }
    values = {k: ([str(x) for x in v] if isinstance(v, (list, tuple)) else v) for k, v in values.items()}
    header = f"# {command}\n# Repeat this run with: pacb-edge train --config {Path(path)}\n"
    return atomic_write_text(path, header + tomli_w.dumps(values))
