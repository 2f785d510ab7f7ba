"""The TensorRT pre-flight check: operator tables as package data, opset, restrictions, the `check` command."""

import itertools
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from pacb_edge.cli.main import app
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.export.trt_check import PROFILES, check_model, get_profile, preflight

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def _model(nodes, inputs, outputs, opset, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _hardswish(opset: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    return _model([helper.make_node("HardSwish", ["x"], ["y"], name="act/HardSwish")], [x], [y], opset)


def _hardsigmoid_mul():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["g"], name="act/HardSigmoid", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["x", "g"], ["y"], name="act/Mul"),
    ]
    return _model(nodes, [x], [y], 13)


def _conv1d():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 16])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3], [0.1, 0.2, 0.3])
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="eca/Conv", pads=[1, 1])
    return _model([node], [x], [y], 13, [w])


def _node_model(node, inputs, outputs, opset=13, initializers=()):
    return _model([node], inputs, outputs, opset, initializers)


def _vi(name, dims, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, dims)


def test_tables_are_the_importers_and_say_where_the_docs_differ():
    """The 8.2 table is the published list (the fixture) plus Reciprocal, whose importer the docs mark N."""
    published = [ln.strip() for ln in (FIXTURES / "tensorrt-8.2-onnx-operators.txt").read_text().splitlines()]
    published = {ln for ln in published if ln and not ln.startswith("#")}
    assert set(PROFILES["8.2"].operators()) - published == {"Reciprocal"}
    assert published <= set(PROFILES["8.2"].operators())
    assert PROFILES["8.2"].operators()["Reciprocal"].startswith("builtin_op_importers.cpp:")
    table = (Path(__file__).parents[1] / "export" / "trt_ops" / "tensorrt-8.2.txt").read_text()
    assert "# docs_differ: importer but docs say N: Reciprocal" in table and "release/8.2-GA" in table
    for profile in PROFILES.values():
        ops = profile.operators()
        assert len(ops) > 100 and {"Conv", "Relu", "Add", "GlobalAveragePool"} <= set(ops)
        assert not any(op.startswith("TRT_") for op in ops)  # plugin importers are not ONNX operators
    # HardSwish is imported by 8.4 and 8.5 although their docs say N; Mod and OneHot by 8.5
    assert "HardSwish" not in PROFILES["8.2"].operators() and "HardSwish" in PROFILES["8.4"].operators()
    assert {"Mod", "OneHot"} <= set(PROFILES["8.5"].operators()) - set(PROFILES["8.4"].operators())
    assert PROFILES["8.0"].max_opset == 13 and PROFILES["8.5"].max_opset == 17 and PROFILES["10.3"].max_opset == 20
    assert [p.version for p in PROFILES.values()] == ["8.0", "8.2", "8.4", "8.5", "8.6", "10.1", "10.3"]


def test_versions_by_prefix_jetpack_labels_and_unknown():
    assert get_profile("8.2.1.8").version == "8.2" and get_profile("8.0.1.6").version == "8.0"
    assert get_profile("10").version == "10.3" and get_profile("10.3.0").version == "10.3"
    assert get_profile(None).version == "8.0"  # JetPack 4.6 ships 8.0.1: the parser every 4.6.x Nano has
    assert get_profile("8.0").label == "TensorRT 8.0 (JetPack 4.6)"
    assert get_profile("8.2").label == "TensorRT 8.2 (JetPack 4.6.1+)"
    with pytest.raises(PacbEdgeError, match="unknown TensorRT version '7.1'.*8.0 \\(JetPack 4.6\\)"):
        get_profile("7.1")


