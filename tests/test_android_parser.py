"""benchmark_model output parsing: the fixtures in tests/fixtures (real output formats) and made-up edge cases."""

from pathlib import Path

import pytest

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.device_bench.benchmark_model_parser import (
    latency_from_parsed,
    parse_benchmark_output,
    parse_run_eval_output,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_native_cpu_fixture():
    p = parse_benchmark_output(fixture_text("benchmark_model_native_cpu.txt"))
    assert p["form"] == "native"
    assert p["model_path"] == "/data/local/tmp/pacb_edge/model_int8.tflite"
    assert p["threads"] == 4
    assert p["init_ms"] == pytest.approx(32.973)
    assert p["first_inference_ms"] == pytest.approx(74.176)
    assert p["model_size_mb"] == pytest.approx(1.01603)
    w = p["warmup"]
    assert w["count"] == 14
    assert (w["first_ms"], w["curr_ms"], w["min_ms"], w["max_ms"]) == pytest.approx((74.176, 58.301, 57.112, 74.176))
    assert (w["avg_ms"], w["std_ms"]) == pytest.approx((59.4761, 4.301))
    i = p["inference"]
    assert i["count"] == 50
    assert (i["first_ms"], i["curr_ms"], i["min_ms"], i["max_ms"]) == pytest.approx((58.010, 57.390, 56.820, 61.044))
    assert (i["avg_ms"], i["std_ms"]) == pytest.approx((57.8192, 0.912))
    assert "median_ms" not in i and "p5_ms" not in i
    assert p["memory_mb"] == {
        "kind": "peak",
        "init": pytest.approx(4.92969),
        "overall": pytest.approx(38.809),
    }
    assert p["delegate"] is None and p["fallback_warnings"] == [] and p["errors"] == []

    latency, note = latency_from_parsed(p)
    assert latency["mean"] == pytest.approx(57.8192)
    assert latency["std"] == pytest.approx(0.912)
    assert (latency["min"], latency["max"], latency["count"]) == pytest.approx((56.82, 61.044, 50))
    assert latency["p50"] == pytest.approx(57.8192)  # no median printed: the mean stands in ...
    assert "p50" in note["approximated"] and "p50" not in note["exact"]  # ... and the record says so
    assert latency["p90"] is None and latency["p99"] is None  # never made up
    assert note["missing"] == ["p90", "p99"]


def test_info_prefixed_fixture_with_percentiles():
    p = parse_benchmark_output(fixture_text("benchmark_model_info_percentiles.txt"))
    assert p["form"] == "info"
    assert p["threads"] == 4
    assert p["init_ms"] == pytest.approx(119.515)
    assert p["model_size_mb"] == pytest.approx(24.6229)
    w = p["warmup"]
    assert w["count"] == 9
    assert (w["avg_ms"], w["std_ms"], w["median_ms"]) == pytest.approx((58.1474, 11.478, 51.962))
    i = p["inference"]
    assert i["count"] == 1000
    assert (i["min_ms"], i["max_ms"], i["avg_ms"], i["std_ms"]) == pytest.approx((49.088, 686.105, 63.7432, 60.716))
    assert (i["p5_ms"], i["median_ms"], i["p95_ms"]) == pytest.approx((49.620, 51.891, 68.628))
    assert p["memory_mb"]["kind"] == "delta"
    assert p["memory_mb"]["overall"] == pytest.approx(55.4961)
    # XNNPACK applied by default, "completely executed": the whole graph, no node counts printed.
    assert p["delegate"]["name"] == "XNNPACK"
    assert p["delegate"]["whole_graph"] is True and p["delegate"]["fraction"] == 1.0

    latency, note = latency_from_parsed(p)
    assert latency["p50"] == pytest.approx(51.891)  # the tool's median, not the mean
    assert latency["mean"] == pytest.approx(63.7432)
    assert (latency["p5"], latency["p95"]) == pytest.approx((49.620, 68.628))
    assert latency["p90"] is None and latency["p99"] is None
    assert "p50" in note["exact"] and note["approximated"] == {}


def test_logcat_fixture():
    p = parse_benchmark_output(fixture_text("benchmark_model_logcat.txt"))
    assert p["form"] == "logcat"
    assert p["model_path"] == "/data/local/tmp/pacb_edge/model_int8.tflite"
    assert p["init_ms"] == pytest.approx(92.318)
    assert p["warmup"]["count"] == 3
    assert p["warmup"]["avg_ms"] == pytest.approx(211.669)
    i = p["inference"]
    assert i["count"] == 25
    assert (i["avg_ms"], i["std_ms"], i["min_ms"], i["max_ms"]) == pytest.approx((145.528, 1.544, 143.377, 149.870))
    assert (i["p5_ms"], i["median_ms"], i["p95_ms"]) == pytest.approx((143.377, 145.290, 149.012))
    assert p["memory_mb"]["init"] == pytest.approx(7.13281)
    assert p["delegates_requested"] == []  # "Use gpu: [0]"


def test_delegate_fallback_fixture_is_flagged_partial():
    p = parse_benchmark_output(fixture_text("benchmark_model_delegate_fallback.txt"))
    assert p["delegates_requested"] == ["gpu"]
    d = p["delegate"]
    assert d["name"] == "TfLiteGpuDelegateV2"
    assert (d["nodes_delegated"], d["nodes_total"], d["partitions"]) == (31, 58, 6)
    assert d["fraction"] == pytest.approx(31 / 58)
    assert d["whole_graph"] is False
    assert any("partially executed" in w for w in p["fallback_warnings"])
    i = p["inference"]
    assert i["count"] == 50
    assert (i["avg_ms"], i["std_ms"], i["median_ms"]) == pytest.approx((23.3778, 0.611, 23.301))
    assert p["init_ms"] == pytest.approx(412.553)


def test_failed_fixture_raises_with_the_tools_message():
    with pytest.raises(PacbEdgeError) as e:
        parse_benchmark_output(fixture_text("benchmark_model_failed.txt"))
    msg = str(e.value)
    assert "Failed to mmap model /data/local/tmp/pacb_edge/missing.tflite" in msg
    assert "Could not open '/data/local/tmp/pacb_edge/missing.tflite'" in msg
    assert "\n" not in msg


def test_no_timings_raises_with_last_line():
    with pytest.raises(PacbEdgeError, match="no inference timings.*not executable"):
        parse_benchmark_output("/system/bin/sh: /data/local/tmp/pacb_edge/benchmark_model: not executable\n")
    with pytest.raises(PacbEdgeError, match="printed nothing"):
        parse_benchmark_output("")


def test_gpu_unsupported_ops_block_is_a_warning_not_a_failure():
    text = "\n".join(
        [
            "INFO: Created TensorFlow Lite delegate for GPU.",
            "ERROR: Following operations are not supported by GPU delegate:",
            "ERROR: UNPACK: Operation is not supported.",
            "ERROR: 40 operations will run on the GPU, and the remaining 10 operations will run on the CPU.",
            "INFO: count=5 first=900 curr=800 min=800 max=900 avg=840 std=40",
            "INFO: count=20 first=700 curr=650 min=600 max=710 avg=650.5 std=30",
            "INFO: ============================== Run Order ==============================",
            "INFO: Timings (microseconds): count=20 first=100 curr=90 min=80 max=120 avg=95 std=9",
        ]
    )
    p = parse_benchmark_output(text)
    assert p["errors"] == []
    assert "UNPACK: Operation is not supported." in p["fallback_warnings"]
    assert p["delegate"]["nodes_delegated"] == 40 and p["delegate"]["nodes_total"] == 50
    assert p["delegate"]["whole_graph"] is False
    assert p["inference"]["count"] == 20 and p["inference"]["avg_ms"] == pytest.approx(0.6505)  # not the op table
    assert p["warmup"]["count"] == 5


def test_delegate_that_took_nothing():
    text = (
        "Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.\n"
        "count=1 first=5 curr=5 min=5 max=5 avg=5 std=0\ncount=3 first=5 curr=5 min=4 max=6 avg=5 std=1\n"
    )
    d = parse_benchmark_output(text)["delegate"]
    assert d["whole_graph"] is False and d["fraction"] == 0.0 and d["nodes_delegated"] == 0


def test_logcat_brief_format_and_error_level():
    text = "I/tflite  ( 8123): count=2 first=10 curr=10 min=10 max=10 avg=10 std=0\n"
    assert parse_benchmark_output(text)["inference"]["count"] == 2
    with pytest.raises(PacbEdgeError, match="benchmark_model failed: Failed to allocate tensors!$"):
        parse_benchmark_output(
            "11-20 14:02:11.104  8123  8123 E tflite  : Failed to allocate tensors!\n"
            "11-20 14:02:11.104  8123  8123 E tflite  : Benchmarking failed.\n"
        )


def test_failed_delegate_is_named_in_the_failure():
    with pytest.raises(PacbEdgeError, match="benchmark_model failed: Failed to apply GPU delegate"):
        parse_benchmark_output("ERROR: Failed to apply GPU delegate.\nERROR: Benchmarking failed.\n")


def test_run_eval_output_log_and_text_proto():
    log = "INFO: Num evaluation runs: 300\nINFO: Top-1 Accuracy: 0.7033333\nINFO: Top-5 Accuracy: 0.88\n"
    r = parse_run_eval_output(log)
    assert r["top1"] == pytest.approx(0.7033333) and r["top5"] == pytest.approx(0.88) and r["n"] == 300
    proto = "num_runs: 300\nprocess_metrics {\n  topk_accuracies: 0.70\n  topk_accuracies: 0.78\n}\n"
    r = parse_run_eval_output(proto)
    assert r["top1"] == pytest.approx(0.70) and r["n"] == 300
    assert parse_run_eval_output("ERROR: Could not read ground truth labels file") is None


def test_stats_line_of_one_run_or_identical_runs():
    """tsl `Stat::OutputToStream` prints `count=N curr=V` (glued `(all same)` when N > 1) when min == max."""
    text = "count=1 curr=41250\ncount=50 curr=5000(all same) p5=5000 median=5000 p95=5000\n"
    p = parse_benchmark_output(text)
    w, i = p["warmup"], p["inference"]
    assert w["count"] == 1 and w["avg_ms"] == pytest.approx(41.25) and w["all_same"] is True
    assert i["count"] == 50 and (i["avg_ms"], i["min_ms"], i["max_ms"], i["std_ms"]) == (5.0, 5.0, 5.0, 0.0)
    latency, note = latency_from_parsed(p)
    assert latency["mean"] == latency["p50"] == 5.0 and latency["count"] == 50
    assert "p50" in note["exact"] and "all_same" in note
    # a one-run timed stats line alone (no warm-up printed) is the inference line, not a KeyError
    latency, note = latency_from_parsed(parse_benchmark_output("count=1 curr=700\ncount=1 curr=650\n"))
    assert latency["mean"] == pytest.approx(0.65) and latency["std"] == 0.0 and "p50" in note["exact"]


def test_summary_without_warmup_runs_prints_nan():
    text = (
        "INFO: count=0\nINFO: count=3 first=900 curr=800 min=800 max=900 avg=840 std=40\n"
        "INFO: Inference timings in us: Init: 5000, First inference: 0, Warmup (avg): nan, Inference (avg): 840\n"
    )
    p = parse_benchmark_output(text)
    assert p["summary_us"]["warmup"] is None and p["summary_us"]["inference"] == 840.0
    assert p["first_inference_ms"] is None  # "First inference: 0" is an empty Stat's value, not a time
    assert p["init_ms"] == pytest.approx(5.0) and p["inference"]["avg_ms"] == pytest.approx(0.84)


def test_default_xnnpack_after_an_explicit_gpu_delegate_is_marked_lazy():
    text = "\n".join(
        [
            "INFO: Use gpu: [1]",
            "INFO: Replacing 31 out of 58 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 6 partitions.",
            "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate "
            "w/ 6 delegate kernels.",
            "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
            "INFO: Replacing 20 out of 27 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 3 partitions.",
            "INFO: count=3 first=900 curr=800 min=800 max=900 avg=840 std=40",
        ]
    )
    p = parse_benchmark_output(text)
    gpu, xnn = p["delegates"]
    assert gpu["applied"] == "explicit" and xnn["applied"] == "default-lazy"
    assert p["xnnpack_created"] == "after-explicit"
    assert p["delegate"]["name"] == "TfLiteGpuDelegateV2" and p["delegate"]["nodes_delegated"] == 31
    # with no delegate flag, the interpreter's own XNNPACK is the only delegate the log shows
    p = parse_benchmark_output(text.split("\n", 3)[3])
    assert p["delegates"][0]["applied"] == "default-lazy" and p["delegate"]["nodes_delegated"] == 20


def test_partial_gpu_record_says_what_ran_the_rest():
    """Whether the lazy XNNPACK took what a GPU delegate left depends on the runtime; the record reads the log."""
    from pacb_edge.device_bench.delegates import delegate_record

    head = [
        "INFO: Use gpu: [1]",
        "INFO: Replacing 31 out of 58 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 6 partitions.",
        "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate "
        "w/ 6 delegate kernels.",
    ]
    tail = ["INFO: count=3 first=900 curr=800 min=800 max=900 avg=840 std=40"]
    refused = [  # TF <= ~2.12: the graph is immutable after the GPU delegate
        "ERROR: ModifyGraphWithDelegate is disallowed when graph is immutable.",
        "INFO: Ignoring failed application of the default TensorFlow Lite delegate indexed at 0.",
    ]
    p = parse_benchmark_output("\n".join(head + refused + tail))
    assert p["default_xnnpack"] == "refused" and p["errors"] == []  # not a failure, and said
    info, warnings = delegate_record(p, "gpu")
    assert info["rest_ran_on"] == "builtin kernels" and "builtin kernels" in warnings[0]
    applied = [
        "INFO: Replacing 20 out of 27 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 3 partitions.",
        "INFO: Successfully applied the default TensorFlow Lite delegate indexed at 0.",
    ]
    info, warnings = delegate_record(parse_benchmark_output("\n".join(head + applied + tail)), "gpu")
    assert info["rest_ran_on"] == "xnnpack" and info["nodes_delegated"] == 31
    info, warnings = delegate_record(parse_benchmark_output("\n".join(head + tail)), "gpu")
    assert info["rest_ran_on"] is None and "does not say" in warnings[0]


def test_single_run_fixture_is_a_latency_not_a_key_error():
    p = parse_benchmark_output(fixture_text("benchmark_model_single_run.txt"))
    assert p["warmup"]["count"] == 1 and p["inference"]["count"] == 1
    latency, note = latency_from_parsed(p)
    assert latency["mean"] == latency["p50"] == latency["min"] == pytest.approx(57.913) and latency["std"] == 0.0
    assert "all_same" in note and p["first_inference_ms"] == pytest.approx(61.382)


def test_partial_gpu_fixture_whose_default_xnnpack_was_refused():
    from pacb_edge.device_bench.delegates import delegate_record

    p = parse_benchmark_output(fixture_text("benchmark_model_gpu_partial_default_refused.txt"))
    assert p["errors"] == [] and p["default_xnnpack"] == "refused"
    info, warnings = delegate_record(p, "gpu")
    assert (info["nodes_delegated"], info["nodes_total"], info["rest_ran_on"]) == (44, 61, "builtin kernels")
    assert len(warnings) == 1 and "builtin kernels" in warnings[0]
