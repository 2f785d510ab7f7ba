"""The manifest JSON written next to every exported artifact: what it is, how to feed it, and how well it did."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.fileio import atomic_write_json

MANIFEST_SUFFIX = ".manifest.json"


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of the given distributions (missing ones are left out), plus Python's."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def manifest_path(artifact: str | Path) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def write_manifest(
    artifact: str | Path,
    *,
    fmt: str,
    precision: str,
    spec: dict[str, Any],
    source_checkpoint: str | Path,
    input_info: dict[str, Any],
    output_info: dict[str, Any] | None = None,
    verification: dict[str, Any] | None = None,
    tools: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `<artifact>.manifest.json` atomically and return its path.

    `input_info` holds name, shape, layout (NCHW/NHWC), dtype and, for quantized inputs, scale and zero_point.
    """
    artifact = Path(artifact)
    manifest = {
        "artifact": artifact.name,
        "format": fmt,
        "precision": precision,
        "sha256": sha256(artifact) if artifact.is_file() else None,
        "size_bytes": artifact.stat().st_size if artifact.is_file() else None,
        "input": input_info,
        "output": output_info or {},
        "mean": list(spec.get("mean", [])),
        "std": list(spec.get("std", [])),
        "class_names": list(spec.get("class_names", [])),
        "source_checkpoint": str(source_checkpoint),
        "spec": spec,
        "tools": tools or {},
        "verification": verification or {},
        **(extra or {}),
    }
    return atomic_write_json(manifest_path(artifact), manifest)


def read_manifest(artifact: str | Path) -> dict[str, Any]:
    """The manifest beside an artifact; a missing or unreadable one is a user error."""
    path = manifest_path(artifact)
    if not path.is_file():
        raise PacbEdgeError(f"{artifact} has no manifest ({path.name}); export it with `pacb-edge export`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PacbEdgeError(f"manifest {path} is not valid JSON: {e}") from None
