"""Benchmark a bundle on the device: latency, throughput and top-1, printed as ONE JSON object on stdout.

    python3 bench.py --bundle DIR [--backend tensorrt|onnxruntime] [--precision fp32|fp16|int8]
                     [--warmup 20] [--runs 200] [--min-time 0] [--threads N] [--eval-limit N]

Runs on JetPack 4.6.x (Python 3.6, TensorRT 8.0.1 on 4.6 and 8.2.1 on 4.6.1+, CUDA 10.2, pycuda) and later
JetPacks: standard library and numpy at module level;
tensorrt, pycuda and onnxruntime are imported only by the backend that needs them.

What is measured, per batch-1 image (names as in trtexec's performance summary):
- `latency_ms`: end-to-end host time, time.perf_counter around H2D copy + inference + D2H copy and the stream
  synchronize (trtexec's "Latency" = H2D + GPU compute + D2H). For onnxruntime it is the time of session.run.
- `gpu_compute_ms` (tensorrt only): CUDA events around the enqueue, trtexec's "GPU Compute Time".
- `top1`: the whole testset.npz (or its first --eval-limit images) at batch 1 through the same backend.
  testset.npz holds raw pixels as uint8 (older bundles: float32); they are cast to float32 before inference.
- `extra.engine_cache` (tensorrt only): "hit" when an engine with the same cache key was reused, "built" when
  it was built in this run (`extra.engine_build_s` seconds); see build_engine.prepare_engine.

Everything but the JSON goes to stderr: file descriptor 1 is pointed at stderr while the benchmark runs (native
libraries included), and the JSON is written to the original stdout last. On any error the JSON has
status "failed" and error "<ExceptionType>: message", and the exit code is 1.
"""

import argparse
import ctypes
import glob
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback

import numpy as np

