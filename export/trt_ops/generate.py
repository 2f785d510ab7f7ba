"""Write the TensorRT operator tables (`tensorrt-<version>.txt`) from the ONNX parser's own source.

For each TensorRT version: the operators are the `DEFINE_BUILTIN_OP_IMPORTER(Op)` of onnx/onnx-tensorrt at that
release tag (the plugin importers `TRT_*` and `FallbackPluginImporter` are not ONNX operators), each with the file and
line of its importer; the highest opset is the one `docs/operators.md` names (the code has no limit of its own); the
rules (`RULES`) are found by the assertion each one makes in the source, with its file and line, and the check in
`export/trt_check.py` applies a rule only to a version whose table names it. Where `docs/operators.md` disagrees
with the importers, the table says so (`# docs_differ:`).

    python export/trt_ops/generate.py --repo /path/to/onnx-tensorrt.git

The repository is a clone (bare or not) of https://github.com/onnx/onnx-tensorrt with its `release/*` tags.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent

# version -> (release tag, JetPack releases that ship it)
VERSIONS = {
    "8.0": ("release/8.0", "4.6 (L4T R32.6.1)"),
    "8.2": ("release/8.2-GA", "4.6.1, 4.6.2, 4.6.3, 4.6.4 (L4T R32.7)"),
    "8.4": ("release/8.4-GA", "5.0"),
    "8.5": ("release/8.5-GA", "5.1"),
    "8.6": ("release/8.6-GA", "6.0"),
    "10.1": ("release/10.1-GA", "-"),
}
# 10.3 (JetPack 6.1/6.2): NVIDIA/TensorRT v10.3.0 pins onnx-tensorrt at 62bdde2a, which is in no public tag or branch
# of the repository; its table is 10.1's with the parser changes docs/Changelog.md names for 10.2 and 10.3.
DERIVED = {
    "10.3": (
        "10.1",
        "6.1, 6.2",
        ["slice_axes_constant"],
        "10.1's importers with the changes onnx-tensorrt docs/Changelog.md names for 10.2 (GRU, Squeeze fixes) and "
        "10.3 GA (Slice takes tensor axes; ScatterElements uses version 2 of its plugin): the 10.3 parser's "
        "commit (62bdde2a, pinned by NVIDIA/TensorRT v10.3.0) is in no public ref",
    )
}

# rule id -> (the importer whose body makes the assertion, or None for a shared helper; the assertion as a regex).
# The check in export/trt_check.py (`RULES`) applies a rule to a version whose table names it.
RULES: dict[str, tuple[str | None, str]] = {
    "conv_bias_constant": ("Conv", r"bias tensor is required to be an initializer"),
    "resize_no_cubic": ("Resize", r"does not support cubic interpolation"),
    "resize_scales_constant": ("Resize", r"Resize scales must be an initializer"),
    # 8.0 and 8.2 word it "Unsqueeze axes input must an initializer!" inside the Squeeze importer
    "squeeze_axes_constant": ("Squeeze", r"axes input must (?:be )?an? ?initializer"),
    "unsqueeze_axes_constant": ("Unsqueeze", r"Axes input for unsqueeze operation should be a constant tensor"),
    "slice_axes_constant": ("Slice", r"does not support dynamic axes"),
    "qdq_zero_point_zero": (None, r"only supports symmetric quantization|supports only zero shifts"),
    "pool_no_dilation": (None, r"does not support dilations other than 1"),
}
# Rules that hold where the source *lacks* something: ONNX UINT8 has no TensorRT type before 8.5's convertDtype case.
MISSING_RULES = {"uint8_io_unsupported": r"TensorProto::UINT8:\s*\*trt_dtype"}

_IMPORTER = re.compile(r"^DEFINE_BUILTIN_OP_IMPORTER\((\w+)\)", re.MULTILINE)
_DOC_ROW = re.compile(r"^\|\s*([A-Za-z][A-Za-z0-9]*)\s*\|\s*(Y|N)\b", re.MULTILINE)
_DOC_HEADER = re.compile(r"^TensorRT [\d.]+ supports operators[^\n]*?(?:up to Opset (\d+)|opset \d+ to opset (\d+))",
                         re.MULTILINE | re.IGNORECASE)  # fmt: skip


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def sources(repo: Path, ref: str) -> dict[str, str]:
    names = [n for n in git(repo, "ls-tree", "--name-only", ref).split() if n.endswith((".cpp", ".hpp"))]
    return {n: git(repo, "show", f"{ref}:{n}") for n in names}


def table(repo: Path, version: str) -> dict:
    ref, jetpack = VERSIONS[version]
    commit = git(repo, "rev-parse", f"{ref}^{{commit}}").strip()
    date = git(repo, "log", "-1", "--format=%cs", commit).strip()
    files = sources(repo, ref)
    ops: dict[str, str] = {}
    for name, text in files.items():
        for m in _IMPORTER.finditer(text):
            op = m.group(1)
            if not op.startswith("TRT_") and op != "FallbackPluginImporter":
                ops.setdefault(op, f"{name}:{line_of(text, m.start())}")
    rules: dict[str, str] = {}
    for rule, (importer, pattern) in RULES.items():
        for name, text in files.items():
            lo, hi = 0, len(text)
            if importer is not None:
                head = re.search(rf"^DEFINE_BUILTIN_OP_IMPORTER\({importer}\)", text, re.MULTILINE)
                if head is None:
                    continue
                nxt = _IMPORTER.search(text, head.end())
                lo, hi = head.start(), nxt.start() if nxt else len(text)
            if m := re.compile(pattern).search(text, lo, hi):
                rules[rule] = f"{name}:{line_of(text, m.start())}"
                break
    for rule, pattern in MISSING_RULES.items():
        if not any(re.search(pattern, text) for text in files.values()):
            rules[rule] = "no `TensorProto::UINT8` case in convertDtype (onnx2trt_utils.cpp)"
    docs = git(repo, "show", f"{ref}:docs/operators.md")
    header = _DOC_HEADER.search(docs)
    max_opset = int(header.group(1) or header.group(2))
    doc_rows = dict(_DOC_ROW.findall(docs))
    docs_no = sorted(op for op in ops if doc_rows.get(op) == "N")
    docs_yes = sorted(op for op, yn in doc_rows.items() if yn == "Y" and op not in ops)
    return {
        "version": version,
        "jetpack": jetpack,
        "source": f"onnx/onnx-tensorrt {ref} (tag), commit {commit} ({date})",
        "doc_header": header.group(0).strip(),
        "max_opset": max_opset,
        "ops": ops,
        "rules": rules,
        "docs_differ": (docs_no, docs_yes),
        "note": None,
    }


def derive(base: dict, version: str, jetpack: str, drop: list[str], note: str) -> dict:
    return {
        **base,
        "version": version,
        "jetpack": jetpack,
        "rules": {k: v for k, v in base["rules"].items() if k not in drop},
        "note": note + f"; rules dropped from 10.1's: {', '.join(drop)}",
    }


def render(t: dict) -> str:
    docs_no, docs_yes = t["docs_differ"]
    lines = [
        f"# ONNX operators the TensorRT {t['version']} ONNX parser imports: every DEFINE_BUILTIN_OP_IMPORTER",
        f"# source: {t['source']}",
        f"# trt_version: {t['version']}",
        f"# jetpack: {t['jetpack']}",
        f"# max_opset: {t['max_opset']}",
        f"# doc_header: {t['doc_header']} (docs/operators.md; the code sets no limit)",
        "# docs_differ: importer but docs say N: " + (", ".join(docs_no) or "none")
        + "; docs say Y but no importer: " + (", ".join(docs_yes) or "none"),
    ]  # fmt: skip
    if t["note"]:
        lines.append(f"# note: {t['note']}")
    lines += [f"# rule: {rule}\t{where}" for rule, where in sorted(t["rules"].items())]
    lines.append("# format: operator TAB the file:line of its importer, sorted")
    lines += [f"{op}\t{where}" for op, where in sorted(t["ops"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="a clone of onnx/onnx-tensorrt with its release tags")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    tables = {v: table(args.repo, v) for v in VERSIONS}
    for version, (base, jetpack, drop, note) in DERIVED.items():
        tables[version] = derive(tables[base], version, jetpack, drop, note)
    for version, t in tables.items():
        (args.out / f"tensorrt-{version}.txt").write_text(render(t))
        print(f"tensorrt-{version}.txt: {len(t['ops'])} operators, rules {sorted(t['rules'])}")


if __name__ == "__main__":
    main()
