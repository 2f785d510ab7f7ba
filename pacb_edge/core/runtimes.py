"""The channel multiple each deployment runtime wants, and the latency targets a prune can aim at.

A runtime runs a convolution fastest when its channel counts are a multiple of the width its kernels work in;
otherwise it pads the channels (and wastes the padding) or leaves the layer on a slower path. Pruning to odd counts
gives models with fewer MACs that are no faster. `--round-to auto` rounds every kept channel count *up* to the
multiple of the target runtime, from `CHANNEL_MULTIPLES`: each row names the source that says so, or the
measurement that stands in for one or checks it (`benchmarks/channel_steps.py`; `measured` says what it found).

This module is pure Python (no torch), so the CLI can resolve a target while it checks options.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError

# What `--latency-target` names: where the pruned model will run and be measured.
LATENCY_TARGETS = ("onnxruntime", "tflite", "tflite-int8", "jetson", "android")
HOST_TARGETS = ("onnxruntime", "tflite", "tflite-int8")
# The precisions every format and runtime here speaks (TensorRT engines, TFLite files, latency targets).
PRECISIONS = ("fp32", "fp16", "int8")
ANDROID_DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi")


@dataclass(frozen=True)
class ChannelMultiple:
    """One row of the table: the channel multiple of a runtime, precision and instruction set, and its source."""

    runtime: str  # onnxruntime | xnnpack | tflite-gpu | nnapi | tensorrt | tflite-builtin
    precision: str  # fp32 | fp16 | int8
    isa: str  # avx2 | avx512 | arm64 | cuda-tensor-cores | cuda-maxwell | any
    multiple: int
    source: str
    note: str = ""
    measured: str = ""  # what benchmarks/channel_steps.py measured where this machine runs the runtime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ORT_PLATFORM = "microsoft/onnxruntime onnxruntime/core/mlas/lib/platform.cpp"
_ORT_NCHWC = (
    "onnxruntime/core/optimizer/nchwc_transformer.cc: a depthwise or grouped conv whose output channels are not a "
    "multiple of the block stays in NCHW; a dense conv needs its input channels to be one"
)
_XNN_GEMM = "google/XNNPACK src/configs/gemm-config.c"
_STEPS = "benchmarks/channel_steps.py, 2026-12-03, 2-core AVX-512 VM, 1 thread, C = 8..64: "
_TRT_GUIDE = (
    "TensorRT Developer Guide, 'Optimizing for Tensor Cores': alignment on the I/O channel dimension of convolutions, "
    "FP16 8, INT8 32; misaligned tensors are padded"
)

CHANNEL_MULTIPLES: tuple[ChannelMultiple, ...] = (
    ChannelMultiple("onnxruntime", "fp32", "avx2", 8, f"{_ORT_PLATFORM}: `NchwcBlockSize = 8` on x86-64; {_ORT_NCHWC}"),
    ChannelMultiple(
        "onnxruntime",
        "fp32",
        "avx512",
        16,
        f"{_ORT_PLATFORM}: `NchwcBlockSize = 16` when the CPU has AVX-512F; {_ORT_NCHWC}",
        measured=_STEPS + "every width that is not a multiple of 16 is slower than the next multiple (1.26x on "
        "average): rounding up is faster",
    ),
    ChannelMultiple(
        "onnxruntime",
        "fp32",
        "arm64",
        1,
        f"{_ORT_PLATFORM}: no NCHWc block on ARM64 unless built with onnxruntime_USE_ARM_NEON_NCHWC (off by default)",
        "no layout fast path to stay on; counts are left as the criterion chose them",
    ),
    ChannelMultiple(
        "xnnpack",
        "fp32",
        "avx2",
        16,
        f"{_XNN_GEMM}: f32 GEMM `nr = 16` (FMA3); output channels are zero-padded to the tile",
    ),
    ChannelMultiple(
        "xnnpack",
        "fp32",
        "avx512",
        16,
        f"{_XNN_GEMM}: f32 GEMM `nr = 16` (FMA3 kernels; 32 for the AVX-512F kernels added 2024-11); output "
        "channels are zero-padded to the tile",
        "the source's 32 is not what LiteRT 2.3 does here: its steps come every 16 channels",
        measured=_STEPS + "latency steps up 18-25 % after each multiple of 16 and rises ~15 % within a step",
    ),
    ChannelMultiple("xnnpack", "fp32", "arm64", 8, f"{_XNN_GEMM}: f32 GEMM `nr = 8` on ARM64 NEON (16 on Cortex-X4)"),
    ChannelMultiple("xnnpack", "int8", "avx2", 8, f"{_XNN_GEMM}: qs8-qc8w GEMM `nr = 8` (AVX2, AVX-VNNI)"),
    ChannelMultiple(
        "xnnpack",
        "int8",
        "avx512",
        16,
        f"{_XNN_GEMM}: qs8-qc8w GEMM `nr = 16` (AVX-512 SKX and VNNI)",
        measured=_STEPS + "flat within each multiple of 16, +20-35 % after it: rounding up is free",
    ),
    ChannelMultiple(
        "xnnpack",
        "int8",
        "arm64",
        16,
        f"{_XNN_GEMM}: qs8-qc8w GEMM `nr = 16` with NEON dot product or i8mm (and on Cortex-A55); 8 without",
    ),
    ChannelMultiple(
        "tflite-gpu",
        "fp32",
        "any",
        4,
        "tensorflow/lite/delegates/gpu/README.md: 'tensor data is sliced into 4-channels'; cl/tensor.h "
        "`Slices() = DivideRoundUp(c, 4)`",
    ),
    ChannelMultiple("tflite-gpu", "fp16", "any", 4, "as FP32: the GPU delegate slices every tensor into 4 channels"),
    ChannelMultiple(
        "nnapi",
        "any",
        "any",
        8,
        "no source: the NNAPI guide gives no alignment, drivers decide",
        "an assumption, not measured (no phone here): 8 keeps the GPU's 4-channel slices and NEON's 8-wide tiles "
        "whole; `pacb-edge profile --target android --delegate nnapi` measures your phone",
    ),
    ChannelMultiple(
        "tflite-builtin",
        "any",
        "arm64",
        8,
        "google/ruy ruy/kernel_arm.h: TFLite's own GEMM kernels (XNNPACK off) on ARM64 NEON work in 8x8 blocks "
        "(`KernelParamsFloat<8, 8>`, `FixedKernelLayout<kRowMajor, 1, 8>`)",
        "not measured here (no phone)",
    ),
    ChannelMultiple("tensorrt", "fp16", "cuda-tensor-cores", 8, _TRT_GUIDE),
    ChannelMultiple("tensorrt", "int8", "cuda-tensor-cores", 32, _TRT_GUIDE),
    ChannelMultiple(
        "tensorrt",
        "fp32",
        "cuda-tensor-cores",
        4,
        "TensorRT Developer Guide, 'Optimizing for Tensor Cores': TF32 alignment 4",
    ),
    ChannelMultiple(
        "tensorrt",
        "fp16",
        "cuda-maxwell",
        8,
        f"{_TRT_GUIDE} (the guide's figure; the Nano's Maxwell GPU has no Tensor Cores and no documented multiple)",
        "on the Nano FP16 runs as half2 pairs (TensorRT's kCHW2 format), so any even count avoids a padded lane; "
        "8 also serves the JetPack 5/6 modules with Tensor Cores",
    ),
    ChannelMultiple(
        "tensorrt",
        "int8",
        "cuda-maxwell",
        32,
        f"{_TRT_GUIDE} (the guide's figure; the Nano has no fast INT8 and refuses INT8 builds)",
    ),
    ChannelMultiple(
        "tensorrt",
        "fp32",
        "cuda-maxwell",
        1,
        "no source gives an FP32 multiple without Tensor Cores",
    ),
)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def host_isa() -> str:
    """The host's instruction set as the table names it: avx512 (AVX-512F), avx2, arm64, or other."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if machine in ("x86_64", "amd64"):
        flags = _cpu_flags()
        if "avx512f" in flags:
            return "avx512"
        return "avx2"  # every x86-64 build of onnxruntime uses the 8-wide NCHWc block; XNNPACK's SSE/AVX tiles are 8
    return "other"


