"""Build a TensorRT engine from a bundle's model.onnx on the device that will run it.

Runs on JetPack 4.6.x (Python 3.6, TensorRT 8.0.1 on 4.6 and 8.2.1 on 4.6.1+, CUDA 10.2, pycuda) and later
JetPacks: standard library and numpy at module level,
tensorrt and pycuda imported only inside the functions that need them.

An engine only runs on the TensorRT version and GPU that built it, so its file name carries both
(`engine_filename`), and a sidecar `<engine>.json` holds its whole cache key (`engine_key`): the SHA-256 of the
ONNX (and of calibration.npy for INT8), the precision, the TensorRT version, the GPU name and its compute
capability. An engine is reused only while every part matches (`prepare_engine` says "hit" or "built").

CLI: python3 build_engine.py BUNDLE --precision fp32|fp16|int8 [--workspace-mb 256]
Prints the engine path on stdout.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")
CACHE_HIT = "hit"
CACHE_BUILT = "built"
MODEL_FILE = "model.onnx"
CALIBRATION_FILE = "calibration.npy"
DEFAULT_WORKSPACE_MB = 256


class BuildError(RuntimeError):
    """The engine could not be built; the message says why and what to do."""


def device_slug(name):
    """`NVIDIA Tegra X1` -> `nvidia-tegra-x1`: a device name made safe for a file name."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    return slug or "unknown-gpu"


def engine_filename(precision, trt_version, device_name, capability):
    """The engine's file name, e.g. `model_fp16_trt8.2.1.8_nvidia-tegra-x1_sm53.engine`.

    `capability` is the CUDA compute capability as a (major, minor) pair.
    """
    _check_precision(precision)
    version = re.sub(r"[^A-Za-z0-9.]+", "-", str(trt_version)).strip("-") or "unknown"
    major, minor = int(capability[0]), int(capability[1])
    return "model_%s_trt%s_%s_sm%d%d.engine" % (precision, version, device_slug(device_name), major, minor)


def calibration_cache_path(bundle, precision="int8"):
    """Where the INT8 calibration cache of a bundle lives (`calib_<precision>.cache`)."""
    return os.path.join(bundle, "calib_%s.cache" % precision)


def _pycuda_error(error):
    return BuildError("pycuda is not importable (%s); on JetPack install it with `pip3 install pycuda`" % error)


def cuda_device_info(index=0):
    """(name, (major, minor)) of CUDA device `index`, read with pycuda (no context needed)."""
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise _pycuda_error(e) from None
    cuda.init()
    if cuda.Device.count() <= index:
        raise BuildError("no CUDA device %d (pycuda sees %d)" % (index, cuda.Device.count()))
    device = cuda.Device(index)
    return device.name(), tuple(device.compute_capability())


def cuda_context():
    """Make device 0's primary CUDA context current (once per process) and return pycuda.driver.

    TensorRT's runtime API works in whatever context is current, so the builder, the calibrator's buffers and
    the benchmark all share this one (a second context costs ~100 MB on a Jetson Nano).
    """
    try:
        try:
            import pycuda.autoprimaryctx  # noqa: F401  (pycuda >= 2021.1)
        except ImportError:
            import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda
    except ImportError as e:
        raise _pycuda_error(e) from None
    return cuda


def import_tensorrt():
    """The tensorrt module, or a BuildError that says how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BuildError(
            "the TensorRT Python API is not importable (%s); on JetPack 4.6 it comes with the "
            "python3-libnvinfer package (sudo apt-get install python3-libnvinfer)" % e
        ) from None
    return trt


def engine_path(bundle, precision):
    """Path of the engine for this bundle, precision, installed TensorRT and CUDA device 0."""
    trt = import_tensorrt()
    name, capability = cuda_device_info()
    return os.path.join(bundle, engine_filename(precision, trt.__version__, name, capability))


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_sources(bundle, precision):
    """What an engine depends on besides TensorRT and the GPU: the SHA-256 of its input files."""
    files = [("onnx_sha256", MODEL_FILE)]
    if precision == "int8":
        files.append(("calibration_sha256", CALIBRATION_FILE))
    sources = {}
    for key, name in files:
        path = os.path.join(bundle, name)
        if not os.path.isfile(path):
            raise BuildError("bundle %s has no %s" % (bundle, name))
        sources[key] = file_sha256(path)
    return sources


def engine_key(bundle, precision, trt_version, device_name, capability):
    """The engine's cache key, kept in its sidecar json: input hashes, precision, TensorRT version and GPU."""
    _check_precision(precision)
    key = engine_sources(bundle, precision)
    key.update({
        "precision": precision,
        "tensorrt": str(trt_version),
        "gpu": str(device_name),
        "compute_capability": "%d.%d" % (int(capability[0]), int(capability[1])),
    })
    return key


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise BuildError("unknown precision %r; known: %s" % (precision, ", ".join(PRECISIONS)))