def test_opset17_hardswish_is_refused_by_80_and_the_hint_names_84():
    problems = check_model(_hardswish(17), "8.0")
    by_op = {p.op: p for p in problems}
    assert set(by_op) == {"opset", "HardSwish"}
    assert by_op["opset"].first_version == "8.4" and "opset 17 is above 13" in by_op["opset"].reason
    hs = by_op["HardSwish"]
    assert hs.node == "act/HardSwish" and hs.first_version == "8.4"  # its importer, at opset 17
    assert "HardSwish (node act/HardSwish)" in hs.line() and "TensorRT 8.4" in hs.line()
    assert check_model(_hardswish(17), "8.4") == [] and check_model(_hardswish(17), "8.5") == []


def test_the_hint_respects_the_model_opset():
    """Mod at opset 18: 8.5 imports Mod but reads opset 17 at most, so the first version that takes it is 10.1."""
    x, y = _vi("x", [4]), _vi("y", [4])
    model = _node_model(helper.make_node("Mod", ["x", "x"], ["y"], name="m"), [x], [y], opset=18)
    mod = next(p for p in check_model(model, "8.0") if p.op == "Mod")
    assert mod.first_version == "10.1"
    model13 = _node_model(helper.make_node("Mod", ["x", "x"], ["y"], name="m"), [x], [y], opset=13)
    assert next(p for p in check_model(model13, "8.0") if p.op == "Mod").first_version == "8.5"


def test_hardsigmoid_times_x_and_1d_conv_pass_80():
    assert check_model(_hardsigmoid_mul(), "8.0") == []
    assert check_model(_conv1d(), "8.0") == []  # the importer expands a 1-D convolution to 2-D


def test_conv_with_runtime_weights_passes_but_a_runtime_bias_does_not():
    x, w, b, y = _vi("x", [1, 1, 4, 4]), _vi("w", [1, 1, 1, 1]), _vi("b", [1]), _vi("y", [1, 1, 4, 4])
    assert check_model(_node_model(helper.make_node("Conv", ["x", "w"], ["y"]), [x, w], [y]), "8.0") == []
    (p,) = check_model(_node_model(helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c"), [x, w, b], [y]), "8.2")
    assert "`B`" in p.reason and p.source.startswith("builtin_op_importers.cpp:") and p.first_version is None
    assert "onnx-tensorrt builtin_op_importers.cpp:" in p.line()


def test_resize_cubic_until_85_and_runtime_scales_until_84():
    x, y = _vi("x", [1, 1, 4, 4]), _vi("y", [1, 1, 8, 8])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    cubic = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="r", mode="cubic")
    model = _node_model(cubic, [x], [y], initializers=[scales])
    (p,) = check_model(model, "8.4")
    assert "cubic" in p.reason and p.first_version == "8.5"
    assert check_model(model, "8.5") == []
    s = _vi("s", [4])
    dynamic = _node_model(helper.make_node("Resize", ["x", "", "s"], ["y"], name="r", mode="nearest"), [x, s], [y])
    (p,) = check_model(dynamic, "8.2")
    assert "scales" in p.reason and p.first_version == "8.4"


def test_runtime_axes_of_squeeze_unsqueeze_and_slice():
    x, a, y = _vi("x", [1, 4]), _vi("a", [1], TensorProto.INT64), _vi("y", [4])
    (p,) = check_model(_node_model(helper.make_node("Squeeze", ["x", "a"], ["y"], name="s"), [x, a], [y]), "8.0")
    assert "`axes`" in p.reason and p.first_version is None
    one = helper.make_tensor("one", TensorProto.INT64, [1], [0])
    ok = _node_model(
        helper.make_node("Unsqueeze", ["x", "one"], ["y"], name="u"), [x], [_vi("y", [1, 1, 4])], 13, [one]
    )
    assert check_model(ok, "8.0") == []
    st, en = (
        helper.make_tensor("st", TensorProto.INT64, [1], [0]),
        helper.make_tensor("en", TensorProto.INT64, [1], [2]),
    )
    sl = helper.make_node("Slice", ["x", "st", "en", "a"], ["y"], name="sl")
    (p,) = check_model(_node_model(sl, [x, a], [_vi("y", [1, 2])], 13, [st, en]), "10.1")
    assert "`axes`" in p.reason and p.first_version == "10.3"  # 10.3 takes tensor axes (its changelog)


def test_asymmetric_qdq_dilated_pooling_and_uint8_inputs():
    x, y = _vi("x", [1, 1, 4, 4]), _vi("y", [1, 1, 4, 4], TensorProto.INT8)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("zp", TensorProto.INT8, [], [3])
    q = _node_model(
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"], name="q"), [x], [y], 13, [scale, zp]
    )
    (p,) = check_model(q, "8.0")
    assert "zero point" in p.reason and p.first_version is None
    zero = helper.make_tensor("zp", TensorProto.INT8, [], [0])
    q0 = _node_model(
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"], name="q"), [x], [y], 13, [scale, zero]
    )
    assert check_model(q0, "8.0") == []
    pool = helper.make_node("MaxPool", ["x"], ["z"], name="p", kernel_shape=[2, 2], dilations=[2, 2])
    (p,) = check_model(_node_model(pool, [x], [_vi("z", [1, 1, 2, 2])]), "8.6")
    assert "dilated" in p.reason
    u8 = _vi("img", [1, 1, 4, 4], TensorProto.UINT8)
    cast = _node_model(helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT), [u8], [_vi("f", [1, 1, 4, 4])])
    (p,) = check_model(cast, "8.4")
    assert p.op == "UINT8" and p.first_version == "8.5" and check_model(cast, "8.5") == []


