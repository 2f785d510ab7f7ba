#!/system/bin/sh
# Run TFLite's benchmark_model on an Android phone by hand (POSIX sh: Android's mksh/toybox, or dash).
#
# The pacb-edge runner (pacb_edge/device_bench/android.py) does not use this script: it sends one quoted
# benchmark_model command per `adb shell`. This script is the same run, for a person at an `adb shell` prompt:
#
#   adb push model_int8.tflite android/bench.sh /data/local/tmp/pacb_edge/
#   adb push android_aarch64_benchmark_model /data/local/tmp/pacb_edge/benchmark_model
#   adb shell sh /data/local/tmp/pacb_edge/bench.sh /data/local/tmp/pacb_edge/model_int8.tflite 4 --use_gpu=true
#
# Usage: sh bench.sh MODEL.tflite [THREADS] [more benchmark_model flags...]
# Delegates: benchmark_model applies XNNPACK even when given no flag. Pass --use_xnnpack=false for TFLite's plain
# CPU kernels, --use_xnnpack=true for XNNPACK, --use_gpu=true or --use_nnapi=true for those delegates (what
# `pacb-edge bench --device android` passes for cpu, xnnpack, gpu and nnapi).
# Environment:
#   BENCH_BIN    benchmark_model to run (default: benchmark_model next to this script)
#   TASKSET      CPU affinity mask in hex, e.g. f0 for the big cores of many phones (default: none)
#   WARMUP_RUNS  --warmup_runs (default 10)     NUM_RUNS  --num_runs (default 100)
set -u

usage() {
    echo "usage: sh bench.sh MODEL.tflite [THREADS] [benchmark_model flags...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
model=$1
shift
threads=4
if [ $# -ge 1 ]; then
    case $1 in
        ''|*[!0-9]*) ;;  # not a number: leave it for the flags
        *) threads=$1; shift ;;
    esac
fi

here=$(cd "$(dirname "$0")" && pwd)
bin=${BENCH_BIN:-$here/benchmark_model}
warmup=${WARMUP_RUNS:-10}
runs=${NUM_RUNS:-100}

if [ ! -f "$model" ]; then
    echo "bench.sh: model not found: $model" >&2
    exit 1
fi
if [ ! -x "$bin" ]; then
    echo "bench.sh: benchmark_model not found or not executable: $bin (adb push it, then chmod 755)" >&2
    exit 1
fi

echo "device: $(getprop ro.product.model) | board: $(getprop ro.board.platform)" \
    "| android: $(getprop ro.build.version.release) | abi: $(getprop ro.product.cpu.abi)"

if [ -n "${TASKSET:-}" ]; then
    case $TASKSET in
        *[!0-9a-fA-FxX]*) echo "bench.sh: TASKSET must be a hex mask, got: $TASKSET" >&2; exit 2 ;;
    esac
    set -- taskset "$TASKSET" "$bin" "--graph=$model" "--num_threads=$threads" \
        "--warmup_runs=$warmup" "--num_runs=$runs" "$@"
else
    set -- "$bin" "--graph=$model" "--num_threads=$threads" "--warmup_runs=$warmup" "--num_runs=$runs" "$@"
fi
echo "running: $*"
"$@" 2>&1
status=$?
echo "exit code: $status"
exit $status