def _atomic_write_bytes(path, data):
    """Write `data` to `path` through a temporary file in the same folder and os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _engine_is_current(path, key):
    """True when `path` is a non-empty engine whose sidecar holds exactly `key`."""
    return os.path.isfile(path) and os.path.getsize(path) > 0 and _read_json(path + ".json") == key


def no_cache_value(trt_version):
    """What `read_calibration_cache` returns when there is no cache, for this TensorRT version's Python binding.

    8.0.1 casts the return value to `py::buffer` unconditionally, and `None` raises ("Cannot cast None to py::buffer",
    the comment 8.2.1 added with its `is_none()` check: NVIDIA/TensorRT python/src/infer/pyInt8.cpp): the first INT8
    build would abort. An empty buffer is a cache of length 0, which TensorRT ignores and calibrates. 8.2 and later
    take `None`, the documented value.
    """
    return b"" if _version_tuple(trt_version) < (8, 2) else None


def _version_tuple(version):
    return tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])


def _make_calibrator(trt, batches, cache_path, cache_key):
    """An IInt8EntropyCalibrator2 that feeds `batches` (float32 arrays of the network input's shape) from
    pycuda device memory and keeps its cache in `cache_path`, valid only while `cache_key` matches."""
    cuda = cuda_context()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = batches
            self.index = 0
            self.device_input = cuda.mem_alloc(batches[0].nbytes)

        def get_batch_size(self):
            return 1  # explicit-batch network: each batch already has the input's full shape

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            cuda.memcpy_htod(self.device_input, self.batches[self.index])
            self.index += 1
            return [int(self.device_input)]

        def read_calibration_cache(self):
            # The bytes are kept on the calibrator: TensorRT 8.0.1's binding holds the returned buffer only while the
            # call lasts and TensorRT reads the pointer later (8.2.1 keeps its own reference: NVIDIA/TensorRT
            # python/src/infer/pyInt8.cpp, `mCache`).
            if os.path.isfile(cache_path) and _read_json(cache_path + ".json") == cache_key:
                sys.stderr.write("build_engine: using calibration cache %s\n" % cache_path)
                with open(cache_path, "rb") as f:
                    self.cache = f.read()
                return self.cache
            return no_cache_value(trt.__version__)

        def write_calibration_cache(self, cache):
            _atomic_write_bytes(cache_path, bytes(cache))
            _atomic_write_bytes(cache_path + ".json", json.dumps(cache_key, sort_keys=True).encode("utf-8"))

    return EntropyCalibrator()


def _calibration_batches(bundle, input_shape):
    """calibration.npy cut into float32 batches of the network's batch size."""
    path = os.path.join(bundle, CALIBRATION_FILE)
    if not os.path.isfile(path):
        raise BuildError("INT8 needs real calibration images in %s; export the bundle with them" % path)
    images = np.load(path, allow_pickle=False).astype(np.float32)
    if images.ndim != len(input_shape) or tuple(images.shape[1:]) != tuple(input_shape[1:]):
        raise BuildError(
            "calibration.npy has shape %s, the network input is %s" % (images.shape, tuple(input_shape))
        )
    batch = int(input_shape[0])
    n = (images.shape[0] // batch) * batch
    if n == 0:
        raise BuildError("calibration.npy holds %d images, fewer than one batch of %d" % (images.shape[0], batch))
    return [np.ascontiguousarray(images[i:i + batch]) for i in range(0, n, batch)]


def _manifest_input_shape(bundle):
    manifest = _read_json(os.path.join(bundle, "manifest.json")) or {}
    shape = (manifest.get("input") or {}).get("shape")
    return [int(d) for d in shape] if shape else None


def _parse_onnx(trt, bundle, logger):
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(1 << int(flag) if flag is not None else 0)
    parser = trt.OnnxParser(network, logger)
    model = os.path.join(bundle, MODEL_FILE)
    if not os.path.isfile(model):
        raise BuildError("no %s in bundle %s" % (MODEL_FILE, bundle))
    with open(model, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(  # one line: the host shows the last stderr line of a failed build
            "TensorRT %s could not parse %s: %s" % (trt.__version__, model, "; ".join(errors) or "no parser errors")
        )
    return builder, network, parser


def _fixed_input_shape(network, bundle):
    """The network input's shape with any dynamic (-1) dimension taken from manifest.json (batch 1 else)."""
    shape = [int(d) for d in network.get_input(0).shape]
    if all(d > 0 for d in shape):
        return shape, False
    wanted = _manifest_input_shape(bundle)
    fixed = []
    for i, d in enumerate(shape):
        if d > 0:
            fixed.append(d)
        elif wanted and i < len(wanted) and wanted[i] > 0:
            fixed.append(wanted[i])
        elif i == 0:
            fixed.append(1)
        else:
            raise BuildError("input dimension %d is dynamic and manifest.json does not fix it" % i)
    return fixed, True


def prepare_engine(bundle, precision, workspace_mb=DEFAULT_WORKSPACE_MB, allow_slow_precision=False,
                   verbose=False):
    """Reuse the engine of `bundle` at `precision` when its sidecar matches `engine_key`, else build it.

    Returns (engine path, info) with info = {"engine_cache": "hit" | "built", "engine_build_s": seconds spent
    building (0.0 on a hit), "engine_key": the key}.
    """
    _check_precision(precision)
    bundle = os.path.abspath(bundle)
    trt = import_tensorrt()
    device_name, capability = cuda_device_info()
    path = os.path.join(bundle, engine_filename(precision, trt.__version__, device_name, capability))
    key = engine_key(bundle, precision, trt.__version__, device_name, capability)
    if _engine_is_current(path, key):
        sys.stderr.write("build_engine: reusing %s\n" % path)
        return path, {"engine_cache": CACHE_HIT, "engine_build_s": 0.0, "engine_key": key}

    start = time.perf_counter()
    serialized = _build_serialized_engine(trt, bundle, precision, path, workspace_mb, allow_slow_precision, verbose)
    if os.path.exists(path + ".json"):
        os.remove(path + ".json")  # no moment where a new engine sits beside an old key, or the reverse
    _atomic_write_bytes(path, serialized)
    _atomic_write_bytes(path + ".json", json.dumps(key, sort_keys=True).encode("utf-8"))
    seconds = time.perf_counter() - start
    return path, {"engine_cache": CACHE_BUILT, "engine_build_s": seconds, "engine_key": key}


def build_engine(bundle, precision, workspace_mb=DEFAULT_WORKSPACE_MB, allow_slow_precision=False,
                 verbose=False):
    """Build (or reuse) the engine of `bundle` at `precision`; returns its path (see `prepare_engine`).

    FP16/INT8 on a GPU without fast kernels for them (Jetson Nano has no fast INT8) raise a BuildError unless
    `allow_slow_precision`, so a benchmark is never labelled with a precision the GPU does not run fast.
    """
    return prepare_engine(bundle, precision, workspace_mb, allow_slow_precision, verbose)[0]


def _build_serialized_engine(trt, bundle, precision, path, workspace_mb, allow_slow_precision, verbose):
    """Parse model.onnx and build the engine at `precision`; returns its serialized bytes."""
    cuda_context()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder, network, parser = _parse_onnx(trt, bundle, logger)  # the parser owns the weights: keep it alive
    config = builder.create_builder_config()
    workspace = int(workspace_mb) * (1 << 20)
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace

    shape, dynamic = _fixed_input_shape(network, bundle)
    profile = None
    if dynamic:
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, shape, shape, shape)
        config.add_optimization_profile(profile)

    if precision in ("fp16", "int8"):
        fast = getattr(builder, "platform_has_fast_fp16" if precision == "fp16" else "platform_has_fast_int8", True)
        if not fast and not allow_slow_precision:
            raise BuildError(
                "this GPU has no fast %s kernels (builder.platform_has_fast_%s is False); an engine built "
                "for it would not be a %s measurement. Pass --allow-slow-precision to build it anyway"
                % (precision.upper(), precision, precision)
            )
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines fall back to FP16 for layers without INT8 kernels
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        cache_key = dict(engine_sources(bundle, precision), tensorrt=trt.__version__)
        calibrator = _make_calibrator(
            trt, _calibration_batches(bundle, shape), calibration_cache_path(bundle, precision), cache_key
        )
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)

    sys.stderr.write("build_engine: building %s (TensorRT %s) ...\n" % (path, trt.__version__))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError("TensorRT %s failed to build the %s engine (see the log above)" % (trt.__version__, precision))
    return bytes(serialized)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build a TensorRT engine from BUNDLE/model.onnx.")
    parser.add_argument("bundle", help="bundle folder holding model.onnx (and calibration.npy for int8)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB)
    parser.add_argument("--allow-slow-precision", action="store_true",
                        help="build fp16/int8 even where the GPU has no fast kernels for it")
    parser.add_argument("--verbose", action="store_true", help="TensorRT verbose log")
    args = parser.parse_args(argv)
    try:
        path = build_engine(args.bundle, args.precision, args.workspace_mb, args.allow_slow_precision, args.verbose)
    except BuildError as e:
        sys.stderr.write("build_engine: error: %s\n" % e)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
