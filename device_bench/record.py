"""The one result record every runner returns (host, Jetson, Android), and the latency statistics it carries."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

STATUS_OK = "ok"  # ran, accuracy at or above --min-accuracy
STATUS_LOW_ACCURACY = "low_accuracy"  # ran, accuracy under --min-accuracy
STATUS_FAILED = "failed"  # did not run; `error` says why

ACCURACY_DEVICE = "device"
ACCURACY_HOST = "host-evaluated"


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    """mean, std, min, max, p50, p90, p99 of per-image latencies in milliseconds (nearest-rank percentiles)."""
    if not samples_ms:
        raise ValueError("no latency samples")
    xs = sorted(float(x) for x in samples_ms)
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / n)

    def pct(p: float) -> float:
        return xs[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]

    return {
        "mean": mean,
        "std": std,
        "min": xs[0],
        "max": xs[-1],
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "count": n,
    }


@dataclass
class BenchResult:
    """One artifact's measurement. `latency_ms` holds `latency_stats` of per-image (batch 1) latency."""

    artifact: str
    format: str  # torch | onnx | tflite | trt
    device: str  # cpu | jetson | android
    runner: str  # torch | onnxruntime | litert | tensorrt | benchmark_model
    status: str = STATUS_OK
    error: str | None = None
    precision: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    throughput_ips: float | None = None
    top1: float | None = None
    accuracy_source: str | None = None  # "device" or "host-evaluated"
    n_eval: int | None = None
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    flops: int | None = None
    threads: int | None = None
    warmup: int | None = None
    runs: int | None = None
    device_facts: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    speedup_vs_baseline: float | None = None
    timestamp: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def per_image_ms(self) -> float | None:
        return self.latency_ms.get("p50") if self.latency_ms else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_image_ms"] = self.per_image_ms
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