def lookup(runtime: str, precision: str, isa: str) -> ChannelMultiple:
    """The table's row for a runtime, precision and instruction set (rows for `any` match everything)."""
    for row in CHANNEL_MULTIPLES:
        if row.runtime == runtime and row.precision in (precision, "any") and row.isa in (isa, "any"):
            return row
    known = sorted({(r.runtime, r.precision, r.isa) for r in CHANNEL_MULTIPLES})
    raise PacbEdgeError(
        f"no channel multiple is known for {runtime} {precision} on {isa}; known: "
        + ", ".join("/".join(k) for k in known)
    )


def check_target(target: str) -> str:
    if target not in LATENCY_TARGETS:
        raise PacbEdgeError(f"unknown --latency-target {target!r}; choose one of {', '.join(LATENCY_TARGETS)}")
    return target


def target_multiple(
    target: str,
    *,
    precision: str | None = None,
    delegate: str | None = None,
    isa: str | None = None,
) -> ChannelMultiple:
    """The channel multiple of a latency target.

    - `onnxruntime`, `tflite` (XNNPACK FP32), `tflite-int8` (XNNPACK INT8): this host (`host_isa()`) unless `isa`.
    - `jetson`: TensorRT at `precision` (default fp16) on the Nano's Maxwell GPU unless `isa="cuda-tensor-cores"`.
    - `android`: the phone's ARM64 CPU with `delegate` (default xnnpack) at `precision` (default fp32).
    """
    check_target(target)
    if target == "onnxruntime":
        return lookup("onnxruntime", "fp32", isa or host_isa())
    if target in ("tflite", "tflite-int8"):
        host = isa or host_isa()
        if host not in ("avx2", "avx512", "arm64"):
            host = "avx2"
        return lookup("xnnpack", "int8" if target == "tflite-int8" else "fp32", host)
    if target == "jetson":
        precision = precision or "fp16"
        if precision not in PRECISIONS:
            raise PacbEdgeError(f"unknown Jetson precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        return lookup("tensorrt", precision, isa or "cuda-maxwell")
    delegate = delegate or "xnnpack"
    if delegate not in ANDROID_DELEGATES:
        raise PacbEdgeError(f"unknown delegate {delegate!r}; use one of {', '.join(ANDROID_DELEGATES)}")
    precision = precision or "fp32"
    if delegate == "xnnpack":
        return lookup("xnnpack", "int8" if precision == "int8" else "fp32", isa or "arm64")
    if delegate == "gpu":
        return lookup("tflite-gpu", "fp16" if precision == "fp16" else "fp32", "any")
    if delegate == "nnapi":
        return lookup("nnapi", "any", "any")
    return lookup("tflite-builtin", "any", isa or "arm64")


def parse_round_to(value: str | int) -> int | str:
    """`--round-to`: "auto" (the target runtime's multiple) or a multiple >= 1."""
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            number = int(text)
        except ValueError:
            raise PacbEdgeError(f"--round-to takes 'auto' or a whole number >= 1, got {value!r}") from None
    if number < 1:
        raise PacbEdgeError(f"--round-to must be 'auto' or >= 1, got {number}")
    return number


def resolve_round_to(
    round_to: str | int, target: str, *, precision: str | None = None, delegate: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The multiple a prune rounds to, and the record of where it came from (for the spec and the reports)."""
    value = parse_round_to(round_to)
    if value == "auto":
        row = target_multiple(target, precision=precision, delegate=delegate)
        return row.multiple, {"round_to": "auto", "multiple": row.multiple, "target": target, **row.to_dict()}
    return int(value), {"round_to": int(value), "multiple": int(value), "target": target, "source": "--round-to"}