BACKENDS = ("tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "int8")
ACCURACY_DEVICE = "device"
STATUS_OK = "ok"
STATUS_FAILED = "failed"
COMMAND_TIMEOUT_S = 10
USER_ERRORS = ("HarnessError", "BuildError")  # reported in one line, without a traceback


class HarnessError(RuntimeError):
    """A user error (bad bundle, bad arguments, unavailable backend): reported as status "failed"."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise HarnessError("bad arguments: %s" % message)


def build_parser():
    parser = _ArgumentParser(description="Benchmark a pacb-edge bundle on this device; prints one JSON object.")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--bundle", default=os.path.dirname(here),
                        help="bundle folder (default: the folder above this script's)")
    parser.add_argument("--backend", choices=BACKENDS, default="tensorrt")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    parser.add_argument("--runs", type=int, default=200, help="timed iterations (at least)")
    parser.add_argument("--min-time", type=float, default=0.0,
                        help="keep running timed iterations until at least this many seconds have passed")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--eval-limit", type=int, default=None,
                        help="evaluate top-1 on the first N test images only (0: skip accuracy)")
    parser.add_argument("--workspace-mb", type=int, default=256, help="TensorRT builder workspace")
    parser.add_argument("--allow-slow-precision", action="store_true",
                        help="build fp16/int8 engines even where the GPU has no fast kernels for them")
    return parser


def latency_stats(samples_ms):
    """mean, std, min, max, p50, p90, p99 (nearest rank) and count of per-image latencies in milliseconds."""
    xs = sorted(float(x) for x in samples_ms)
    n = len(xs)
    if n == 0:
        raise HarnessError("no latency samples")
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / n)

    def pct(p):
        return xs[min(n - 1, max(0, (p * n + 99) // 100 - 1))]  # ceil(p/100 * n) - 1, in integers

    return {"mean": mean, "std": std, "min": xs[0], "max": xs[-1], "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "count": n}


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def load_bundle(bundle):
    """manifest (dict, {} when absent), test images x (float32 NCHW, cast from the stored uint8 raw pixels or
    an older bundle's float32) and labels y (int64) of a bundle."""
    if not os.path.isdir(bundle):
        raise HarnessError("bundle folder %s does not exist" % bundle)
    for name in ("model.onnx", "testset.npz"):
        if not os.path.isfile(os.path.join(bundle, name)):
            raise HarnessError("bundle %s has no %s" % (bundle, name))
    manifest_file = os.path.join(bundle, "manifest.json")
    try:
        manifest = _read_json(manifest_file) if os.path.isfile(manifest_file) else {}
    except ValueError as e:
        raise HarnessError("%s is not valid JSON: %s" % (manifest_file, e)) from None
    with np.load(os.path.join(bundle, "testset.npz"), allow_pickle=False) as data:
        if "x" not in data.files or "y" not in data.files:
            raise HarnessError("testset.npz must hold arrays x and y, it holds %s" % ", ".join(data.files))
        x = np.ascontiguousarray(data["x"], dtype=np.float32)
        y = np.asarray(data["y"]).astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[0] == 0:
        raise HarnessError("testset.npz x must be N x C x H x W with N > 0, got shape %s" % (x.shape,))
    if x.shape[0] != y.shape[0]:
        raise HarnessError("testset.npz has %d images but %d labels" % (x.shape[0], y.shape[0]))
    return manifest, x, y


def _check_image_shape(model_shape, image_shape, what):
    """Raise unless the model's input dims (ignoring dynamic ones) fit a batch-1 image of `image_shape`."""
    model_shape = list(model_shape)
    ok = len(model_shape) == len(image_shape)
    if ok:
        for want, got in zip(model_shape, image_shape):
            if isinstance(want, int) and want > 0 and want != got:
                ok = False
    if not ok:
        raise HarnessError("%s input shape %s does not fit test images of shape %s" % (what, model_shape,
                                                                                     list(image_shape)))


class OnnxRuntimeRunner(object):
    """onnxruntime on the CPU; host time only."""

    name = "onnxruntime"

    def __init__(self, model_path, input_name=None, threads=None):
        self.model_path = model_path
        self.input_name = input_name
        self.threads = threads
        self.session = None
        self.output_name = None
        self.ort = None

    def load(self, image_shape):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise HarnessError("the onnxruntime backend needs onnxruntime (%s)" % e) from None
        self.ort = ort
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.model_path, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        if self.input_name is None or self.input_name not in names:
            self.input_name = names[0]
        shape = [d if isinstance(d, int) else -1 for d in inputs[names.index(self.input_name)].shape]
        _check_image_shape(shape, image_shape, "ONNX")
        self.output_name = self.session.get_outputs()[0].name

    def timed_infer(self, image):
        """(output, host ms, None) for one batch-1 image."""
        feed = {self.input_name: image}
        start = time.perf_counter()
        output = self.session.run([self.output_name], feed)[0]
        host_ms = (time.perf_counter() - start) * 1000.0
        return output, host_ms, None

    def facts(self):
        return {"onnxruntime_version": self.ort.__version__ if self.ort else None,
                "onnxruntime_providers": ["CPUExecutionProvider"], "threads": self.threads}

    def close(self):
        self.session = None


# TensorRT DataType name -> numpy type. `trt.nptype` is not used: up to 8.5.1 it maps BOOL to `np.bool`, which
# numpy 1.24 removed, so with a newer numpy every call raises (NVIDIA/TensorRT python/packaging/tensorrt/__init__.py;
# 8.5.3 uses `np.bool_`).
_NP_TYPES = (("FLOAT", "float32"), ("HALF", "float16"), ("INT8", "int8"), ("INT32", "int32"), ("INT64", "int64"),
             ("BOOL", "bool_"), ("UINT8", "uint8"))


def np_dtype(trt, dtype):
    """The numpy type of a TensorRT DataType, without `trt.nptype`."""
    for name, np_name in _NP_TYPES:
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return getattr(np, np_name)
    raise HarnessError("TensorRT data type %s has no numpy equivalent here" % (dtype,))


def _shape_set(ok, name, image_shape, engine_shape):
    """`set_binding_shape` / `set_input_shape` return False when the shape is outside the engine's profile: say so
    here rather than let the next call fail on an unset shape."""
    if ok is False:
        raise HarnessError("TensorRT refused input shape %s for %s (engine shape %s, outside its optimization profile)"
                           % (tuple(image_shape), name, tuple(engine_shape)))


class TensorRTRunner(object):
    """A deserialized TensorRT engine with pinned host and device buffers; host and GPU compute time."""

    name = "tensorrt"

    def __init__(self, engine_file):
        self.engine_file = engine_file
        self.trt = None
        self.cuda = None
        self.runtime = self.engine = self.context = self.stream = None
        self.start_event = self.end_event = None
        self.inputs = []  # [(name, host, device)]
        self.outputs = []
        self.bindings = []
        self.tensor_api = False
        self.device_name = None
        self.capability = None

    def load(self, image_shape):
        build_engine = _build_engine_module()
        trt = build_engine.import_tensorrt()
        cuda = build_engine.cuda_context()
        self.trt, self.cuda = trt, cuda
        device = cuda.Context.get_device()
        self.device_name, self.capability = device.name(), tuple(device.compute_capability())
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        with open(self.engine_file, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise HarnessError("TensorRT %s could not deserialize %s; delete it to rebuild"
                               % (trt.__version__, self.engine_file))
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.start_event, self.end_event = cuda.Event(), cuda.Event()
        self.tensor_api = hasattr(self.engine, "num_io_tensors")  # TensorRT >= 8.5; 8.2 has bindings only
        if self.tensor_api:
            self._allocate_tensors(image_shape)
        else:
            self._allocate_bindings(image_shape)
        if len(self.inputs) != 1 or not self.outputs:
            raise HarnessError("the engine has %d inputs and %d outputs; the harness feeds one image input"
                               % (len(self.inputs), len(self.outputs)))

    def _buffers(self, shape, dtype):
        host = self.cuda.pagelocked_empty(tuple(int(d) for d in shape), dtype)
        return host, self.cuda.mem_alloc(max(1, host.nbytes))

    def _allocate_bindings(self, image_shape):
        trt, engine = self.trt, self.engine
        for i in range(engine.num_bindings):
            if engine.binding_is_input(i):
                shape = list(engine.get_binding_shape(i))
                _check_image_shape(shape, image_shape, "engine")
                if any(d < 0 for d in shape):
                    _shape_set(self.context.set_binding_shape(i, tuple(image_shape)), engine.get_binding_name(i),
                               image_shape, shape)
        for i in range(engine.num_bindings):
            name = engine.get_binding_name(i)
            shape = self.context.get_binding_shape(i)
            host, device = self._buffers(shape, np_dtype(trt, engine.get_binding_dtype(i)))
            self.bindings.append(int(device))
            (self.inputs if engine.binding_is_input(i) else self.outputs).append((name, host, device))

    def _allocate_tensors(self, image_shape):
        trt, engine = self.trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = dict((n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT) for n in names)
        for name in names:
            if is_input[name]:
                shape = list(engine.get_tensor_shape(name))
                _check_image_shape(shape, image_shape, "engine")
                if any(d < 0 for d in shape):
                    _shape_set(self.context.set_input_shape(name, tuple(image_shape)), name, image_shape, shape)
        for name in names:
            host, device = self._buffers(self.context.get_tensor_shape(name),
                                         np_dtype(trt, engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, int(device))
            (self.inputs if is_input[name] else self.outputs).append((name, host, device))

    def timed_infer(self, image):
        """(first output, end-to-end host ms, GPU compute ms) for one batch-1 image."""
        cuda, stream = self.cuda, self.stream
        _, host_in, device_in = self.inputs[0]
        host_in[...] = image.reshape(host_in.shape)  # into pinned memory, outside the timed region
        start = time.perf_counter()
        cuda.memcpy_htod_async(device_in, host_in, stream)
        self.start_event.record(stream)
        if self.tensor_api:
            ok = self.context.execute_async_v3(stream.handle)
        else:
            ok = self.context.execute_async_v2(self.bindings, stream.handle)
        self.end_event.record(stream)
        for _, host_out, device_out in self.outputs:
            cuda.memcpy_dtoh_async(host_out, device_out, stream)
        stream.synchronize()
        host_ms = (time.perf_counter() - start) * 1000.0
        if ok is False:
            raise HarnessError("TensorRT execute_async failed")
        gpu_ms = self.end_event.time_since(self.start_event)
        return np.array(self.outputs[0][1], copy=True), host_ms, float(gpu_ms)

    def facts(self):
        return {"tensorrt_version": self.trt.__version__ if self.trt else None,
                "cuda_device": self.device_name,
                "compute_capability": "%d.%d" % self.capability if self.capability else None}

    def close(self):
        """Free device memory and TensorRT objects while the CUDA context still exists."""
        for _, _, device in self.inputs + self.outputs:
            try:
                device.free()
            except Exception:  # noqa: BLE001 - freeing during teardown must not mask the real result
                pass
        self.inputs, self.outputs, self.bindings = [], [], []
        self.context = self.engine = self.runtime = None
        self.stream = self.start_event = self.end_event = None


def _build_engine_module():
    """build_engine.py from this script's folder (it travels beside bench.py to the device)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import build_engine

    return build_engine


def measure(runner, images, warmup, runs, min_time):
    """Warm up, then time at least `runs` iterations and at least `min_time` seconds, cycling over `images`.

    Returns (host ms samples, GPU compute ms samples or [], wall seconds of the timed phase)."""
    n = len(images)
    for i in range(warmup):
        runner.timed_infer(images[i % n])
    host, gpu = [], []
    start = time.perf_counter()
    i = 0
    while i < runs or time.perf_counter() - start < min_time:
        _, host_ms, gpu_ms = runner.timed_infer(images[i % n])
        host.append(host_ms)
        if gpu_ms is not None:
            gpu.append(gpu_ms)
        i += 1
    return host, gpu, time.perf_counter() - start


def evaluate(runner, images, labels):
    """Top-1 accuracy of `runner` on batch-1 `images`; returns (top1, n)."""
    correct = 0
    for image, label in zip(images, labels):
        output, _, _ = runner.timed_infer(image)
        correct += int(int(np.argmax(np.asarray(output).reshape(-1))) == int(label))
    n = len(images)
    return (float(correct) / n if n else None), n


def _command_output(cmd):
    """Stripped stdout+stderr of `cmd`, or None when it is not installed, fails or times out."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _gpu_devfreq():
    """cur/min/max GPU clock in Hz from devfreq (min == max once jetson_clocks has locked them)."""
    for folder in sorted(glob.glob("/sys/class/devfreq/*")):
        name = os.path.basename(folder)
        if any(key in name for key in ("gpu", "gp10b", "gv11b", "ga10b")):
            freqs = {}
            for key in ("cur_freq", "min_freq", "max_freq"):
                value = _read_text(os.path.join(folder, key))
                freqs[key] = int(value) if value and value.isdigit() else None
            freqs["node"] = name
            return freqs
    return None


def device_facts(runner=None):
    """What the measurement depends on besides the model: board, JetPack/L4T, power mode, clocks, versions."""
    facts = {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "board": _read_text("/proc/device-tree/model"),
        "l4t_release": (_read_text("/etc/nv_tegra_release") or "").split("\n")[0] or None,
        "nvpmodel": _command_output(["nvpmodel", "-q"]),
        "jetson_clocks": _command_output(["jetson_clocks", "--show"]) or "unknown",
        "gpu_devfreq": _gpu_devfreq(),
    }
    if runner is not None:
        facts.update(runner.facts())
    return facts


def _empty_record(args):
    return {
        "status": STATUS_FAILED, "error": None,
        "runner": getattr(args, "backend", None), "precision": getattr(args, "precision", None),
        "latency_ms": {}, "gpu_compute_ms": None, "throughput_ips": None,
        "top1": None, "n_eval": None, "accuracy_source": ACCURACY_DEVICE,
        "warmup": getattr(args, "warmup", None), "runs": None, "threads": getattr(args, "threads", None),
        "device_facts": {}, "spec": None,
        "extra": {"engine": None, "engine_cache": None, "engine_build_s": None, "input_shape": None},
    }


def run_benchmark(args, record=None):
    """Run the benchmark described by parsed `args`; returns the result record (a JSON-ready dict).

    `record` (from `_empty_record`) is filled in as the run goes, so a failure still reports what was known.
    """
    record = _empty_record(args) if record is None else record
    if args.warmup < 0 or args.runs < 1 or args.min_time < 0:
        raise HarnessError("need --warmup >= 0, --runs >= 1 and --min-time >= 0")
    if args.eval_limit is not None and args.eval_limit < 0:
        raise HarnessError("--eval-limit must be >= 0")
    bundle = os.path.abspath(args.bundle)
    manifest, x, y = load_bundle(bundle)
    images = [x[i:i + 1] for i in range(x.shape[0])]
    image_shape = list(images[0].shape)
    input_spec = manifest.get("input") or {}
    record["spec"] = manifest.get("spec")
    record["extra"].update({"input_shape": image_shape, "input_name": input_spec.get("name"),
                            "runs_requested": args.runs, "min_time_s": args.min_time})

    if args.backend == "onnxruntime":
        if args.precision != "fp32":
            raise HarnessError("the onnxruntime backend runs the fp32 model.onnx only, not %s" % args.precision)
        runner = OnnxRuntimeRunner(os.path.join(bundle, "model.onnx"), input_spec.get("name"), args.threads)
        record["extra"]["latency_definition"] = "host time of session.run (CPU)"
    else:
        engine, cache_info = _build_engine_module().prepare_engine(bundle, args.precision, args.workspace_mb,
                                                                   args.allow_slow_precision)
        runner = TensorRTRunner(engine)
        record["extra"]["engine"] = engine
        record["extra"].update(cache_info)
        record["extra"]["latency_definition"] = (
            "latency_ms: perf_counter around H2D + execute + D2H + sync (trtexec Latency); "
            "gpu_compute_ms: CUDA events around the enqueue (trtexec GPU Compute Time)")
    try:
        runner.load(image_shape)
        record["device_facts"] = device_facts(runner)
        host, gpu, wall_s = measure(runner, images, args.warmup, args.runs, args.min_time)
        limit = len(images) if args.eval_limit is None else min(args.eval_limit, len(images))
        top1, n_eval = evaluate(runner, images[:limit], y[:limit])
    finally:
        runner.close()

    stats = latency_stats(host)
    record.update({
        "status": STATUS_OK,
        "latency_ms": stats,
        "gpu_compute_ms": latency_stats(gpu) if gpu else None,
        "throughput_ips": 1000.0 / stats["mean"] if stats["mean"] > 0 else None,
        "top1": top1,
        "n_eval": n_eval,
        "runs": stats["count"],
    })
    record["extra"]["timed_wall_s"] = wall_s
    return record


def _flush_native_stdio():
    try:
        ctypes.CDLL(None).fflush(None)
    except Exception:  # noqa: BLE001 - best effort: not every libc is reachable this way
        pass


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def main(argv=None):
    """Run, print the one JSON record on the real stdout, return the exit code (0 ok, 1 failed)."""
    args, error = None, None
    try:
        args = build_parser().parse_args(argv)  # --help prints to stdout and exits here
    except HarnessError as e:
        error = e
    record = _empty_record(args)
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # from here on anything written to fd 1 (Python or native code) lands on stderr
    try:
        if error is not None:
            raise error
        record = run_benchmark(args, record)
        code = 0
    except Exception as e:  # noqa: BLE001 - the host reads the failure from the JSON, not a traceback
        if type(e).__name__ in USER_ERRORS:
            sys.stderr.write("bench: error: %s\n" % e)
        else:
            traceback.print_exc(file=sys.stderr)
        record["status"] = STATUS_FAILED
        record["error"] = "%s: %s" % (type(e).__name__, str(e).strip() or repr(e))
        if not record["device_facts"]:
            try:
                record["device_facts"] = device_facts()
            except Exception:  # noqa: BLE001 - facts are a bonus on the failure path
                pass
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    _flush_native_stdio()
    _write_all(real_stdout, (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8"))
    os.close(real_stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
