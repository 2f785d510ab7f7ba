"""How each host runtime's latency responds to a layer's channel count: the measurement behind `--round-to auto`.

One block of the shape pruning shrinks (1x1 conv 64 -> C, 3x3 depthwise on C, 1x1 conv C -> 64, each followed by
ReLU), at every C from 8 to 64, at 16x16, batch 1, one pinned thread. For each runtime (onnxruntime's CPU EP,
LiteRT with XNNPACK in FP32 and in INT8) all 57 widths run in one interleaved measurement, so drift cancels.
For each candidate multiple M the script reports how often a width that is not a multiple of M is *slower* than
the next multiple of M (rounding up costs nothing there) and the mean latency of a misaligned width relative to
that of the next multiple.

    .venv/bin/python benchmarks/channel_steps.py --out benchmarks/results/channel_steps

Writes channel_steps.{json,csv,png} into --out. TFLite files are made by TensorFlow's own converter from an
equivalent Keras block (INT8 calibrated on random inputs: the latency does not depend on the ranges).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTHS = list(range(8, 65))
MULTIPLES = (4, 8, 16, 32)


def onnx_block(c: int, size: int, path: Path) -> None:
    import torch
    from torch import nn

    block = nn.Sequential(
        nn.Conv2d(64, c, 1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU(), nn.Conv2d(c, 64, 1)
    ).eval()
    torch.onnx.export(block, (torch.zeros(1, 64, size, size),), str(path), opset_version=17, dynamo=False)


def tflite_block(c: int, size: int, int8: bool) -> bytes:
    import tensorflow as tf

    inp = tf.keras.Input((size, size, 64), batch_size=1)
    x = tf.keras.layers.Conv2D(c, 1, activation="relu")(inp)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    out = tf.keras.layers.Conv2D(64, 1)(x)
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out))
    if int8:
        rng = np.random.default_rng(0)

        def data():
            for _ in range(8):
                yield [rng.standard_normal((1, size, size, 64)).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def time_interleaved(calls: dict, warmup: int, runs: int) -> dict[int, float]:
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    samples = {k: [] for k in calls}
    for _ in range(runs):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


def measure(runtime: str, size: int, threads: int, warmup: int, runs: int, work: Path) -> dict[int, float]:
    calls = {}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        x = np.random.default_rng(0).standard_normal((1, 64, size, size)).astype(np.float32)
        for c in WIDTHS:
            path = work / f"block_{c}.onnx"
            onnx_block(c, size, path)
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            calls[c] = lambda s=sess, n=name: s.run(None, {n: x})
    else:
        from ai_edge_litert.interpreter import Interpreter

        int8 = runtime == "tflite-int8"
        for c in WIDTHS:
            interp = Interpreter(model_content=tflite_block(c, size, int8), num_threads=threads)
            interp.allocate_tensors()
            inp = interp.get_input_details()[0]
            interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
            calls[c] = interp.invoke
    return time_interleaved(calls, warmup, runs)


def step_summary(latency: dict[int, float]) -> dict[str, dict[str, float]]:
    """Per multiple M: the share of misaligned widths slower than (or as slow as) the next multiple of M, and their
    mean latency relative to it."""
    out = {}
    for m in MULTIPLES:
        pairs = [(latency[c], latency[-(-c // m) * m]) for c in WIDTHS if c % m and -(-c // m) * m in latency]
        if pairs:
            out[str(m)] = {
                "misaligned_widths": len(pairs),
                "share_not_faster_than_next_multiple": sum(a >= 0.98 * b for a, b in pairs) / len(pairs),
                "mean_latency_vs_next_multiple": float(np.mean([a / b for a, b in pairs])),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/channel_steps"))
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--runtimes", default="onnxruntime,tflite,tflite-int8")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pacb_edge.core.runtimes import host_isa

    started = time.strftime("%Y-%m-%d %H:%M")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in args.runtimes.split(","):
            t0 = time.perf_counter()
            latency = measure(runtime, args.size, args.threads, args.warmup, args.runs, Path(tmp))
            results[runtime] = {
                "latency_ms": latency,
                "steps": step_summary(latency),
                "seconds": time.perf_counter() - t0,
            }
            print(runtime, json.dumps(results[runtime]["steps"]), flush=True)
    meta = {
        "date": started,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, isa {host_isa()}",
        "command": " ".join(["benchmarks/channel_steps.py", *(argv if argv is not None else sys.argv[1:])]),
        "block": f"1x1 conv 64->C, 3x3 depthwise C, 1x1 conv C->64 at {args.size}x{args.size}, batch 1",
        "threads": args.threads,
        "runs": args.runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "channel_steps.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    with open(args.out / "channel_steps.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["channels", *results])
        for c in WIDTHS:
            writer.writerow([c, *(f"{results[r]['latency_ms'][c]:.5f}" for r in results)])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.6 * len(results)), sharex=True)
    for ax, (runtime, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        ax.plot(WIDTHS, [r["latency_ms"][c] for c in WIDTHS], marker=".")
        for c in WIDTHS:
            if c % 16 == 0:
                ax.axvline(c, color="grey", lw=0.5)
        ax.set_ylabel(f"{runtime}\nms")
    np.atleast_1d(axes)[-1].set_xlabel("channels C (grey: multiples of 16)")
    fig.suptitle(meta["block"], fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "channel_steps.png", dpi=120)
    print(f"wrote {args.out}/channel_steps.{{json,csv,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