def test_check_command_ok_and_problems(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_hardsigmoid_mul(), good)
    onnx.save(_hardswish(17), bad)
    r = runner.invoke(app, ["check", str(good)])
    assert r.exit_code == 0 and r.output.startswith("ok")
    r = runner.invoke(app, ["check", str(bad), "--trt", "8.2", "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2 and any("HardSwish (node act/HardSwish)" in ln and "8.4" in ln for ln in lines)
    assert '"ok": false' in (tmp_path / "c.json").read_text()
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    r = runner.invoke(app, ["check", str(tmp_path / "junk.onnx")])
    assert r.exit_code == 1 and "not a readable ONNX file" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["check", str(good), "--trt", "6"])
    assert r.exit_code == 1 and "unknown TensorRT version" in r.output


def test_preflight_raises_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    onnx.save(_hardswish(17), bad)
    with pytest.raises(PacbEdgeError, match="TensorRT 8.0 \\(JetPack 4.6\\) cannot parse bad.onnx: opset"):
        preflight(bad)
    assert preflight(bad, "8.4").version == "8.4"


@pytest.mark.slow
def test_every_zoo_model_passes_the_80_preflight_at_32px(tmp_path):
    """What the Nano's parser will see: every architecture x attention module at 32x32, exported at opset 13."""
    from pacb_edge.export.onnx import deployable, export_onnx
    from pacb_edge.models import ModelSpec, create_model, list_attentions, list_models

    failures = []
    for arch, attention in itertools.product(list_models(), [None, *list_attentions()]):
        model = create_model(arch, num_classes=10, in_chans=3, attention=attention, width_mult=0.25)
        spec = ModelSpec(arch=arch, attention=attention, width_mult=0.25)
        path = export_onnx(deployable(model), spec, tmp_path / f"{arch}_{attention}.onnx", opset=13)
        problems = check_model(path, "8.0")
        if problems:
            failures.append(f"{arch}/{attention}: {problems[0].line()}")
        # At opset 17 the same graphs carry HardSwish wherever h-swish is used (CA, MobileNetV3): the check sees it.
        if attention == "ca" and arch in ("mobilenetv3_large", "mobilenetv3_small"):
            late = export_onnx(deployable(model), spec, tmp_path / "late.onnx", opset=17)
            assert {p.op for p in check_model(late, "8.0")} >= {"opset", "HardSwish"}
            assert check_model(late, "8.4") == [] and check_model(late, "8.5") == []  # their importers take it
        path.unlink()
    assert not failures, failures
